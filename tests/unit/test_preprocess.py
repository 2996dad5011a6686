"""The preprocessing language: every op against an independent NumPy (or Pillow) reference on real photos."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from int8kit.data.preprocess import TEMPLATES, Pipeline, parse_preprocess, pipeline_from_ops, resolve_preprocess
from int8kit.errors import ConfigError, DataError

PIL = pytest.importorskip("PIL.Image")
DARKNET = Path("/usr/share/darknet/data")


def _photos() -> list[tuple[str, np.ndarray]]:
    photos = []
    try:
        import skimage.data

        for name in ("astronaut", "coffee", "chelsea"):
            photos.append((name, np.ascontiguousarray(getattr(skimage.data, name)()[..., :3])))
    except Exception:  # scikit-image missing or its data not bundled
        pass
    if DARKNET.is_dir():
        for jpg in sorted(DARKNET.glob("*.jpg"))[:3]:
            photos.append((jpg.name, np.asarray(PIL.open(jpg).convert("RGB"))))
    return photos


PHOTOS = _photos()


@pytest.fixture(params=range(len(PHOTOS)) or [None], ids=[n for n, _ in PHOTOS] or ["none"])
def photo(request) -> np.ndarray:
    if request.param is None:
        pytest.skip("no real photos: install scikit-image (skimage.data) or Debian darknet (/usr/share/darknet/data)")
    return PHOTOS[request.param][1]


# --- an independent NumPy model of Pillow's resampling (separable, antialiased filters) ---

def _triangle(x: np.ndarray) -> np.ndarray:
    return np.clip(1.0 - np.abs(x), 0.0, None)


def _weights(n_in: int, n_out: int) -> np.ndarray:
    """(n_out, n_in) bilinear weights: the triangle widened by the scale when shrinking (antialias)."""
    scale = n_in / n_out
    support = max(scale, 1.0)
    w = np.zeros((n_out, n_in))
    for i in range(n_out):
        centre = (i + 0.5) * scale
        lo, hi = max(int(centre - support + 0.5), 0), min(int(centre + support + 0.5), n_in)
        taps = _triangle((np.arange(lo, hi) + 0.5 - centre) / support)
        w[i, lo:hi] = taps / taps.sum()
    return w


def _ref_resize_float(img: np.ndarray, h: int, w: int) -> np.ndarray:
    """Horizontal then vertical pass in float64."""
    out = np.einsum("ow,hwc->hoc", _weights(img.shape[1], w), img.astype(np.float64))
    return np.einsum("oh,hwc->owc", _weights(img.shape[0], h), out)


def _ref_resize_uint8(img: np.ndarray, h: int, w: int) -> np.ndarray:
    """The same with Pillow's 8-bit rounding: each pass rounds to uint8."""
    tmp = np.clip(np.rint(np.einsum("ow,hwc->hoc", _weights(img.shape[1], w), img.astype(np.float64))), 0, 255)
    return np.clip(np.rint(np.einsum("oh,hwc->owc", _weights(img.shape[0], h), tmp)), 0, 255)


def _chw(x: np.ndarray) -> np.ndarray:
    return x.transpose(2, 0, 1)


def test_resize_uint8_matches_numpy_bilinear(photo):
    out = parse_preprocess("resize_h=97,resize_w=131;bgr2rgb")(photo)
    ref = _chw(_ref_resize_uint8(photo, 97, 131))
    assert out.shape == (3, 97, 131) and out.dtype == np.float32
    diff = np.abs(out - ref)
    assert diff.max() <= 1.0 and diff.mean() < 0.05  # Pillow's 22-bit fixed-point taps vs float64


def test_resize_float_matches_numpy_bilinear(photo):
    """After 'scale' the image is float: Pillow resizes each channel as an F plane."""
    out = parse_preprocess("scale=0.00392156862745098;resize_h=64,resize_w=80;bgr2rgb")(photo)
    ref = _chw(_ref_resize_float(photo / 255.0, 64, 80))
    np.testing.assert_allclose(out, ref, atol=2e-5)


def test_resize_side_keeps_aspect_and_interpolation_is_pillows(photo):
    h, w = photo.shape[:2]
    out = parse_preprocess("resize_side=200,interpolation=bicubic;bgr2rgb;layout=NHWC")(photo)
    s = 200 / min(h, w)
    want = (math.floor(h * s + 0.5), math.floor(w * s + 0.5))
    assert out.shape == (*want, 3) and min(want) == 200
    ref = np.asarray(PIL.fromarray(photo).resize(want[::-1], PIL.Resampling.BICUBIC), dtype=np.float32)
    np.testing.assert_array_equal(out, ref)


def test_resize_side_rounds_like_tensorflow_vgg():
    assert parse_preprocess("resize_side=256").output_shape(375, 500) == (3, 256, 341)


def test_centre_crop_and_fraction(photo):
    h, w = photo.shape[:2]
    out = parse_preprocess("crop_h=100,crop_w=150;bgr2rgb")(photo)
    top, left = (h - 100) // 2, (w - 150) // 2
    np.testing.assert_array_equal(out, _chw(photo[top : top + 100, left : left + 150]))
    frac = parse_preprocess("crop_fraction=0.875;bgr2rgb")(photo)
    mh, mw = int((h - h * 0.875) / 2), int((w - w * 0.875) / 2)  # TF central_crop margins
    np.testing.assert_array_equal(frac, _chw(photo[mh : h - mh, mw : w - mw]))


def test_stand_means_are_bgr_and_output_is_bgr_without_swap(photo):
    bgr = photo[..., ::-1].astype(np.float64)
    out = parse_preprocess("mean_value=103.94:116.78:123.68,std=57:58:59,scale=0.5")(photo)
    ref = (bgr - [103.94, 116.78, 123.68]) / [57, 58, 59] * 0.5
    np.testing.assert_allclose(out, _chw(ref), rtol=1e-5, atol=1e-4)


def test_bgr2rgb_swaps_and_later_values_are_rgb(photo):
    raw = parse_preprocess("layout=NHWC")(photo)
    np.testing.assert_array_equal(raw, photo[..., ::-1])  # the language's default order is BGR
    swapped = parse_preprocess("bgr2rgb;mean_value=1:2:3;layout=NHWC")(photo)
    np.testing.assert_allclose(swapped, photo - np.float32([1, 2, 3]))
    assert parse_preprocess("bgr2rgb").output_order == "RGB"
    assert parse_preprocess("bgr2rgb;rgb2bgr").output_order == "BGR"


def test_vgg_tensorflow_template_equals_numpy_recipe(photo):
    out = resolve_preprocess(template="vgg_tensorflow")(photo)
    h, w = photo.shape[:2]
    s = 256 / min(h, w)
    size = (math.floor(w * s + 0.5), math.floor(h * s + 0.5))
    big = np.asarray(PIL.fromarray(photo).resize(size, PIL.Resampling.BILINEAR), dtype=np.float64)
    t, l = (size[1] - 224) // 2, (size[0] - 224) // 2
    ref = big[t : t + 224, l : l + 224] - [123.68, 116.78, 103.94]  # RGB out, VGG means per colour
    np.testing.assert_allclose(out, _chw(ref), atol=1e-4)


def test_gray_is_pillows_luminance(photo):
    out = parse_preprocess("gray")(photo)
    ref = np.asarray(PIL.fromarray(photo).convert("L"), dtype=np.float32)
    assert out.shape == (1, *photo.shape[:2])
    np.testing.assert_array_equal(out[0], ref)
    flt = parse_preprocess("scale=1.0;gray")(photo)[0]
    np.testing.assert_allclose(flt, photo @ np.array([0.299, 0.587, 0.114]), atol=1e-3)


def test_letterbox_keeps_aspect_and_centres(photo):
    h, w = photo.shape[:2]
    out = parse_preprocess("letterbox_h=320,letterbox_w=320,pad_value=127.5;bgr2rgb;layout=NHWC")(photo)
    s = min(320 / h, 320 / w)
    nh, nw = min(320, math.floor(h * s + 0.5)), min(320, math.floor(w * s + 0.5))
    top, left = (320 - nh) // 2, (320 - nw) // 2
    ref = np.full((320, 320, 3), 127.5, np.float32)
    ref[top : top + nh, left : left + nw] = np.asarray(PIL.fromarray(photo).resize((nw, nh), PIL.Resampling.BILINEAR))
    np.testing.assert_array_equal(out, ref)


def test_pad_bottom_right_with_bgr_values():
    img = np.full((5, 4, 3), 9, np.uint8)
    out = parse_preprocess("pad_h=7,pad_w=6,pad_value=1:2:3;layout=NHWC")(img)
    assert out.shape == (7, 6, 3)
    np.testing.assert_array_equal(out[:5, :4], 9)
    np.testing.assert_array_equal(out[6, 5], [1, 2, 3])  # listed B:G:R, output BGR
    with pytest.raises(DataError, match="larger 5x4"):
        parse_preprocess("pad_h=3,pad_w=6")(img)


def test_templates_parse_round_trip_and_give_224():
    img = np.random.default_rng(0).integers(0, 256, (300, 400, 3), dtype=np.uint8)
    for name, text in TEMPLATES.items():
        pipe = parse_preprocess(text)
        again = parse_preprocess(pipe.text())
        assert again.text() == pipe.text(), name
        np.testing.assert_array_equal(again(img), pipe(img))
        assert pipe(img).shape == (3, 224, 224), name
    assert parse_preprocess("vgg_tensorflow").text() == parse_preprocess(TEMPLATES["vgg_tensorflow"]).text()


def test_pipeline_from_ops_equals_string():
    img = np.random.default_rng(1).integers(0, 256, (50, 60, 3), dtype=np.uint8)
    a = pipeline_from_ops([("resize", {"resize_h": [32], "resize_w": [32]}),
                           ("stand", {"mean_value": [103.94, 116.78, 123.68], "scale": [1.0]}), ("bgr2rgb", {})])
    b = parse_preprocess("resize_h=32, resize_w=32 ; mean_value=103.94:116.78:123.68, scale=1.0; bgr2rgb")
    assert isinstance(a, Pipeline)
    np.testing.assert_array_equal(a(img), b(img))


@pytest.mark.parametrize(
    "text, match",
    [
        ("resize_hh=224,resize_w=224", "'resize_hh'.*did you mean 'resize_h'.*valid parameters"),
        ("resize_h=224,crop_w=10", "mixes parameters of resize and crop"),
        ("resize_h=224", "needs both resize_h and resize_w"),
        ("resize_side=256,resize_h=3", "resize_side or resize_h/resize_w"),
        ("resize_h=22.5,resize_w=3", "positive integer"),
        ("mean_value=1:x:3", "takes numbers, got 'x'"),
        ("resize_h=2,resize_w=2,interpolation=cubic", "did you mean 'bicubic'"),
        ("crop_fraction=1.5", r"\(0, 1\]"),
        ("layout=NCWH", "NCHW"),
        ("std=0", "must not be 0"),
        ("mean_value=1,mean_value=2", "appears twice"),
        ("resize_h=,resize_w=2", "has no value"),
        (" ; ", "empty"),
        ("layout=NHWC;layout=NCHW", "layout twice"),
    ],
)
def test_bad_strings_name_the_problem(text, match):
    with pytest.raises(ConfigError, match=match):
        parse_preprocess(text)


def test_bad_ops_and_templates():
    with pytest.raises(ConfigError, match="unknown preprocessing op 'resise'.*'resize'.*valid ops"):
        pipeline_from_ops([("resise", {"resize_h": [1]})])
    with pytest.raises(ConfigError, match="'crop_h' is not a parameter of resize"):
        pipeline_from_ops([("resize", {"crop_h": [1]})])
    with pytest.raises(ConfigError, match="did you mean 'vgg_tensorflow'"):
        resolve_preprocess(template="vgg_tensorflw")
    with pytest.raises(ConfigError, match="not both"):
        resolve_preprocess("bgr2rgb", "vgg_tensorflow")
    assert resolve_preprocess() is None


def test_runtime_mismatches_are_data_errors():
    img = np.zeros((50, 40, 3), np.uint8)
    with pytest.raises(DataError, match="crop 60x60 is larger than the 50x40"):
        parse_preprocess("crop_h=60,crop_w=60")(img)
    with pytest.raises(DataError, match="mean_value has 2 values"):
        parse_preprocess("mean_value=1:2")(img)
    with pytest.raises(DataError, match="bgr2rgb needs a 3-channel"):
        parse_preprocess("gray;bgr2rgb")(img)
    with pytest.raises(DataError, match="RGB"):
        parse_preprocess("bgr2rgb")(np.zeros((4, 4, 4), np.uint8))


def test_apply_pil_equals_array_call(photo):
    """ImageSource's fast path (leading resizes on the Pillow image) gives the same array."""
    for text in ("resize_side=150;crop_h=120,crop_w=120;mean_value=1:2:3,scale=0.5", "resize_h=64,resize_w=48;resize_h=32,resize_w=40;gray"):
        pipe = parse_preprocess(text)
        np.testing.assert_array_equal(pipe.apply_pil(PIL.fromarray(photo)), pipe(photo))
