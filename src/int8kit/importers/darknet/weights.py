"""Darknet's ``.weights`` binary format: read it for conversion, write it (random or given) for tests.

Layout: a header of three int32 (major, minor, revision) and the ``seen`` image counter, which is
int64 when ``major * 10 + minor >= 2`` and int32 before; then float32 blobs, layer by layer in cfg
order, for the layers that have parameters. Convolutional and connected layers store
``biases`` then, with ``batch_normalize=1``, ``scales``, ``rolling_mean``, ``rolling_variance``,
then ``weights`` (conv: filters x channels/groups x size x size; connected: outputs x inputs).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from int8kit.errors import ModelError
from int8kit.graph.io import write_bytes_atomic

from .cfg import Layer, parse_cfg, plan_layers
from .names import layer_name

BN_KEYS = ("scales", "rolling_mean", "rolling_variance")


def blob_layout(plan: list[Layer], channels: int, height: int, width: int) -> list[tuple[Layer, list[tuple[str, tuple[int, ...]]]]]:
    """Per parameterised layer, the (key, shape) of each blob in file order."""
    out = []
    for layer in plan:
        if layer.kind not in ("convolutional", "connected"):
            continue
        prev = plan[layer.index - 1].shape if layer.index else (channels, height, width)
        sec = layer.section
        n = layer.shape[0]
        if layer.kind == "convolutional":
            size = sec.get_int("size", 1)
            wshape: tuple[int, ...] = (n, prev[0] // sec.get_int("groups", 1), size, size)
        else:
            wshape = (n, int(np.prod(prev)))
        blobs = [("biases", (n,))]
        if sec.get_int("batch_normalize", 0):
            blobs += [(k, (n,)) for k in BN_KEYS]
        out.append((layer, blobs + [("weights", wshape)]))
    return out


def _header_size(major: int, minor: int) -> int:
    return 20 if major * 10 + minor >= 2 else 16


def read_weights(path: str | os.PathLike, layout) -> dict[int, dict[str, np.ndarray]]:
    """Read every blob of ``layout`` (from :func:`blob_layout`) from a ``.weights`` file."""
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"Darknet weights '{path}' does not exist or is not a file; check the path.")
    data = path.read_bytes()
    if len(data) < 16:
        raise ModelError(f"Darknet weights '{path}' has {len(data)} bytes; expected at least a 16-byte header.")
    major, minor, _revision = np.frombuffer(data, "<i4", 3)
    if major > 1000 or minor > 1000:
        raise ModelError(f"Darknet weights '{path}' is stored transposed (version {major}.{minor}); "
                         "only the standard layout is supported, re-save it with Darknet.")
    start = _header_size(int(major), int(minor))
    body = data[start:]
    if len(body) % 4:
        raise ModelError(f"Darknet weights '{path}' has {len(body)} bytes after its header; expected whole float32 values.")
    floats = np.frombuffer(body, "<f4")
    need = sum(int(np.prod(shape)) for _, blobs in layout for _, shape in blobs)
    if floats.size != need:
        raise ModelError(f"Darknet weights '{path}' holds {floats.size} floats after its header, but the cfg needs "
                         f"{need} ({'too short' if floats.size < need else 'too long'}); use the .weights file trained "
                         "with this exact .cfg (same filters, classes and layer order).")
    result: dict[int, dict[str, np.ndarray]] = {}
    pos = 0
    for layer, blobs in layout:
        arrays = {}
        for key, shape in blobs:
            count = int(np.prod(shape))
            arrays[key] = floats[pos:pos + count].reshape(shape).astype(np.float32)
            pos += count
        result[layer.index] = arrays
    return result


def _random_blob(rng: np.random.Generator, key: str, shape: tuple[int, ...]) -> np.ndarray:
    """Plausible trained-like values: He-scaled weights, small biases/means, variances near 1."""
    if key == "weights":
        fan_in = int(np.prod(shape[1:]))
        return rng.normal(0.0, np.sqrt(2.0 / fan_in), shape)
    if key == "scales":
        return rng.uniform(0.5, 1.5, shape)
    if key == "rolling_variance":
        return rng.uniform(0.5, 2.0, shape)
    return rng.normal(0.0, 0.1, shape)


def write_weights(path: str | os.PathLike, cfg: str | os.PathLike,
                  arrays: Mapping[str, Mapping[str, np.ndarray]] | None = None, *,
                  seed: int = 0, version: tuple[int, int, int] = (0, 2, 0), seen: int = 0) -> Path:
    """Write a ``.weights`` file for ``cfg``: blobs from ``arrays`` where given, random (``seed``) elsewhere.

    ``arrays`` maps a layer's OpenCV name (``conv_0``, ``fullyConnected_5``) to blobs keyed
    ``biases``, ``scales``, ``rolling_mean``, ``rolling_variance``, ``weights``. ``version`` is the
    (major, minor, revision) header; it decides whether ``seen`` is written as int32 or int64.
    """
    net, sections = parse_cfg(cfg)
    c, h, w = net.get_int("channels", 3), net.get_int("height", 416), net.get_int("width", 416)
    layout = blob_layout(plan_layers(sections, c, h, w), c, h, w)
    arrays = dict(arrays or {})
    rng = np.random.default_rng(seed)
    major, minor, revision = version
    parts = [np.array([major, minor, revision], "<i4").tobytes(),
             np.array([seen], "<i8" if _header_size(major, minor) == 20 else "<i4").tobytes()]
    known = set()
    for layer, blobs in layout:
        name = layer_name(layer)
        given = arrays.get(name, {})
        known.add(name)
        for key, shape in blobs:
            blob = _random_blob(rng, key, shape) if key not in given else np.asarray(given[key])
            if blob.size != int(np.prod(shape)):
                raise ModelError(f"array '{name}.{key}' has {blob.size} values; the cfg needs shape {shape}.")
            parts.append(np.ascontiguousarray(blob, "<f4").tobytes())
    unknown = sorted(set(arrays) - known)
    if unknown:
        raise ModelError(f"write_weights got arrays for {unknown}, which are not conv/connected layers of '{cfg}'; "
                         f"expected names like {sorted(known)[:3]}.")
    return write_bytes_atomic(path, b"".join(parts))
