"""Is image decoding the bottleneck? ImageSource vs a plain Pillow loop, and calibration's data wait.

    python benchmarks/bench_data.py [--n 500] [--repeats 3] [--calib 256]

1. Builds ``n`` JPEG photos once (random-resized crops of the scikit-image and Debian darknet
   photos, 320-640 px on the long side, in $INT8KIT_CACHE) and times, on the same files:
   a single-threaded loop (open, convert RGB, bilinear resize to 224x224, float CHW, (x-127)/128)
   against ``ImageSource`` with the equivalent preprocessing string, for thread and process pools.
   Every configuration's output is checked equal to the loop's before it is timed.
2. Calibrates EfficientNet-Lite0 fed by the image folder + preprocessing string and counts the
   time the calibration loop spends blocked in ``next()`` on its batch source (decode, preprocess,
   stacking and validation of a batch, as seen by the consumer) against the whole pass; and, as a
   second view, the same pass on the same data already in memory (wall and CPU time added).
Medians over ``--repeats`` runs.
"""
from __future__ import annotations

import argparse
import math
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.realdata import _crop_box, cache_dir, efficientnet_lite0_onnx, natural_photos  # noqa: E402
from int8kit.data.images import ImageSource  # noqa: E402
from int8kit.data.sources import DataSource  # noqa: E402

PREPROCESS = "resize_h=224,resize_w=224;mean_value=127,std=128;bgr2rgb"  # EfficientNet-Lite: RGB, (x-127)/128


def photo_folder(n: int, seed: int = 0) -> Path:
    """``n`` JPEGs made from the real photos (built once, renamed into place when complete)."""
    from PIL import Image

    folder = cache_dir() / f"bench_data_photos_n{n}_s{seed}"
    if folder.is_dir():
        return folder
    photos = [Image.fromarray(p) for p in natural_photos()]
    rng = np.random.default_rng(seed)
    tmp = Path(tempfile.mkdtemp(dir=cache_dir(), prefix=".tmp-photos-"))
    for i in range(n):
        img = photos[int(rng.integers(len(photos)))]
        left, top, right, bottom = _crop_box(rng, img.height, img.width)
        long_side = int(rng.integers(320, 641))
        scale = long_side / max(right - left, bottom - top)
        size = (max(1, round((right - left) * scale)), max(1, round((bottom - top) * scale)))
        img.resize(size, Image.BILINEAR, box=(left, top, right, bottom)).save(tmp / f"{i:04d}.jpg", quality=90)
    try:
        os.replace(tmp, folder)
    except OSError:  # another run finished first
        shutil.rmtree(tmp, ignore_errors=True)
    return folder


def pillow_loop(paths: list[Path]) -> Iterator[np.ndarray]:
    """The plain single-threaded recipe a user would write."""
    from PIL import Image

    for path in paths:
        with Image.open(path) as img:
            arr = np.asarray(img.convert("RGB").resize((224, 224), Image.BILINEAR), dtype=np.float32)
        yield (arr.transpose(2, 0, 1) - 127.0) / 128.0


def _time(make, repeats: int) -> list[float]:
    runs = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in make():
            pass
        runs.append(time.perf_counter() - start)
    return runs


def throughput(folder: Path, repeats: int, workers: list[int]) -> dict[str, tuple[float, float]]:
    """Images per second of every configuration: (median, best) of ``repeats`` passes."""
    paths = sorted(folder.glob("*.jpg"))
    reference = list(pillow_loop(paths[:8]))
    configs = {"pillow loop (1 thread)": lambda: pillow_loop(paths)}
    for w in workers:
        configs[f"ImageSource threads={w}"] = (lambda w=w: iter(ImageSource(folder, PREPROCESS, workers=w)))
    configs["ImageSource inline (workers=0)"] = lambda: iter(ImageSource(folder, PREPROCESS, workers=0))
    configs[f"ImageSource processes={max(workers)}"] = (
        lambda: iter(ImageSource(folder, PREPROCESS, workers=max(workers), executor="process"))
    )
    rates = {}
    for name, make in configs.items():
        if name.startswith("ImageSource"):
            first = [s.inputs[""] for _, s in zip(range(8), make())]
            for got, want in zip(first, reference):
                np.testing.assert_allclose(got, want, atol=1e-6)  # same recipe, same numbers
        runs = _time(make, repeats)
        rates[name] = (len(paths) / statistics.median(runs), len(paths) / min(runs))
    return rates


class TimedBatches(DataSource):
    """Wraps a batch source and sums the time its consumer is blocked in ``next()``."""

    def __init__(self, inner: DataSource):
        self.inner, self.num_samples, self.batch_size = inner, inner.num_samples, inner.batch_size
        self.blocked = 0.0

    def labels(self):
        return self.inner.labels()

    def __iter__(self):
        it = iter(self.inner)
        while True:
            start = time.perf_counter()
            try:
                batch = next(it)
            except StopIteration:
                self.blocked += time.perf_counter() - start
                return
            self.blocked += time.perf_counter() - start
            yield batch


def calibration_wait(folder: Path, n: int, repeats: int, batch: int) -> dict[str, float]:
    """Share of EfficientNet-Lite0 calibration time spent waiting for image data.

    Each repeat runs the pass from the image folder and, right after, from the same images
    already in memory (paired, so load from other processes hits both alike). CPU seconds are
    this process's (decode threads included), a measure that load on other cores does not move.
    """
    import onnx

    from int8kit import api
    from int8kit.data.sources import batches_from, model_input_specs

    model = onnx.load(str(efficientnet_lite0_onnx()))
    specs = model_input_specs(model)
    source = ImageSource(folder, PREPROCESS, input_name=specs[0].name)
    in_memory = np.stack([s.inputs[specs[0].name] for _, s in zip(range(n), source)])
    rows: dict[str, list[float]] = {k: [] for k in ("img_s", "arr_s", "blocked", "extra", "img_cpu", "arr_cpu")}
    for _ in range(repeats):
        timed = TimedBatches(batches_from(source, specs, batch_size=batch, iterations=n))
        cpu = time.process_time()
        t_img = api.calibrate(model, timed, progress=False).seconds
        img_cpu = time.process_time() - cpu
        cpu = time.process_time()
        t_arr = api.calibrate(model, in_memory, batch_size=batch, progress=False).seconds
        arr_cpu = time.process_time() - cpu
        for key, value in (("img_s", t_img), ("arr_s", t_arr), ("blocked", timed.blocked / t_img),
                           ("extra", (t_img - t_arr) / t_img), ("img_cpu", img_cpu), ("arr_cpu", arr_cpu)):
            rows[key].append(value)
    med = {k: statistics.median(v) for k, v in rows.items()}
    return {
        "images": n,
        "calibrate from images s": med["img_s"],
        "calibrate from arrays s": med["arr_s"],
        "blocked in next() share": med["blocked"],
        "wall time added share": med["extra"],
        "CPU s from images": med["img_cpu"],
        "CPU s from arrays": med["arr_cpu"],
        "CPU added by decoding share": (med["img_cpu"] - med["arr_cpu"]) / med["img_cpu"],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=500, help="photos to build and read")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--calib", type=int, default=256, help="images for the calibration pass (0: skip it)")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--workers", default="1,2,4,8", help="thread counts to time")
    args = parser.parse_args(argv)
    folder = photo_folder(args.n)
    cores = os.cpu_count()
    print(f"{args.n} JPEG photos in {folder}; {cores} CPU cores; preprocessing '{PREPROCESS}'")
    rates = throughput(folder, args.repeats, [int(w) for w in args.workers.split(",")])
    base, base_best = rates["pillow loop (1 thread)"]
    print(f"\n{'configuration':34s} {'median img/s':>12s} {'vs loop':>8s} {'best img/s':>11s} {'vs loop':>8s}")
    for name, (rate, best) in rates.items():
        print(f"{name:34s} {rate:12.1f} {rate / base:7.2f}x {best:11.1f} {best / base_best:7.2f}x")
    if args.calib:
        wait = calibration_wait(folder, min(args.calib, args.n), args.repeats, args.batch)
        print(f"\nEfficientNet-Lite0 calibration on {wait['images']} images (batch {args.batch}, median of {args.repeats}):")
        for key, value in wait.items():
            if key != "images":
                shown = f"{100 * value:.1f} %" if "share" in key else f"{value:.2f}"
                print(f"  {key:28s} {shown}")
    return 0 if all(math.isfinite(r) for pair in rates.values() for r in pair) else 1


if __name__ == "__main__":
    sys.exit(main())
