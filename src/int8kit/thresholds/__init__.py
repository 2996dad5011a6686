"""Threshold methods: pure functions from a histogram to a clipping range, in one registry.

>>> from int8kit.thresholds import compute_range, Target
>>> lo, hi = compute_range("kl", hist, Target(bits=8, symmetric=True))  # doctest: +SKIP

Canonical names: ``max``, ``percentile``, ``kl``, ``symkl``, ``jsd``, ``mse``, ``admm``,
``aciq_laplace``, ``aciq_gauss``, ``ifmr``, and ``auto`` (the planner picks one of several per tensor,
see :mod:`.auto`). Names are case-insensitive; ``PERCENTILE9999`` means
``percentile`` with ``percentile=99.99`` and ``ACIQ`` means ``aciq_laplace``. The rules every
method follows (unsigned tensors, asymmetric targets, clamping) are in :mod:`.base`; each
method family's module explains its method.
"""

from __future__ import annotations

from int8kit.thresholds import aciq, admm, entropy, ifmr, mse, simple  # noqa: F401  (registers)
from int8kit.thresholds import auto  # noqa: F401  (registers; reads the others)
from int8kit.thresholds.base import (
    DIVERGENCE_METHODS, METHODS, Target, accepted_params, check_params, compute_range, override_method_name, register, resolve,
)

__all__ = ["DIVERGENCE_METHODS", "METHODS", "override_method_name", "Target", "accepted_params", "check_params", "compute_range", "register", "resolve"]
