"""Every --target on every runtime, beside NNCF's and onnxruntime's QDQ output, in one run.

    python benchmarks/bench_targets.py [--models effnet,orientation,ocr_rec] [--test 500] [--runs 100]

Per model: int8kit with --target onnxruntime / openvino / tensorrt, NNCF (nncf.quantize on the
ONNX model) and onnxruntime quantize_static (QDQ, per-channel, MinMax), all calibrated on the
same 256 samples. Each INT8 model is then run in onnxruntime, OpenVINO with the f32 hint and
OpenVINO with its default precision (bf16 on CPUs that have it): accuracy against FP32 on the
test set in that runtime (top-1 agreement, or label accuracy; CTC exact match for the recogniser),
INT8/FP32 latency at batch 1 on one thread with the two models taking turns (the FP32 model in
the same runtime and precision), and the INT8 kernels the runtime really executes (onnxruntime:
QLinear*/MatMulInteger/ConvInteger nodes of the optimized graph; OpenVINO: compiled ops running in
u8/i8). TensorRT is not installed here: its rows are structural (see tests/unit/test_targets.py).
Needs openvino and nncf (pip install openvino nncf, under a torch==2.13.0 constraint).
"""
from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `benchmarks` and `int8kit` importable
    _root = Path(__file__).resolve().parents[1]
    sys.path[:0] = [str(_root), str(_root / "src")]

import numpy as np  # noqa: E402
import onnx  # noqa: E402
from tabulate import tabulate  # noqa: E402

from benchmarks import bench_eval as ev  # noqa: E402
from benchmarks.bench_ocr import ocr_metrics  # noqa: E402
from benchmarks.ort_baseline import ort_quantize_measured  # noqa: E402
from benchmarks.realdata import cache_dir, get_case  # noqa: E402
from int8kit.errors import Int8kitError  # noqa: E402

RUNTIMES = ("onnxruntime", "openvino f32", "openvino default")


def _case(name: str, n_test: int):
    if name == "ocr_rec":
        from benchmarks.realdata_ocr import ocr_rec_case

        return ocr_rec_case(n_calib=256, n_test=n_test)
    return get_case(name, n_calib=256, n_test=n_test)


def _session(model: Path, runtime: str, threads: int | None = 1):
    if runtime == "onnxruntime":
        from int8kit.runtime.session import make_session

        return make_session(model, threads=threads)
    from int8kit.runtime.openvino import OpenVinoSession

    return OpenVinoSession(model, threads=threads, precision="f32" if runtime == "openvino f32" else "default")


def _outputs(model: Path, runtime: str, data: dict[str, np.ndarray]) -> np.ndarray:
    sess = _session(model, runtime, threads=None)
    n = len(next(iter(data.values())))
    return np.concatenate([sess.run(None, {k: v[i:i + 1] for k, v in data.items()})[0] for i in range(n)])


def _int8_kernels(model: Path, runtime: str) -> int:
    """Integer kernels the runtime executes for this model."""
    if runtime == "onnxruntime":
        import onnxruntime as ort

        with tempfile.TemporaryDirectory() as tmp:
            opts = ort.SessionOptions()
            opts.log_severity_level = 3  # the optimized file is only read back here
            opts.optimized_model_filepath = str(Path(tmp) / "opt.onnx")
            ort.InferenceSession(str(model), opts, providers=["CPUExecutionProvider"])
            ops = [n.op_type for n in onnx.load(opts.optimized_model_filepath).graph.node]
        return sum(op.startswith("QLinear") or op in ("MatMulInteger", "ConvInteger", "MatMulIntegerToFloat", "QGemm")
                   for op in ops)
    compiled = _session(model, runtime)._compiled
    count = 0
    for op in compiled.get_runtime_model().get_ops():
        info = op.get_rt_info()
        precision = info["runtimePrecision"].astype(str) if "runtimePrecision" in info else ""
        kind = info["layerType"].astype(str) if "layerType" in info else ""
        count += precision in ("u8", "i8") and kind in ("Convolution", "FullyConnected", "MatMul", "GroupConvolution")
    return count


def _accuracy(case, fp32: np.ndarray, int8: np.ndarray) -> str:
    if case.kind == "ctc":
        return f"exact {ocr_metrics(fp32, int8)['exact match']:.3f}"
    m = ev.compare(case, fp32, int8)
    return f"acc {m['accuracy']:.4f}" if "accuracy" in m else f"agree {m['agreement']:.3f}"


def _quantizers(case, out: Path) -> dict[str, Path]:
    """Every INT8 model of the table, built once."""
    import int8kit

    models = {}
    for target in ("onnxruntime", "openvino", "tensorrt"):
        res = int8kit.quantize(str(case.model_path), str(case.calib_npz), output_dir=out / target, target=target,
                               progress=False, check_latency=False)
        models[f"int8kit --target {target}"] = res.int8_model
    models["NNCF 3.x"] = _nncf(case, out / "nncf.onnx")
    ort_out = out / "ort_minmax.onnx"
    if ort_quantize_measured(case.model_path, case.calib_npz, ort_out, "MinMax").ok:
        models["onnxruntime MinMax"] = ort_out
    return models


def _nncf(case, path: Path) -> Path:
    import nncf

    model = onnx.load(str(case.model_path))
    calib = ev.load_npz(case.calib_npz)
    n = len(next(iter(calib.values())))
    dataset = nncf.Dataset([{k: v[i:i + 1] for k, v in calib.items()} for i in range(n)])
    onnx.save(nncf.quantize(model, dataset, subset_size=n), str(path))
    return path


def bench(name: str, n_test: int, runs: int) -> list[dict]:
    case = _case(name, n_test)
    out = cache_dir() / "bench_out" / "targets" / name
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    models = _quantizers(case, out)
    test = ev.load_npz(case.test_npz)
    sample = {k: v[:1] for k, v in test.items()}
    rows = []
    for runtime in RUNTIMES:
        fp32 = _outputs(case.model_path, runtime, test)
        if case.kind == "labels":
            rows.append({"model": name, "runtime": runtime, "tool": "FP32", "accuracy": _accuracy(case, fp32, fp32)})
        for tool, path in models.items():
            row = {"model": name, "runtime": runtime, "tool": tool}
            try:
                row.update(_measure(case, path, runtime, fp32, test, sample, runs))
            except Int8kitError as exc:  # a runtime that cannot load a peer's model: say so in the table
                row["accuracy"] = f"not run: {str(exc)[:60]}"
            rows.append(row)
    return rows


def _measure(case, path: Path, runtime: str, fp32: np.ndarray, test: dict, sample: dict, runs: int) -> dict:
    from int8kit.evaluate.latency import measure_latencies

    fp32_ms, int8_ms = measure_latencies([_session(case.model_path, runtime), _session(path, runtime)], sample, runs=runs)
    return {"accuracy": _accuracy(case, fp32, _outputs(path, runtime, test)), "INT8/FP32": round(int8_ms / fp32_ms, 3),
            "FP32 ms": round(fp32_ms, 2), "int8 kernels": _int8_kernels(path, runtime)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", default="effnet,orientation,ocr_rec")
    p.add_argument("--test", type=int, default=500, help="test samples per model")
    p.add_argument("--runs", type=int, default=100, help="timed runs per model for each latency")
    args = p.parse_args(argv)
    for name in args.models.split(","):
        print(f"\n{name}")
        print(tabulate(bench(name, args.test, args.runs), headers="keys", tablefmt="github"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
