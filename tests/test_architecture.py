"""The layout's rules (docs/architecture.md), checked on the code: no module uses a ``_private`` name
of another module of this project, and distill's subpackages import one way only."""
import ast
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
PACKAGES = ("augment", "pipelines", "distill")
SOURCES = [p for d in (*PACKAGES, "bench", "experiments", "scripts", "tests") for p in sorted((ROOT / d).rglob("*.py"))]
#: distill's layers, ground first: a module may import its own layer and those before it, never after
LAYERS = [("distill.config", "distill.devices", "distill.progress", "distill.data"), ("distill.modules",),
          ("distill.evaluation",), ("distill.training",), ("distill.run", "distill.export"), ("distill.cli",)]


def _project(module: str | None) -> bool:
    return bool(module) and module.split(".")[0] in (*PACKAGES, "tests")


def _is_module(dotted: str) -> bool:
    path = ROOT.joinpath(*dotted.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def private_uses(path: pathlib.Path) -> list[str]:
    """``from m import _x``, and ``m._x`` where ``m`` was imported from this project, in ``path``."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    found, modules = [], set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and _project(node.module):
            for a in node.names:
                if a.name.startswith("_") and not a.name.startswith("__"):
                    found.append(f"{path.relative_to(ROOT)}:{node.lineno}: from {node.module} import {a.name}")
                if _is_module(f"{node.module}.{a.name}"):  # a module: its attributes are checked below
                    modules.add(a.asname or a.name)
        elif isinstance(node, ast.Import):
            for a in node.names:
                if _project(a.name):
                    modules.add(a.asname or a.name.split(".")[0])
    for node in ast.walk(tree):
        if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in modules
                and node.attr.startswith("_") and not node.attr.startswith("__")):
            found.append(f"{path.relative_to(ROOT)}:{node.lineno}: {node.value.id}.{node.attr}")
    return found


def test_no_module_uses_a_private_name_of_another():
    found = [f for p in SOURCES for f in private_uses(p)]
    assert found == [], "private names used across modules:\n" + "\n".join(found)


def test_the_check_finds_what_it_looks_for(tmp_path, monkeypatch):
    bad = ROOT / "tests" / "_architecture_probe.py"  # a file under ROOT, for relative_to
    try:
        bad.write_text("from distill.config import _x\nimport distill.config as c\nfrom distill import config\n"
                       "c._y\nconfig._z\nimport os\nos._exit\n")
        assert [f.split(": ", 1)[1] for f in private_uses(bad)] == ["from distill.config import _x", "c._y", "config._z"]
    finally:
        bad.unlink()


def _layer(module: str) -> int | None:
    for i, names in enumerate(LAYERS):
        if any(module == n or module.startswith(n + ".") for n in names):
            return i
    return None


@pytest.mark.parametrize("path", [p for p in SOURCES if p.is_relative_to(ROOT / "distill")],
                         ids=lambda p: str(p.relative_to(ROOT)))
def test_distill_imports_go_one_way(path):
    module = ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
    own = _layer(module)
    if own is None:
        return
    tree = ast.parse(path.read_text(encoding="utf-8"))
    up = []
    for node in ast.walk(tree):
        names = ([node.module] if isinstance(node, ast.ImportFrom) and node.module else
                 [a.name for a in node.names] if isinstance(node, ast.Import) else [])
        for name in names:
            if name == "distill" and isinstance(node, ast.ImportFrom):
                name = f"distill.{node.names[0].name}"
            layer = _layer(name) if name.startswith("distill") else None
            if layer is not None and layer > own:
                up.append(f"line {node.lineno}: {name}")
    assert up == [], f"{module} imports from a layer above it: {up}"
