"""The package's layout: imports point down only, provisioning stays out of the library, modules stay small.

Read from the source with ``ast`` (nothing is imported), so a lazy import inside a function counts too."""
import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "cvlab"

#: bottom -> top: a module may import modules before it in this list, never one after it
LAYERS = ["utils", "exercises", "images", "datasets", "video", "scenes", "transforms", "checkpoints", "distributed", "losses", "history", "models",
          "loaders", "pretrained", "transfer", "backbones", "schedules", "resume", "training", "metrics", "detection", "detectors", "segmentation",
          "segmenters", "experiments", "visualization", "interpretation", "latency", "deployment", "quantization", "widgets", "provisioning", "runs", "inference", "cli", "train_command",
          "__main__"]
MAX_LINES = 400


def sources(module: str) -> list[Path]:
    """The files of a cvlab module: ``module.py``, or every file of the sub-package ``module/``."""
    return [PACKAGE / f"{module}.py"] if (PACKAGE / f"{module}.py").is_file() else sorted((PACKAGE / module).glob("*.py"))


def modules() -> set[str]:
    """Every module of the package: its files and its sub-packages (one module each)."""
    return ({p.stem for p in PACKAGE.glob("*.py")} | {p.name for p in PACKAGE.iterdir() if (p / "__init__.py").is_file()}) - {"__init__"}


def cvlab_imports(path: Path) -> set[str]:
    """The cvlab modules a source file imports, wherever the import statement is (a file inside a
    sub-package reaches the package with ``from ..x``; its own ``from .x`` imports stay inside)."""
    if path.parent.parent == PACKAGE:
        found = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
            if isinstance(node, ast.ImportFrom) and node.level == 2 and node.module:
                found.add(node.module.split(".")[0])
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").startswith("cvlab."):
                found.add(node.module.split(".")[1])
        return found
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            found |= {a.name.split(".")[1] for a in node.names if a.name.startswith("cvlab.")}
        elif isinstance(node, ast.ImportFrom):
            module = node.module or ""
            if node.level == 1 or module == "cvlab" or module.startswith("cvlab."):
                inner = module.removeprefix("cvlab").lstrip(".") if node.level == 0 else module
                if inner:  # from .x import y / from cvlab.x import y
                    found.add(inner.split(".")[0])
                else:  # from . import x, y / from cvlab import x, y: names that are modules
                    found |= {a.name for a in node.names if (PACKAGE / f"{a.name}.py").is_file()}
    return found


def test_the_import_finder_sees_every_form(tmp_path):
    source = tmp_path / "m.py"
    source.write_text("import os\nimport cvlab.images\nfrom .utils import set_seed\nfrom cvlab.datasets import x\n"
                      "from cvlab import loaders\ndef f():\n    from . import metrics, provisioning\n")
    assert cvlab_imports(source) == {"images", "utils", "datasets", "loaders", "metrics", "provisioning"}


def test_every_module_has_a_place_in_the_layers():
    found = modules()
    assert sorted(found - set(LAYERS)) == [], "new modules need a place in LAYERS (and in cvlab/__init__.py)"
    assert sorted(set(LAYERS) - found) == []


@pytest.mark.parametrize("module", LAYERS)
def test_imports_point_down(module):
    above = set(LAYERS[LAYERS.index(module):])  # itself and everything over it
    upward = sorted(set().union(*(cvlab_imports(f) for f in sources(module))) & above)
    assert upward == [], f"cvlab.{module} imports {upward}, which sit(s) above it (order: {' < '.join(LAYERS)})"


def test_only_the_command_line_imports_provisioning():
    importers = sorted(m for m in modules() if any("provisioning" in cvlab_imports(f) for f in sources(m)))
    assert importers == ["__main__"]


def test_the_package_imports_no_upper_module_at_import_time():
    """``import cvlab`` brings in the training loop, not widgets or provisioning."""
    assert cvlab_imports(PACKAGE / "__init__.py") <= {"training", "utils"}


@pytest.mark.parametrize("path", sorted(PACKAGE.rglob("*.py")), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_modules_stay_small(path):
    lines = len(path.read_text(encoding="utf-8").splitlines())
    assert lines <= MAX_LINES, f"{path.name} has {lines} lines (at most {MAX_LINES}): split it by job"
