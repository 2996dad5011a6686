"""Stages import only downward (DESIGN §3): a module may import its own package or a lower layer.

Every import counts, also those inside functions: a lazy import hides a cycle, it does not
remove it.
"""

from __future__ import annotations

import ast
from pathlib import Path

import int8kit

SRC = Path(int8kit.__file__).parent

# Lowest first. Same layer: may import each other (top-level modules of the shell).
LAYERS: list[set[str]] = [
    {"errors"},
    {"numerics"},
    {"graph"},
    {"runtime"},
    {"data"},
    {"calib"},
    {"thresholds"},
    {"config"},
    {"weights"},
    {"plan"},
    {"emit"},
    {"tune"},
    {"evaluate"},
    {"analysis", "importers"},
    {"auto", "amct"},
    {"api", "pipeline", "results", "preflight", "describe", "demo", "demo_data", "evaluation", "__init__"},
    {"cli", "__main__"},
]

# Known imports across layers, each with its reason.
ALLOWED = {
    # Caffe's protobuf messages (Datum, TransformationParameter) are a file format that the data
    # readers (Caffe LMDBs, Data layers) and the Caffe importer both read.
    ("data", "int8kit.importers.caffe.proto"),
    # The package shares its name with the API verb ``int8kit.evaluate``; once imported it stands
    # where the verb stood, so calling it hands over to the verb (a call-time import only).
    ("evaluate", "int8kit.api"),
    # The same for ``int8kit.auto``, the search package and the API verb of the same name.
    ("auto", "int8kit.api"),
}


def _layer(unit: str) -> int:
    for rank, units in enumerate(LAYERS):
        if unit in units:
            return rank
    raise AssertionError(f"'{unit}' has no layer in tests/unit/test_layering.py; add it where it belongs")


def _unit(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _imports(path: Path) -> list[str]:
    out = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0 and node.module.split(".")[0] == "int8kit":
            out += [f"int8kit.{a.name}" for a in node.names] if node.module == "int8kit" else [node.module]
        elif isinstance(node, ast.Import):
            out += [a.name for a in node.names if a.name.split(".")[0] == "int8kit"]
    return out


def test_every_stage_imports_only_downward():
    wrong = []
    for path in sorted(SRC.rglob("*.py")):
        rel = path.relative_to(SRC)
        unit = rel.parts[0] if len(rel.parts) > 1 else rel.stem
        for target in _imports(path):
            other = _unit(target)
            if other == unit or (unit, target) in ALLOWED:
                continue
            if not (SRC / other).with_suffix(".py").exists() and not (SRC / other).is_dir():
                continue  # a name the package itself defines (int8kit.__version__)
            if _layer(other) > _layer(unit):
                wrong.append(f"{rel} imports {target}")
    assert wrong == [], "\n".join(wrong)


def test_the_check_sees_an_upward_import(tmp_path):
    """The walker finds function-level imports (so the test above can fail)."""
    probe = tmp_path / "probe.py"
    probe.write_text("def f():\n    from int8kit.plan.planner import plan\n    import int8kit.api\n")
    assert _imports(probe) == ["int8kit.plan.planner", "int8kit.api"]
    assert _layer("plan") > _layer("numerics")
