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
    "datasets": BELOW_CORE,
    "video": BELOW_CORE,
    "models": BELOW_CORE,
    "cache": BELOW_CORE,
    "config": BELOW_CORE | {"datasets", "video", "models"},
    "stage_one": BELOW_CORE | {"datasets", "video", "models", "cache", "config"},
    "stage_two": BELOW_CORE | {"datasets", "video", "models", "cache", "config"},
    "serving": BELOW_CORE | {"datasets", "video", "models", "cache", "config", "stage_one", "stage_two"},
    "bench": BELOW_CORE | {"datasets", "video", "models", "cache", "config", "stage_one", "stage_two", "serving"},
    "commands": BELOW_CORE | {"datasets", "video", "models", "cache", "config", "stage_one", "stage_two", "serving", "bench"},
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
