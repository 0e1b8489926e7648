"""Where the tests find the shared data sets (outside the repository; tests that need them skip
when the folder is missing) and the example scripts, which they load as modules."""
import importlib.util
from pathlib import Path

DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"
EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def load_example(name: str):
    """examples/<name>.py as a module (its main() is then called with arguments)."""
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
