"""The package's layers import downwards only: a module never imports a later stage of the pipeline
(parsed with ast, nothing is imported)."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "lightning_rec"
# each package (or top-level module) may import its own layer and those before it
LAYERS = [
    {"softmax", "memory", "scoring", "retrieval", "atomic", "checkpoints", "divergence", "metrics", "data"}
    | {"resume", "distributed"},
    {"encoders", "objectives"},
    {"rl"},
    {"meta"},
    {"stages"},
    {"cli", "quiet", "recommend", "serving", "__init__"},
]


def layer(name: str) -> int:
    return next(index for index, names in enumerate(LAYERS) if name in names)


def imported_packages(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        modules = [node.module or ""] if isinstance(node, ast.ImportFrom) else []
        modules += [alias.name for alias in node.names] if isinstance(node, ast.Import) else []
        found |= {module.split(".")[1] for module in modules if module.startswith("lightning_rec.")}
    return found


def test_no_module_imports_a_later_layer():
    upward = set()
    for path in PACKAGE.rglob("*.py"):
        relative = path.relative_to(PACKAGE)
        own = relative.parts[0] if len(relative.parts) > 1 else relative.stem
        for imported in imported_packages(path):
            if layer(imported) > layer(own):
                upward.add((relative.as_posix(), imported))
    assert not upward, f"upward imports: {sorted(upward)}"


def test_the_layer_check_sees_an_upward_import(tmp_path):
    module = tmp_path / "bad.py"
    module.write_text("def f():\n    from lightning_rec.stages.pretraining import SequentialRecommender\n")
    assert imported_packages(module) == {"stages"} and layer("stages") > layer("rl")
