"""A warning when the FP32 model itself scores at chance: the labels, not the quantization, are wrong.

Class sub-folders named by words (``dog/``, ``kite/``) become labels 0, 1, ... in sorted order; against
a 1000-class model that prints FP32 accuracy 0.00 % and the INT8 numbers look meaningless. The
FP32 model is the reference, so its accuracy near chance says the labels (or the preprocessing)
do not fit the model, and the warning says where the labels came from.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import numpy as np

from int8kit.data.samples import SampleSource
from int8kit.evaluate.result import EvalResult

log = logging.getLogger(__name__)

# Fewer samples than this say too little about the accuracy to warn.
MIN_SAMPLES = 20
# From this many classes, "near chance" is at most twice chance (a model that is merely poor on a
# 1000-class set still scores far above 0.2 %); with fewer classes twice chance is a real model's
# accuracy (50 % of four classes), so only chance itself counts.
MANY_CLASSES = 10


def chance_limit(classes: int) -> float | None:
    """The FP32 top-1 accuracy at or below which ``classes`` classes are near chance (``None``: too
    few classes to tell)."""
    if classes >= MANY_CLASSES:
        return 2.0 / classes
    return 1.0 / classes if classes >= 3 else None


def _same(carried: list[Any] | None, labels: np.ndarray) -> bool:
    """Whether the data's own labels are the ones scored (detection boxes never are)."""
    if carried is None or len(carried) != len(labels):
        return False
    try:
        return bool(np.array_equal(np.asarray(carried, dtype=np.int64), labels))
    except (TypeError, ValueError):
        return False


def _origin(labels: np.ndarray | None, data: Any) -> str:
    """Where the labels came from, and what to do about it."""
    check = "check that they are this model's class indices (0-based, in its class order)"
    carried = data.labels() if isinstance(data, SampleSource) else None
    if labels is None or not _same(carried, labels):
        if isinstance(data, (str, os.PathLike, np.ndarray, dict)):
            return f"the labels came from --labels / labels=; {check}"
        return f"the labels came from labels= or, without it, the second element of the data's (input, label) items; {check}"
    classes = getattr(data, "classes", None)
    description = getattr(data, "description", "the data")
    if classes and not all(c.isdigit() for c in classes):
        shown = ", ".join(f"{c}={i}" for i, c in enumerate(classes[:3])) + (", ..." if len(classes) > 3 else "")
        return (f"the labels were read from the class sub-folder names of {description} in sorted order ({shown}), "
                "not from the model's classes; name the sub-folders by the model's class index (0/, 1/, ...) "
                "or pass --labels / labels= with its class indices")
    return f"the labels were read from {description}; {check}, or pass --labels / labels="


def warn_if_chance(result: EvalResult, classes: int | None, labels: np.ndarray | None, data: Any) -> bool:
    """Log one warning when ``result``'s FP32 top-1 accuracy is near chance for ``classes`` classes
    on enough samples; ``labels`` and ``data`` (as given to the evaluator) say where the labels came
    from. Returns whether it warned."""
    limit = chance_limit(classes) if classes else None
    if result.fp32_top1 is None or limit is None or result.samples < MIN_SAMPLES or result.fp32_top1 > limit:
        return False
    log.warning(
        "FP32 top-1 accuracy is %.2f %% on %d samples, near chance for %d classes (at most %.2f %%): the labels most "
        "likely do not number the model's classes (or the preprocessing does not fit the model); %s",
        result.fp32_top1 * 100, result.samples, classes, limit * 100, _origin(labels, data),
    )
    return True
