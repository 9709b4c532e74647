"""The house's layers, read from the imports (AST): who may import whom inside ucfpipe (docs/architecture.md).

Every `import`/`from ... import` of ucfpipe, at module level or inside a function, counts: a lazy import is
still a dependency."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "ucfpipe"

# What each part of the package may import of ucfpipe, besides itself. `ucfpipe` alone is the package's
# __init__ (its version); every other name is a top-level part of the package.
BELOW_CORE = {"ucfpipe", "core"}
ALLOWED = {
    "core": {"ucfpipe"},
    "datasets": BELOW_CORE | {"video"},  # synth reads back what it wrote the way stage one decodes
    "video": BELOW_CORE,
    "models": BELOW_CORE,
    "cache": BELOW_CORE,
    "config": BELOW_CORE | {"datasets", "video", "models"},
    "stage_one": BELOW_CORE | {"datasets", "video", "models", "cache", "config"},
    "stage_two": BELOW_CORE | {"datasets", "video", "models", "cache", "config"},
    "serving": BELOW_CORE | {"datasets", "video", "models", "cache", "config", "stage_one", "stage_two"},
    "bench": BELOW_CORE | {"datasets", "video", "models", "cache", "config", "stage_one", "stage_two", "serving"},
    "search": BELOW_CORE | {"datasets", "video", "models", "cache", "config", "stage_two"},
    "commands": BELOW_CORE | {"datasets", "video", "models", "cache", "config", "stage_one", "stage_two", "serving", "bench",
                              "search"},
    "cli": BELOW_CORE | {"commands"},
    "__init__": {"ucfpipe", "cache"},  # `from ucfpipe import FeatureStore`, loaded lazily
    "__main__": {"ucfpipe", "cli"},
}


def part_of(path: Path) -> str:
    relative = path.relative_to(PACKAGE)
    return relative.parts[0] if len(relative.parts) > 1 else relative.stem


def imported_parts(path: Path):
    """(line, imported top-level part) for every import of ucfpipe in `path`."""
    here = path.relative_to(PACKAGE.parent).with_suffix("").parts
    package = here[:-1] if here[-1] != "__init__" else here[:-1]
    if here[-1] == "__init__":
        package = here[:-1]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = list(package[: len(package) - node.level + 1])
                names = base + (node.module.split(".") if node.module else [])
            elif node.module and node.module.split(".")[0] == "ucfpipe":
                names = node.module.split(".")
            else:
                continue
            if len(names) == 1:  # `from ucfpipe import x`: x is the part
                for alias in node.names:
                    target = alias.name if (PACKAGE / alias.name).is_dir() or (PACKAGE / f"{alias.name}.py").is_file() else "ucfpipe"
                    yield node.lineno, target
            else:
                yield node.lineno, names[1]
        elif isinstance(node, ast.Import):
            for alias in node.names:
                names = alias.name.split(".")
                if names[0] == "ucfpipe":
                    yield node.lineno, names[1] if len(names) > 1 else "ucfpipe"


SOURCES = sorted(PACKAGE.rglob("*.py"))


def test_every_part_of_the_package_has_a_layer():
    parts = {part_of(path) for path in SOURCES}
    assert parts <= set(ALLOWED), f"parts with no layer rule: {sorted(parts - set(ALLOWED))}; add them to ALLOWED"


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_point_down_the_layers(path):
    part = part_of(path)
    broken = [f"{path.relative_to(PACKAGE.parent)}:{line} imports ucfpipe.{target}"
              for line, target in imported_parts(path) if target != part and target not in ALLOWED[part]]
    assert not broken, f"{part} may import only {sorted(ALLOWED[part])}: " + "; ".join(broken)


def test_the_rule_catches_an_upward_import(tmp_path, monkeypatch):
    """The checker itself: a core module importing a stage is reported (so the test above can fail)."""
    fake = tmp_path / "ucfpipe"
    (fake / "core").mkdir(parents=True)
    (fake / "stage_two").mkdir()
    (fake / "stage_two" / "__init__.py").write_text("")
    bad = fake / "core" / "bad.py"
    bad.write_text("def f():\n    from ucfpipe.stage_two import runs\n")
    monkeypatch.setattr(sys.modules[__name__], "PACKAGE", fake)
    assert [target for _, target in imported_parts(bad)] == ["stage_two"]


# -- no import circle ---------------------------------------------------------------------------------------------
def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(path: Path, modules: set[str]):
    """(line, module of the package) for every import in `path`, module level or inside a function: `from a.b
    import c` names a.b.c when that is a module, else a.b."""
    here = module_name(path).split(".")
    package = here if path.name == "__init__.py" else here[:-1]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            module = ".".join(base + (node.module.split(".") if node.module else []))
            if module.split(".")[0] != PACKAGE.name:
                continue
            for alias in node.names:
                yield node.lineno, f"{module}.{alias.name}" if f"{module}.{alias.name}" in modules else module
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == PACKAGE.name:
                    yield node.lineno, alias.name


def import_circles() -> list[list[str]]:
    """Every circle of imports between the package's modules (a package's own __init__ aside: importing a.b
    runs a/__init__ first, which is no dependency of a.b's), each once, as module names first to first."""
    sources = sorted(PACKAGE.rglob("*.py"))
    modules = {module_name(path) for path in sources}
    graph = {module_name(path): sorted({target for _, target in imported_modules(path, modules)
                                        if target in modules and target != module_name(path)}) for path in sources}
    circles, done = [], set()

    def visit(module: str, trail: list[str]) -> None:
        if module in trail:
            circle = trail[trail.index(module):]
            if frozenset(circle) not in done:
                done.add(frozenset(circle))
                circles.append(circle + [module])
            return
        if module in finished:
            return
        for target in graph[module]:
            visit(target, trail + [module])
        finished.add(module)

    finished: set[str] = set()
    for module in graph:
        visit(module, [])
    return circles


def test_no_module_imports_itself_back():
    """No circle of imports anywhere in the package, lazy imports inside functions included: a module that a
    module it imports imports back (stage one's extract and ray_engine once did) can only ever be split apart."""
    circles = import_circles()
    assert not circles, "import circles: " + "; ".join(" -> ".join(circle) for circle in circles)


def test_the_circle_check_catches_a_planted_circle(tmp_path, monkeypatch):
    """The checker itself: a lazy import back from an imported module is a circle (so the test above can fail)."""
    fake = tmp_path / "ucfpipe"
    (fake / "stage_one").mkdir(parents=True)
    (fake / "__init__.py").write_text("")
    (fake / "stage_one" / "__init__.py").write_text("")
    (fake / "stage_one" / "extract.py").write_text("from ucfpipe.stage_one.engine import featurise\n")
    (fake / "stage_one" / "engine.py").write_text("def featurise():\n    from ucfpipe.stage_one import extract\n")
    (fake / "stage_one" / "alone.py").write_text("from . import engine\n")
    monkeypatch.setattr(sys.modules[__name__], "PACKAGE", fake)
    assert import_circles() == [["ucfpipe.stage_one.engine", "ucfpipe.stage_one.extract", "ucfpipe.stage_one.engine"]]
