"""Every supported Caffe layer: a tiny net built in code, converted, run in onnxruntime, compared with OpenCV."""

from __future__ import annotations

import numpy as np
import pytest
from caffe_nets import CaffeNet, assert_close, check_against_opencv, feeds_for, run_onnx

from int8kit.importers.caffe import convert

pytest.importorskip("cv2")

R = np.random.default_rng(1)


def rnd(*shape: int, scale: float = 1.0) -> np.ndarray:
    return (R.standard_normal(shape) * scale).astype(np.float32)


def pos(*shape: int) -> np.ndarray:
    return R.uniform(0.5, 1.5, shape).astype(np.float32)


def _conv(groups: int = 1, **kw) -> CaffeNet:
    params = " ".join(f"{k}: {v}" for k, v in kw.items())
    return CaffeNet(data=(1, 4, 9, 11)).add(
        "Convolution", "conv", "data", params=f"convolution_param {{ num_output: 6 group: {groups} {params} }}",
        blobs=[rnd(6, 4 // groups, kw.get("kernel_h", kw.get("kernel_size", 3)),
                   kw.get("kernel_w", kw.get("kernel_size", 3))), rnd(6)])


CASES = {
    "conv_pad_stride": lambda: _conv(kernel_size=3, pad=1, stride=2),
    "conv_group_dilation": lambda: _conv(groups=2, kernel_size=3, dilation=2, pad=2),
    "conv_hw": lambda: _conv(kernel_h=3, kernel_w=1, pad_h=1, pad_w=0, stride_h=1, stride_w=2),
    "conv_no_bias": lambda: CaffeNet(data=(1, 3, 6, 6)).add(
        "Convolution", "conv", "data", params="convolution_param { num_output: 2 kernel_size: 1 bias_term: false }",
        blobs=[rnd(2, 3, 1, 1)]),
    "deconv": lambda: CaffeNet(data=(1, 4, 5, 5)).add(
        "Deconvolution", "deconv", "data",
        params="convolution_param { num_output: 3 kernel_size: 4 stride: 2 pad: 1 }", blobs=[rnd(4, 3, 4, 4), rnd(3)]),
    "deconv_group": lambda: CaffeNet(data=(1, 4, 5, 5)).add(
        "Deconvolution", "deconv", "data",
        params="convolution_param { num_output: 6 kernel_size: 3 stride: 2 group: 2 bias_term: false }",
        blobs=[rnd(4, 3, 3, 3)]),
    "inner_product_axis2": lambda: CaffeNet(data=(2, 3, 4, 5)).add(
        "InnerProduct", "fc", "data", params="inner_product_param { num_output: 6 axis: 2 }",
        blobs=[rnd(6, 20), rnd(6)]),
    "bnll": lambda: CaffeNet(data=(1, 3, 4, 4)).add("BNLL", "b", "data"),
    "batchnorm_2d": lambda: CaffeNet(data=(2, 5)).add(
        "BatchNorm", "bn", "data", params="batch_norm_param { eps: 0.001 }",
        blobs=[rnd(5), pos(5), np.array([1.0], np.float32)]),
    "inner_product": lambda: CaffeNet(data=(2, 3, 4, 4)).add(
        "InnerProduct", "fc", "data", params="inner_product_param { num_output: 5 }", blobs=[rnd(5, 48), rnd(5)]),
    "batchnorm_scale": lambda: CaffeNet(data=(1, 3, 4, 4)).add(
        "BatchNorm", "bn", "data", blobs=[rnd(3) * 7, pos(3) * 7, np.array([7.0], np.float32)]).add(
        "Scale", "sc", "bn", params="scale_param { bias_term: true }", blobs=[rnd(3), rnd(3)]),
    "scale_two_bottoms": lambda: CaffeNet(data=(1, 3, 4, 4), s=(1, 3)).add(
        "Scale", "sc", ["data", "s"], params="scale_param { axis: 0 }"),
    "scale_two_bottoms_4d": lambda: CaffeNet(data=(1, 3, 4, 4), s=(1, 3, 1, 1)).add(
        "Scale", "sc", ["data", "s"], params="scale_param { axis: 0 }"),
    "scale_axis0_no_bias": lambda: CaffeNet(data=(2, 3, 4)).add(
        "Scale", "sc", "data", params="scale_param { axis: 0 num_axes: 2 }", blobs=[rnd(2, 3)]),
    "relu_inplace_chain": lambda: _conv(kernel_size=1).add("ReLU", "relu", "conv", top="conv"),
    "leaky_relu": lambda: CaffeNet(data=(1, 3, 4, 4)).add("ReLU", "r", "data", params="relu_param { negative_slope: 0.1 }"),
    "prelu": lambda: CaffeNet(data=(1, 3, 4, 4)).add("PReLU", "p", "data", blobs=[rnd(3)]),
    "prelu_shared": lambda: CaffeNet(data=(1, 3, 4, 4)).add(
        "PReLU", "p", "data", params="prelu_param { channel_shared: true }", blobs=[rnd(1)]),
    "relu6": lambda: CaffeNet(data=(1, 3, 4, 4)).add("Power", "pw", "data", params="power_param { scale: 5 }").add(
        "ReLU6", "r6", "pw"),
    "sigmoid": lambda: CaffeNet(data=(1, 3, 4, 4)).add("Sigmoid", "s", "data"),
    "tanh": lambda: CaffeNet(data=(1, 3, 4, 4)).add("TanH", "t", "data"),
    "elu": lambda: CaffeNet(data=(1, 3, 4, 4)).add("ELU", "e", "data", params="elu_param { alpha: 0.7 }"),
    "absval": lambda: CaffeNet(data=(1, 3, 4, 4)).add("AbsVal", "a", "data"),
    "power": lambda: CaffeNet(data=(1, 3, 4, 4)).add(
        "Power", "pw", "data", params="power_param { power: 2 scale: 0.5 shift: 3 }"),
    "pool_max_ceil": lambda: CaffeNet(data=(1, 2, 10, 7)).add(
        "Pooling", "pool", "data", params="pooling_param { pool: MAX kernel_size: 3 stride: 2 }"),
    "pool_max_pad_clip": lambda: CaffeNet(data=(1, 2, 6, 6)).add(
        "Pooling", "pool", "data", params="pooling_param { pool: MAX kernel_size: 2 stride: 2 pad: 1 }"),
    "pool_ave_pad_ceil": lambda: CaffeNet(data=(1, 2, 10, 7)).add(
        "Pooling", "pool", "data", params="pooling_param { pool: AVE kernel_size: 3 stride: 2 pad: 1 }"),
    "pool_ave_nopad_ceil": lambda: CaffeNet(data=(1, 2, 10, 7)).add(
        "Pooling", "pool", "data", params="pooling_param { pool: AVE kernel_size: 3 stride: 2 }"),
    "pool_ave_clip": lambda: CaffeNet(data=(1, 2, 6, 6)).add(
        "Pooling", "pool", "data", params="pooling_param { pool: AVE kernel_size: 2 stride: 2 pad: 1 }"),
    "pool_global": lambda: CaffeNet(data=(1, 2, 5, 6)).add(
        "Pooling", "pool", "data", params="pooling_param { pool: AVE global_pooling: true }"),
    "eltwise_sum_coeff": lambda: CaffeNet(a=(1, 3, 4, 4), b=(1, 3, 4, 4)).add(
        "Eltwise", "e", ["a", "b"], params="eltwise_param { operation: SUM coeff: 0.5 coeff: -2 }"),
    "eltwise_prod": lambda: CaffeNet(a=(1, 3, 4, 4), b=(1, 3, 4, 4), c=(1, 3, 4, 4)).add(
        "Eltwise", "e", ["a", "b", "c"], params="eltwise_param { operation: PROD }"),
    "eltwise_max": lambda: CaffeNet(a=(1, 3, 4, 4), b=(1, 3, 4, 4)).add(
        "Eltwise", "e", ["a", "b"], params="eltwise_param { operation: MAX }"),
    "concat": lambda: CaffeNet(a=(1, 3, 4, 4), b=(1, 2, 4, 4)).add("Concat", "c", ["a", "b"]),
    "concat_axis2": lambda: CaffeNet(a=(1, 3, 4, 4), b=(1, 3, 2, 4)).add(
        "Concat", "c", ["a", "b"], params="concat_param { axis: 2 }"),
    "slice_split": lambda: CaffeNet(data=(1, 6, 4, 4)).add(
        "Slice", "sl", "data", top=["s1", "s2"], params="slice_param { axis: 1 slice_point: 2 }").add(
        "Split", "sp", "s1", top=["a", "b"]).add("Eltwise", "s1x", ["a", "b"]).add("AbsVal", "s2x", "s2"),
    "flatten_softmax": lambda: CaffeNet(data=(2, 3, 2, 2)).add("Flatten", "f", "data").add("Softmax", "sm", "f"),
    "reshape_softmax_axis": lambda: CaffeNet(data=(1, 12, 2, 2)).add(
        "Reshape", "r", "data", params="reshape_param { shape { dim: 0 dim: -1 dim: 3 } }").add(
        "Softmax", "sm", "r", params="softmax_param { axis: 2 }"),
    "permute": lambda: CaffeNet(data=(1, 3, 4, 5)).add("Permute", "p", "data", params="permute_param { order: 0 order: 2 order: 3 order: 1 }"),
    "lrn": lambda: CaffeNet(data=(1, 7, 4, 4)).add(
        "LRN", "lrn", "data", params="lrn_param { local_size: 5 alpha: 0.3 beta: 0.75 }"),
    "lrn_within": lambda: CaffeNet(data=(1, 3, 6, 6)).add(
        "LRN", "lrn", "data", params="lrn_param { local_size: 3 alpha: 0.5 beta: 0.75 norm_region: WITHIN_CHANNEL }"),
    "dropout": lambda: CaffeNet(data=(1, 3, 4, 4)).add("Dropout", "d", "data", top="data").add("AbsVal", "a", "data"),
    "crop": lambda: CaffeNet(a=(1, 3, 8, 8), b=(1, 3, 5, 4)).add(
        "Crop", "c", ["a", "b"], params="crop_param { axis: 2 offset: 1 offset: 2 }"),
    "interp": lambda: CaffeNet(data=(1, 2, 4, 5)).add("Interp", "i", "data", params="interp_param { zoom_factor: 2 }"),
    "interp_size": lambda: CaffeNet(data=(1, 2, 4, 5)).add(
        "Interp", "i", "data", params="interp_param { height: 7 width: 9 }"),
    "normalize": lambda: CaffeNet(data=(1, 4, 3, 3)).add(
        "Normalize", "n", "data", params="norm_param { across_spatial: false channel_shared: false }",
        blobs=[pos(4) * 10]),
    "normalize_across": lambda: CaffeNet(data=(1, 4, 3, 3)).add(
        "Normalize", "n", "data", params="norm_param { across_spatial: true channel_shared: true }",
        blobs=[np.array([20.0], np.float32)]),
    "shuffle_channel": lambda: CaffeNet(data=(1, 6, 3, 3)).add(
        "ShuffleChannel", "sc", "data", params="shuffle_channel_param { group: 3 }"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_layer_matches_opencv(case, tmp_path):
    check_against_opencv(CASES[case](), tmp_path)


# Layers OpenCV lacks or reads differently: NumPy formulas of Caffe's definitions are the reference.

def _converted_and_expected(net: CaffeNet, tmp_path, expect) -> tuple[np.ndarray, np.ndarray]:
    """The converted net's only output in onnxruntime, and ``expect(feeds)`` on the same feeds."""
    model, weights = net.write(tmp_path)
    feeds = feeds_for(net)
    got = run_onnx(convert(model, weights), feeds)
    (name, value), = got.items()
    return value, expect(feeds)


def test_inner_product_transpose_matches_caffe_formula(tmp_path):
    # Caffe stores transposed weights as K x N and computes x @ W; OpenCV 4.x ignores `transpose`.
    w, b = rnd(6, 3), rnd(3)
    net = CaffeNet(data=(2, 6)).add("InnerProduct", "fc", "data",
                                    params="inner_product_param { num_output: 3 transpose: true }", blobs=[w, b])
    got, want = _converted_and_expected(net, tmp_path, lambda f: f["data"] @ w + b)
    assert_close(got, want)


def test_lrn_k_matches_caffe_formula(tmp_path):
    # OpenCV 4.x ignores LRN's k (uses 1); Caffe adds k: x / (k + alpha/n * sum x^2)^beta.
    net = CaffeNet(data=(1, 7, 4, 4)).add("LRN", "lrn", "data",
                                          params="lrn_param { local_size: 5 alpha: 0.5 beta: 0.75 k: 2 }")

    def expect(f):
        x = f["data"][0]
        sq = np.pad(x ** 2, ((2, 2), (0, 0), (0, 0)))
        s = np.stack([sq[c:c + 5].sum(0) for c in range(7)])
        return (x / (2 + 0.5 / 5 * s) ** 0.75)[None]

    got, want = _converted_and_expected(net, tmp_path, expect)
    assert_close(got, want)


def test_clip_layer(tmp_path):
    net = CaffeNet(data=(1, 3, 4, 4)).add("Clip", "c", "data", params="clip_param { min: -0.5 max: 0.7 }")
    got, want = _converted_and_expected(net, tmp_path, lambda f: np.clip(f["data"], -0.5, 0.7))
    assert_close(got, want)


def test_deconvolution_dilation_output_size_follows_caffe(tmp_path):
    # Caffe: stride * (in - 1) + dilation * (kernel - 1) + 1 - 2 * pad (OpenCV 4.x ignores dilation here)
    net = CaffeNet(data=(1, 2, 5, 5)).add(
        "Deconvolution", "deconv", "data",
        params="convolution_param { num_output: 1 kernel_size: 3 stride: 2 dilation: 2 bias_term: false }",
        blobs=[np.ones((2, 1, 3, 3), np.float32)])
    model, weights = net.write(tmp_path)
    x = feeds_for(net)
    out = run_onnx(convert(model, weights), x)["deconv"]
    assert out.shape == (1, 1, 13, 13)
    # each input pixel lands on a 3x3 grid with spacing 2, starting at 2 * its position
    want = np.zeros((13, 13))
    for i in range(5):
        for j in range(5):
            want[2 * i:2 * i + 5:2, 2 * j:2 * j + 5:2] += x["data"][0, :, i, j].sum()
    assert_close(out[0, 0], want)


@pytest.mark.parametrize("params,size", [("shrink_factor: 2", (4, 5)), ("shrink_factor: 2 zoom_factor: 3", (10, 13))])
def test_interp_shrink_sizes_follow_caffe(params, size, tmp_path):
    # Caffe: shrink (in - 1) / s + 1, then zoom out + (out - 1) * (z - 1); OpenCV 4.x mis-sizes shrink
    net = CaffeNet(data=(1, 2, 7, 9)).add("Interp", "i", "data", params=f"interp_param {{ {params} }}")
    model, weights = net.write(tmp_path)
    x = feeds_for(net)["data"]
    out = run_onnx(convert(model, weights), {"data": x})["i"]
    assert out.shape == (1, 2, *size)
    assert_close(out[..., 0, 0], x[..., 0, 0])  # aligned corners
    assert_close(out[..., -1, -1], x[..., -1, -1])


def test_bias_layer(tmp_path):
    b = rnd(3)
    net = CaffeNet(data=(1, 3, 4, 4)).add("Bias", "bias", "data", blobs=[b])
    got, want = _converted_and_expected(net, tmp_path, lambda f: f["data"] + b[None, :, None, None])
    assert_close(got, want)


def test_upsample_nearest(tmp_path):
    net = CaffeNet(data=(1, 2, 3, 4)).add("Upsample", "up", "data", params="upsample_param { scale: 2 }")
    got, want = _converted_and_expected(net, tmp_path, lambda f: f["data"].repeat(2, axis=2).repeat(2, axis=3))
    assert_close(got, want)


def test_axpy(tmp_path):
    net = CaffeNet(a=(1, 3, 1, 1), x=(1, 3, 4, 4), y=(1, 3, 4, 4)).add("Axpy", "axpy", ["a", "x", "y"])
    got, want = _converted_and_expected(net, tmp_path, lambda f: f["a"] * f["x"] + f["y"])
    assert_close(got, want)


def test_in_place_layers_get_unique_tensors_and_outputs_keep_blob_names(tmp_path):
    net = _conv(kernel_size=1).add("ReLU", "relu", "conv", top="conv").add("Scale", "sc", "conv", top="conv",
                                                                           blobs=[rnd(6)])
    model, weights = net.write(tmp_path)
    onnx_model = convert(model, weights)
    outs = [n.output[0] for n in onnx_model.graph.node]
    assert len(outs) == len(set(outs))
    assert [o.name for o in onnx_model.graph.output] == ["conv"]
    assert [n.name for n in onnx_model.graph.node] == ["conv", "relu", "sc"]
