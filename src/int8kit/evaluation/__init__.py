"""Old name of ``int8kit.evaluate`` and ``int8kit.analysis``, kept while callers move.

``int8kit.evaluation.<module>`` is the same module object as its new home, so imports and
monkeypatches of either name agree. New code imports ``int8kit.evaluate`` / ``int8kit.analysis``.
"""

from __future__ import annotations

import importlib
import sys

_MOVED = {
    "compare": "int8kit.evaluate.compare",
    "metrics": "int8kit.evaluate.metrics",
    "layerwise": "int8kit.analysis.layerwise",
    "report": "int8kit.analysis.report",
}

for _old, _new in _MOVED.items():
    _module = importlib.import_module(_new)
    sys.modules[f"{__name__}.{_old}"] = _module
    globals()[_old] = _module

from int8kit.evaluate import *  # noqa: E402,F401,F403  (the names the old package exported)
