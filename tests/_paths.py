"""Where the tests find the shared data sets (outside the repository; tests that need them skip
when the folder is missing)."""
from pathlib import Path

DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"
