"""Op facts come from the one op table (graph/ops.py): the planner's modules compare no op type."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import int8kit

PLAN = Path(int8kit.__file__).parent / "plan"


def _literal(node: ast.AST) -> bool:
    """A string, or a tuple/list/set of them: an op fact written in place instead of read from the table."""
    if isinstance(node, ast.Constant):
        return isinstance(node.value, str)
    return isinstance(node, (ast.Tuple, ast.List, ast.Set)) and all(_literal(e) for e in node.elts)


def _op_type_comparisons(path: Path) -> list[int]:
    """Lines where ``<x>.op_type`` is compared with an op name or a set of names written there
    (comparing with graph/ops.py's named sets, ``op_type in NORMALIZATIONS``, is reading the table)."""
    lines = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Compare):
            operands = [node.left, *node.comparators]
            if any(isinstance(o, ast.Attribute) and o.attr == "op_type" for o in operands) and any(map(_literal, operands)):
                lines.append(node.lineno)
    return lines


@pytest.mark.parametrize("module", ["planner.py", "node_choice.py", "weight_plan.py", "params.py", "method_rules.py",
                                    "advice.py", "domains.py"])
def test_planner_modules_read_op_facts_from_the_table(module):
    assert _op_type_comparisons(PLAN / module) == [], f"plan/{module} compares op types; add the fact to graph/ops.py"


def test_the_check_finds_an_op_type_comparison(tmp_path):
    sample = tmp_path / "sample.py"
    sample.write_text("def f(node):\n    return node.op_type in ('MatMul', 'Gemm')\n\n"
                      "def g(node):\n    return node.op_type == CONV\n")
    assert _op_type_comparisons(sample) == [2]  # the literal set; the table's name passes
