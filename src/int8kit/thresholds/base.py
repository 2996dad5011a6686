"""Registry, target description and shared rules for the threshold methods.

A threshold method is a pure function ``(hist, target, **params) -> (lo, hi)`` that picks the
clipping range of one tensor from its :class:`~int8kit.calib.histogram.Histogram`.

Conventions every method follows (the planner relies on them):

* **Symmetric target** (zero point 0). When ``hist.min >= 0`` the tensor is *unsigned*: the range
  is ``(0, T)`` and the planner spreads ``2**bits`` levels over it, i.e.
  ``scale = T / (2**bits - 1)``. Otherwise the range is ``(-T, T)`` with ``2**(bits-1)`` levels
  per side, ``scale = T / (2**(bits-1) - 1)``. Methods work on the ``|x|`` histogram.
* **Asymmetric target** (activation offset). The range is ``(lo, hi)`` with ``lo <= 0 <= hi`` so
  that zero is representable, quantized with ``2**bits`` levels, ``scale = (hi - lo) / (2**bits - 1)``.
* The result never leaves the observed range extended to include 0 (levels outside it are wasted)
  and is never empty: an all-zero tensor gets ``T = TINY``.
"""

from __future__ import annotations

import inspect
import logging
import math
import re
from dataclasses import dataclass
from typing import Callable, Mapping

import numpy as np

from int8kit.calib.histogram import Histogram
from int8kit.errors import CalibrationError, ConfigError

log = logging.getLogger(__name__)

#: Threshold used when a tensor is identically zero (any positive value works; this one keeps
#: the resulting scale a normal float32).
TINY = 1e-8

ThresholdFn = Callable[..., tuple[float, float]]

#: Canonical method name -> function.
METHODS: dict[str, ThresholdFn] = {}
_ALIASES: dict[str, str] = {}
_PARAMS: dict[str, tuple[str, ...]] = {}
_OPEN: set[str] = set()


@dataclass(frozen=True)
class Target:
    """What the range will be quantized to: ``bits`` (2..16) and whether the zero point is 0."""

    bits: int = 8
    symmetric: bool = True

    def __post_init__(self) -> None:
        if isinstance(self.bits, bool) or not isinstance(self.bits, (int, np.integer)):
            raise ConfigError(
                f"Target bits must be an integer from 2 to 16, got {self.bits!r}; pass e.g. bits=8."
            )
        if not 2 <= int(self.bits) <= 16:
            raise ConfigError(
                f"Target bits must be from 2 to 16, got {self.bits}; use 8 for INT8 or up to 16."
            )


def _normalise(name: str) -> str:
    return name.strip().lower().replace("-", "_").replace(" ", "_")


def register(name: str, aliases: tuple[str, ...] = ()) -> Callable[[ThresholdFn], ThresholdFn]:
    """Decorator that adds a threshold function to :data:`METHODS` under ``name``.

    The function's keyword-only parameters are the params :func:`compute_range` accepts for it.
    """

    def deco(fn: ThresholdFn) -> ThresholdFn:
        canonical = _normalise(name)
        if canonical in METHODS or canonical in _ALIASES:
            raise ValueError(f"threshold method {canonical!r} is registered twice")
        METHODS[canonical] = fn
        params = inspect.signature(fn).parameters.values()
        # a function taking **params validates its own params; keyword-only ones are checked here
        if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
            _OPEN.add(canonical)
        _PARAMS[canonical] = tuple(p.name for p in params if p.kind is inspect.Parameter.KEYWORD_ONLY)
        for alias in aliases:
            _ALIASES[_normalise(alias)] = canonical
        return fn

    return deco


_PERCENTILE_NAME = re.compile(r"^percentile_?(\d+(?:\.\d+)?)$")


def resolve(method: str) -> tuple[str, dict[str, float]]:
    """Map a user-facing method name to ``(canonical name, implied params)``.

    Case and ``-``/``_`` do not matter. ``PERCENTILE9999`` means percentile 99.99 (the first two
    digits are the integer part, as in the vendor tools); ``percentile99.9`` is read literally.
    """
    if not isinstance(method, str):
        raise ConfigError(f"threshold method must be a string, got {method!r}; use one of {known()}.")
    key = _normalise(method)
    if key in METHODS:
        return key, {}
    if key in _ALIASES:
        return _ALIASES[key], {}
    match = _PERCENTILE_NAME.match(key)
    if match:
        digits = match.group(1)
        if "." in digits:
            value = float(digits)
        elif digits.startswith("100") and set(digits[3:]) <= {"0"}:
            value = 100.0
        else:
            value = float(digits[:2] + "." + digits[2:]) if len(digits) > 2 else float(digits)
        return "percentile", {"percentile": value}
    raise ConfigError(
        f"threshold method {method!r} is unknown; expected one of {known()} "
        "(case-insensitive, e.g. 'kl' or 'PERCENTILE9999')."
    )


def known() -> str:
    """Comma-separated list of canonical names and aliases, for error messages."""
    names = sorted(METHODS)
    aliases = sorted(a for a in _ALIASES if a not in METHODS)
    return ", ".join(names) + (f" (aliases: {', '.join(aliases)})" if aliases else "")


def accepted_params(method: str) -> tuple[str, ...]:
    """Names of the params ``method`` accepts (after alias resolution)."""
    return _PARAMS[resolve(method)[0]]


#: Methods that compare histograms of the positive side (the manual's USE_KL picks one of these).
DIVERGENCE_METHODS = frozenset({"kl", "symkl", "jsd"})


def override_method_name(method: str, global_method: str) -> str:
    """The method an override names; the manual's ``USE_KL`` is the global method when that is a
    divergence method (KL, SymKL, JSD), else ``kl``."""
    if method.upper() == "USE_KL":
        return global_method if resolve(global_method)[0] in DIVERGENCE_METHODS else "kl"
    return method


def check_params(method: str, params: Mapping[str, object], where: str = "") -> None:
    """Raise :class:`ConfigError` when ``params`` holds a name ``method`` does not take; ``where``
    says who gave them ("--th-param", "the override for 'conv1'")."""
    canonical = resolve(method)[0]
    allowed = _PARAMS[canonical]
    unknown = [] if canonical in _OPEN else sorted(set(params) - set(allowed))
    if unknown:
        accepted = ", ".join(allowed) if allowed else "none"
        raise ConfigError(
            f"{where + ' gives ' if where else ''}threshold method {canonical!r} "
            f"{'' if where else 'got '}unknown parameter(s) {', '.join(unknown)}; it accepts: {accepted}."
        )


def compute_range(method: str, hist: Histogram, target: Target, **params: object) -> tuple[float, float]:
    """Clipping range ``(lo, hi)`` of one tensor by the named threshold method.

    Raises :class:`ConfigError` for an unknown method or param, :class:`CalibrationError` for an
    empty or non-finite histogram.
    """
    canonical, implied = resolve(method)
    check_params(method, params)
    for key, value in implied.items():
        if key in params and params[key] != value:
            raise ConfigError(
                f"threshold method {method!r} already implies {key}={value}, but {key}={params[key]} "
                f"was also given; pass only one of them."
            )
    check_hist(hist)
    lo, hi = METHODS[canonical](hist, target, **{**implied, **params})
    # idempotent for the built-in methods; enforces the range rules on third-party ones
    return finish(float(lo), float(hi), hist, target)


def check_hist(hist: Histogram) -> None:
    """Reject histograms no method can work with."""
    if hist.count <= 0:
        raise CalibrationError(
            "histogram is empty (no values were observed); run calibration with at least one batch."
        )
    if not (math.isfinite(hist.min) and math.isfinite(hist.max)):
        raise CalibrationError(
            f"histogram range [{hist.min}, {hist.max}] is not finite; check the calibration data for NaN/Inf."
        )


# ---------------------------------------------------------------------------- shared helpers


def is_unsigned(hist: Histogram) -> bool:
    """True when every observed value is >= 0 (ReLU outputs and the like)."""
    return hist.min >= 0.0


def levels_per_side(hist: Histogram, target: Target) -> int:
    """Quantized bins the KL family compares against: ``2**bits`` unsigned, ``2**(bits-1)`` signed."""
    return 2 ** int(target.bits) if is_unsigned(hist) else 2 ** (int(target.bits) - 1)


def qmax(hist: Histogram, target: Target) -> int:
    """Largest integer level of a symmetric target (255 for uint8, 127 for int8)."""
    return 2 ** int(target.bits) - 1 if is_unsigned(hist) else 2 ** (int(target.bits) - 1) - 1


def side_counts(hist: Histogram, negative: bool) -> np.ndarray:
    """Counts of one side as a ``|x|`` histogram (bin ``j`` covers ``[j*w, (j+1)*w)`` in magnitude)."""
    n = hist.bins
    return hist.counts[:n][::-1] if negative else hist.counts[n:]


def symmetric_range(t: float, hist: Histogram) -> tuple[float, float]:
    """Final ``(lo, hi)`` of a symmetric target from threshold ``t``, clamped to the observation."""
    limit = hist.max if is_unsigned(hist) else hist.absmax
    t = min(float(t), limit) if math.isfinite(t) else limit
    if not t > 0.0:
        t = limit if limit > 0.0 else TINY
    return (0.0, t) if is_unsigned(hist) else (-t, t)


def asymmetric_range(lo: float, hi: float, hist: Histogram) -> tuple[float, float]:
    """Final ``(lo, hi)`` of an asymmetric target: contains 0, inside the observation, non-empty."""
    floor_, ceil_ = min(hist.min, 0.0), max(hist.max, 0.0)
    lo = min(max(float(lo), floor_), 0.0) if math.isfinite(lo) else floor_
    hi = max(min(float(hi), ceil_), 0.0) if math.isfinite(hi) else ceil_
    if not hi - lo > 0.0:
        lo, hi = floor_, ceil_
        if not hi - lo > 0.0:
            hi = TINY
    return lo, hi


def finish(lo: float, hi: float, hist: Histogram, target: Target) -> tuple[float, float]:
    """Apply the clamping rules of the module docstring to a raw method result."""
    if target.symmetric:
        return symmetric_range(max(abs(lo), abs(hi)), hist)
    return asymmetric_range(lo, hi, hist)
