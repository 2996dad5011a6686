"""Op facts come from the one op table (graph/ops.py): the planner's modules compare no op type."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import int8kit

PLAN = Path(int8kit.__file__).parent / "plan"


def _op_type_comparisons(path: Path) -> list[int]:
    """Lines where ``<x>.op_type`` is compared (``==``, ``!=``, ``in``, ``not in``) with anything."""
    lines = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Compare):
            operands = [node.left, *node.comparators]
            if any(isinstance(o, ast.Attribute) and o.attr == "op_type" for o in operands):
                lines.append(node.lineno)
    return lines


@pytest.mark.parametrize("module", ["planner.py", "node_choice.py", "weight_plan.py", "params.py"])
def test_planner_modules_read_op_facts_from_the_table(module):
    assert _op_type_comparisons(PLAN / module) == [], f"plan/{module} compares op types; add the fact to graph/ops.py"


def test_the_check_finds_an_op_type_comparison(tmp_path):
    sample = tmp_path / "sample.py"
    sample.write_text("def f(node):\n    return node.op_type in ('MatMul', 'Gemm')\n")
    assert _op_type_comparisons(sample) == [2]
