"""Accuracy-driven search (``int8kit auto``; the manual's auto_calib): one calibration pass, then
candidate configurations re-planned from it, each scored on the validation half of the test set
and timed against FP32; the fastest that meets the budget wins (full mode: the fewest float MACs).

Modules, one job each: ``budget`` (scores with intervals, the budget), ``scorer`` (task scores of
the validation and held-out halves through one Evaluator), ``macs`` (MACs per layer),
``candidates`` (what quick mode tries), ``trial`` (build, score and time one candidate),
``ranking`` (layer sensitivity), ``full`` (the float search), ``choose`` (which trial wins),
``searchlog`` (the resumable log), ``search`` (the loop), ``setup`` (the shared context),
``report`` (the log files and the HTML report).
"""

from __future__ import annotations

import sys
import types
from typing import Any

from int8kit.auto.budget import Budget, Score
from int8kit.auto.search import SearchResult, run_search
from int8kit.auto.searchlog import SearchLog
from int8kit.auto.setup import make_context, run_key

__all__ = ["Budget", "Score", "SearchLog", "SearchResult", "make_context", "run_key", "run_search"]


class _CallablePackage(types.ModuleType):
    """The package, callable as the ``auto`` verb: once imported, ``int8kit.auto`` is this package,
    and ``int8kit.auto(...)`` must still run ``int8kit.api.auto`` (as for ``int8kit.evaluate``)."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        from int8kit.api import auto

        return auto(*args, **kwargs)


sys.modules[__name__].__class__ = _CallablePackage
