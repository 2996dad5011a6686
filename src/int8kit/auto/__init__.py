"""Accuracy-driven search (``int8kit auto``; the manual's auto_calib): one calibration pass, then
candidate configurations re-planned from it, each scored on the validation half of the test set
and timed against FP32; the fastest that meets the budget wins (full mode: the fewest float MACs).

Modules, one job each: ``budget`` (scores with intervals, the budget), ``split`` (validation and
held-out halves), ``scorer`` (task scores through the Evaluator), ``macs`` (MACs per layer),
``candidates`` (what quick mode tries), ``trial`` (build, score and time one candidate),
``ranking`` (layer sensitivity), ``full`` (the float search), ``choose`` (which trial wins),
``searchlog`` (the resumable log), ``search`` (the loop), ``setup`` (the shared context),
``report`` (the log files and the HTML report).
"""

from __future__ import annotations

from int8kit.auto.budget import Budget, Score
from int8kit.auto.search import SearchResult, run_search
from int8kit.auto.searchlog import SearchLog
from int8kit.auto.setup import make_context, run_key
from int8kit.auto.split import split_test_data

__all__ = ["Budget", "Score", "SearchLog", "SearchResult", "make_context", "run_key", "run_search", "split_test_data"]
