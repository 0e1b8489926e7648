"""The README's Python snippets run as written."""
import re
import sys
import types
from pathlib import Path

README = Path(__file__).resolve().parents[2] / "README.md"


def test_readme_python_blocks_run():
    """Each block runs as a module of its own, as a user's script would (so a class it defines can be
    pickled whole, as the save/load recipe does)."""
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    assert blocks, "README has no python example"
    for i, block in enumerate(blocks):
        module = types.ModuleType(f"readme_block_{i}")
        sys.modules[module.__name__] = module
        try:
            exec(compile(block, str(README), "exec"), module.__dict__)
        finally:
            del sys.modules[module.__name__]
        if "layer" in module.__dict__:
            assert module.layer.weight.nnz == 2_000_000


ROOT = README.parent
TOP = {p.name for p in ROOT.iterdir()} - {".git", ".venv", "build"}


def _named_files(text: str) -> set[str]:
    """The repository files the text names: backticked tokens and link targets that start with a
    top-level entry of the repository (``docs/x.md``, ``benchmarks/...``) or are bare file names
    of our own kinds (``cpu_ops.md``, ``bench_ops.py``)."""
    tokens = set(re.findall(r"`([^`\s]+)`", text)) | set(re.findall(r"\]\(([^)\s#]+)", text))
    named = set()
    for token in tokens:
        token = token.rstrip(".,:;)")
        first = token.split("/", 1)[0]
        if ("/" in token and first in TOP) or re.fullmatch(r"[\w.-]+\.(md|py|sh)", token):
            named.add(token)
    return named


def test_every_file_the_readme_names_exists():
    missing = []
    for name in sorted(_named_files(README.read_text())):
        name = re.sub(r"<[^>]*>", "*", name)  # a placeholder (set_mlp_accuracy_<H>.md) matches any file
        if "/" in name:
            found = list(ROOT.glob(name)) if "*" in name else [ROOT / name] if (ROOT / name).exists() else []
        else:
            found = [p for p in ROOT.rglob(name) if ".venv" not in p.parts and ".git" not in p.parts]
        if not found:
            missing.append(name)
    assert not missing, f"README names files that do not exist: {missing}"


def _commands(prefix: str) -> list[list[str]]:
    """Every command line of the README's bash blocks that starts with ``prefix`` (comments and
    line continuations handled), split as a shell would."""
    import shlex

    lines = []
    for block in re.findall(r"```bash\n(.*?)```", README.read_text(), flags=re.S):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.split("  #", 1)[0].split(" # ", 1)[0].strip()
            if line.startswith(prefix):
                lines.append(shlex.split(line))
    return lines


def test_every_sparse_engine_command_in_the_readme_parses():
    """Each `sparse-engine ...` line's subcommand, options and values are accepted by the parser
    (choices, types and ranges; the files it names are the user's)."""
    from sparse_engine.cli import build_parser

    commands = _commands("sparse-engine")
    assert len(commands) >= 10
    for argv in commands:
        recipe = argv[argv.index("--recipe") + 1] if "--recipe" in argv else None
        try:
            build_parser(recipe).parse_args(argv[1:])
        except SystemExit as exc:
            raise AssertionError(f"README command does not parse: {' '.join(argv)}") from exc


def test_every_script_command_in_the_readme_names_a_script_and_its_options():
    missing = []
    for argv in _commands("python ") + _commands("make "):
        if argv[0] == "make":
            targets = re.findall(r"^([\w-]+):", (ROOT / "Makefile").read_text(), flags=re.M)
            missing += [f"make {t}" for t in argv[1:] if "=" not in t and t not in targets]
            continue
        if argv[1] == "-m":
            module = ROOT / (argv[2].replace(".", "/") + ".py")
            source = module.read_text() if module.exists() else None
            script = argv[2]
        else:
            source = (ROOT / argv[1]).read_text() if (ROOT / argv[1]).exists() else None
            script = argv[1]
        if source is None:
            missing.append(script)
            continue
        missing += [f"{script} {o}" for o in argv if o.startswith("--") and f'"{o.split("=")[0]}"' not in source]
    assert not missing, f"README names scripts or options that do not exist: {missing}"


def first_import(block: str, package: str) -> int | None:
    """The line number of the block's first import of ``package``, or None."""
    for n, line in enumerate(block.splitlines()):
        if re.match(rf"(import|from) {package}(\.| |$)", line):
            return n
    return None


def imports_torch_first(block: str) -> bool:
    torch, ours = first_import(block, "torch"), first_import(block, "sparse_engine")
    return torch is not None and (ours is None or torch < ours)


def test_readme_examples_import_sparse_engine_before_torch():
    """An example that imports torch first would teach the order in which OpenMP's threads spin
    (sparse_engine/runtime/threads.py)."""
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    late = [b.splitlines()[0] for b in blocks if imports_torch_first(b)]
    assert not late, f"README examples importing torch before sparse_engine: {late}"
    assert imports_torch_first("import torch\nimport sparse_engine\n") and imports_torch_first("import torch\n")
    assert not imports_torch_first("import sparse_engine\nimport torch\n")
    assert first_import("from torch import nn\n", "torch") == 0 and first_import("import torchvision\n", "torch") is None
