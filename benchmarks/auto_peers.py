"""``int8kit auto`` and its peers, each given the same task (model, data, budget).

Run as a module, one tool per process, so ``bench_auto.py`` can time it and kill it at its limit:
    python -m benchmarks.auto_peers int8kit|int8kit-full|inc|nncf --case effnet|orientation [--calib 256] [--test 500]
        -o OUT.onnx --progress PROGRESS.json

- ``inc``: Intel Neural Compressor's post-training static quantization with accuracy-aware tuning
  (its 2.x API, ``quantization.fit`` with ``PostTrainingQuantConfig``; QDQ, the ONNX Runtime
  backend; ``AccuracyCriterion`` absolute). Neural Compressor 3.8 and later ship no ONNX backend
  (it moved to ``onnx-neural-compressor``, which pins numpy < 2), and 3.7.x pins numpy < 2 too:
  ``bench_auto.py`` imports 3.7.1 from a folder of its own (``--inc-path``, see docs/benchmarks.md)
  so the project's numpy stays as it is.
- ``nncf``: NNCF's ``quantize_with_accuracy_control`` on the ONNX model (absolute ``max_drop``).

The peers score candidates on the validation half with the task's metric. The progress file counts the
evaluations of the validation function (the FP32 baseline included) as they happen, so a peer
killed at its limit still says how far it got.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `benchmarks` and `int8kit` importable
    _root = Path(__file__).resolve().parents[1]
    sys.path[:0] = [str(_root), str(_root / "src")]

import numpy as np  # noqa: E402
import onnx  # noqa: E402

from benchmarks.auto_task import Task, run_any, session  # noqa: E402

TOOLS = ("int8kit", "int8kit-full", "inc", "nncf")
NOT_AVAILABLE = 4  # exit code: int8kit.auto is not in this checkout


class Progress:
    """Counts validation-function calls and writes the count after each one."""

    def __init__(self, path: Path) -> None:
        self.path, self.start, self.scores = path, time.perf_counter(), []
        self.extra: dict = {}  # keys written once (tool, done) stay in every later write

    def record(self, score: float) -> None:
        self.scores.append(float(score))
        self.write()

    def write(self, **extra) -> None:
        self.extra.update(extra)
        info = {"evaluations": len(self.scores), "scores": self.scores,
                "elapsed_s": time.perf_counter() - self.start, **self.extra}
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(info))
        os.replace(tmp, self.path)


def _validate(task: Task, progress: Progress, model) -> float:
    score = task.score(model, "validation").value
    progress.record(score)
    return score


def run_int8kit(task: Task, out: Path, progress: Progress, full: bool = False) -> bool:
    """``int8kit.auto`` on the same task: the whole test set (it cuts the same halves itself:
    the first ``n // 2`` samples validate, the rest are held out)."""
    import int8kit

    if not hasattr(int8kit, "auto"):
        print("int8kit auto: not available in this checkout")
        sys.exit(NOT_AVAILABLE)
    progress.write(tool=f"int8kit auto{' --full' if full else ''}")
    folder = out.parent / f"int8kit_auto{'_full' if full else ''}"
    shutil.rmtree(folder, ignore_errors=True)  # a fresh search: a kept log would be resumed, not timed
    result = int8kit.auto(str(task.model), str(task.case.calib_npz), str(task.case.test_npz),
                          labels=str(task.case.labels) if task.metric == "top1" else None, metric=task.metric,
                          accept_drop=task.accept_drop, full=full, output_dir=folder,
                          progress=False)
    model = result.files.get("_int8.onnx")
    if model is None:
        return False
    Path(out).write_bytes(Path(model).read_bytes())
    # the same count as the peers': FP32's validation score, then every trial's ("trials" = evaluations - 1)
    for score in [result.budget.fp32, *(t.score.value for t in result.log.trials.values())]:
        progress.record(score)
    return True


def _onnx_mapping_shim() -> None:
    """Neural Compressor 3.7.1 reads ``onnx.mapping``, which onnx 1.19 removed; give it the same two
    tables built from onnx.helper (the functions that replaced them)."""
    import types

    if hasattr(onnx, "mapping"):
        return
    codes = [v for k, v in vars(onnx.TensorProto).items() if k.isupper() and isinstance(v, int) and v]
    to_np = {}
    for code in codes:
        try:
            to_np[code] = onnx.helper.tensor_dtype_to_np_dtype(code)
        except (KeyError, ValueError, TypeError):
            continue
    onnx.mapping = types.SimpleNamespace(TENSOR_TYPE_TO_NP_TYPE=to_np,
                                         NP_TYPE_TO_TENSOR_TYPE={np.dtype(v): k for k, v in reversed(to_np.items())})


def run_inc(task: Task, out: Path, progress: Progress, full: bool = False) -> bool:
    """Neural Compressor tune: static QDQ, accuracy-aware, stops at the first config that meets the budget."""
    _onnx_mapping_shim()
    import neural_compressor
    from neural_compressor import quantization
    from neural_compressor.config import AccuracyCriterion, PostTrainingQuantConfig, TuningCriterion
    from neural_compressor.data import DataLoader

    (name,) = task.calib.keys()  # both models have one input
    calib = task.calib[name]

    class Calib:
        """(input, label) items, as Neural Compressor's DataLoader reads them."""

        def __len__(self) -> int:
            return len(calib)

        def __getitem__(self, i: int):
            return calib[i], 0

    # Neural Compressor accepts only scores strictly above baseline - loss; half a sample more
    # turns that into the budget's ">=" on the validation half.
    loss = task.accept_drop + 0.5 / task.half
    conf = PostTrainingQuantConfig(
        approach="static", quant_format="QDQ", calibration_sampling_size=[len(calib)],
        accuracy_criterion=AccuracyCriterion(criterion="absolute", tolerable_loss=loss, higher_is_better=True),
        tuning_criterion=TuningCriterion(strategy="basic"),
    )
    progress.write(tool=f"Intel Neural Compressor {neural_compressor.__version__}")
    q = quantization.fit(str(task.model), conf, calib_dataloader=DataLoader("onnxruntime", Calib(), batch_size=16),
                         eval_func=lambda model: _validate(task, progress, model))
    if q is None:
        return False
    q.save(str(out))
    return True


def run_nncf(task: Task, out: Path, progress: Progress, full: bool = False) -> bool:
    """NNCF accuracy control on the ONNX model: quantize, then revert layers to float until the budget holds."""
    import nncf

    calib = [{k: v[i:i + 1] for k, v in task.calib.items()} for i in range(task.n_calib)]
    inputs = task.part("validation")
    labels = task.labels("validation")
    # items are sample indices, so the validation function knows which labels NNCF hands it
    val = nncf.Dataset(list(range(task.half)), lambda i: {k: v[i:i + 1] for k, v in inputs.items()})
    cached: list = [None, None]  # (model, session): NNCF may call back with the same model per item

    def validate(model: onnx.ModelProto, items) -> tuple[float, list[float]]:
        idx = np.fromiter(items, dtype=np.int64)
        if cached[0] is not model:
            cached[:] = [model, session(model)]
        logits = run_any(cached[1], {k: v[idx] for k, v in inputs.items()})
        hits = (logits.argmax(1) == labels[idx]).astype(np.float64)
        if len(idx) == task.half:  # a whole-half evaluation; NNCF also scores single items while ranking
            progress.record(float(hits.mean()))
        return float(hits.mean()), hits.tolist()

    progress.write(tool=f"NNCF {nncf.__version__}")
    model = nncf.quantize_with_accuracy_control(
        onnx.load(str(task.model)), nncf.Dataset(calib), val, validate,
        max_drop=task.accept_drop, drop_type=nncf.DropType.ABSOLUTE, subset_size=task.n_calib,
    )
    onnx.save(model, str(out))
    return True


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("tool", choices=TOOLS)
    ap.add_argument("--case", required=True)
    ap.add_argument("--calib", type=int, default=256)
    ap.add_argument("--test", type=int, default=500)
    ap.add_argument("-o", "--output", required=True, type=Path)
    ap.add_argument("--progress", required=True, type=Path)
    args = ap.parse_args(argv)
    task = Task(args.case, args.calib, args.test)
    out, progress_path = args.output.resolve(), args.progress.resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    os.chdir(out.parent)  # Neural Compressor writes its nc_workspace/ into the working folder
    progress = Progress(progress_path)
    np.random.seed(0)
    runners = {"int8kit": run_int8kit, "int8kit-full": run_int8kit, "inc": run_inc, "nncf": run_nncf}
    ok = runners[args.tool](task, out, progress, full=args.tool == "int8kit-full")
    progress.write(done=True, returned_model=ok)
    return 0 if ok else 3


if __name__ == "__main__":
    sys.exit(main())
