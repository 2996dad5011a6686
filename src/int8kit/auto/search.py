"""The search itself: quick candidates (and in full mode the float search) scored one by one with
a progress bar, each written to the resume journal as soon as it is scored; Ctrl-C ends the search
and keeps the best trial so far. The chosen candidate is rebuilt and reported on the held-out half."""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

from int8kit.auto.budget import Budget, Score
from int8kit.auto.candidates import Candidate, quick_candidates
from int8kit.auto.choose import best_score, choose, contenders
from int8kit.auto.full import full_search
from int8kit.auto.ranking import sensitivity_ranking
from int8kit.auto.searchlog import SearchLog
from int8kit.auto.trial import Built, SearchContext, Trial

log = logging.getLogger(__name__)
COSTLY_SHOWN = 5  # layers named when the budget is missed
# output SQNR differences this large between two trials on the same samples are not noise
CHANCE_DB = 0.5


@dataclass
class SearchResult:
    """What the search found: the chosen trial and model, every trial, and the held-out check."""

    chosen: Trial
    built: Built
    meets: bool
    budget: Budget
    metric: str
    full: bool
    fp32_held_out: Score
    held_out: Score
    log: SearchLog
    interrupted: bool = False
    resumed: int = 0  # trials read from an earlier run's log instead of scored again
    ranking: list[tuple[str, float]] = field(default_factory=list)  # a missed budget: the chosen model's INT8 layers, most sensitive first
    seconds: float = 0.0
    files: dict = field(default_factory=dict)  # what api.auto wrote, by suffix
    runtime: str = "onnxruntime"  # where the latencies were timed

    @property
    def held_out_holds(self) -> bool:
        """The held-out score reaches the budget within its uncertainty (drop measured from FP32 on that half)."""
        held = Budget(self.fp32_held_out.value, self.budget.accept_drop, self.budget.relative)
        return held.holds(self.held_out)

    @property
    def costly_layers(self) -> list[tuple[str, float]]:
        """The INT8 layers that cost most, named when the budget is missed."""
        return self.ranking[:COSTLY_SHOWN]

    def messages(self) -> list[str]:
        """What a user must be told beyond the table: a missed budget, a slow model, an interruption."""
        out = []
        if self.interrupted:
            out.append(f"interrupted after {len(self.log)} trials: the best trial so far is written.")
        if not self.meets:
            gap = self.budget.gap(self.chosen.score.value)
            names = ", ".join(f"{n} ({e:.3g})" for n, e in self.costly_layers) or "none ranked"
            out.append(f"no candidate met the budget ({self.budget.text()}); the best, '{self.chosen.name}', scores "
                       f"{self.chosen.score.value:.4f}, {gap:.4f} short. The layers that cost most (isolated error): "
                       f"{names}; {'try a larger --accept-drop' if self.full else 'try --full, a larger --accept-drop'}, "
                       "or float them with --fp-layers.")
        if self.chosen.latency_ratio >= 1.0:
            out.append(self._slower_than_fp32())
        closer = self._closer_but_missing()
        if closer:
            out.append(closer)
        if not self.held_out_holds:
            out.append(f"on the held-out half the chosen model scores {self.held_out.text()} against FP32 "
                       f"{self.fp32_held_out.value:.4f}: the budget does not hold there within the score's uncertainty.")
        return out

    def _closer_but_missing(self) -> str:
        """When the chosen model meets the budget, a trial that misses it although its output is
        closer to FP32's (by ``CHANCE_DB`` or more): the chosen one's margin is then partly chance."""
        c = self.chosen
        if not self.meets or c.output_sqnr_db is None:
            return ""
        trials = list(self.log.trials.values())
        missing = [t for t in trials if not t.meets and t.output_sqnr_db is not None]
        best = max(missing, key=lambda t: t.output_sqnr_db, default=None)
        if best is None or best.output_sqnr_db < c.output_sqnr_db + CHANCE_DB:
            return ""
        return (f"the chosen model's output is further from FP32's (SQNR {c.output_sqnr_db:.1f} dB) than that of "
                f"#{trials.index(best) + 1} '{best.name}' ({best.output_sqnr_db:.1f} dB), which misses the budget at "
                f"{best.score.value:.4f}: on {c.score.n} samples part of the chosen model's score is chance; the held-out "
                f"half is the check ({self.held_out.text()}).")

    def _slower_than_fp32(self) -> str:
        """Say that the chosen model is slower than FP32, and which trial is the best of those that are not."""
        text = f"the chosen INT8 model is not faster than FP32 (INT8/FP32 latency {self.chosen.latency_ratio:.2f})"
        trials = list(self.log.trials.values())
        faster = best_score(t for t in trials if t.latency_ratio < 1.0)
        if faster is None:
            return text + "; no trial was."
        number = trials.index(faster) + 1
        return (text + f"; the best trial that is faster is #{number} '{faster.name}': {faster.score.value:.4f} "
                f"(drop {faster.drop:+.4f}) at {faster.latency_ratio:.2f}. To get it, rerun with the same arguments and "
                f"--accept-drop {math.ceil(faster.drop * 1e4 - 1e-6) / 1e4:.4f}: the search reads its log and scores nothing again.")


class _Runner:
    """Scores candidates, or reads them from the log of an earlier run; saves the journal after each."""

    def __init__(self, ctx: SearchContext, search_log: SearchLog, journal: Path | None, bar: tqdm) -> None:
        self.ctx, self.log, self.journal, self.bar = ctx, search_log, journal, bar
        self.resumed = 0
        self._earlier = set(search_log.trials)  # scored by an earlier run (a later repeat in this run is no resume)

    def expect(self, more: int) -> None:
        if self.bar.n + more > (self.bar.total or 0):
            self.bar.total = self.bar.n + more
            self.bar.refresh()

    def __call__(self, candidate: Candidate) -> Trial:
        trial = self.log.get(candidate.key)
        if trial is not None:  # judged by this run's budget: the log may come from another --accept-drop
            trial.drop, trial.meets = self.ctx.budget.drop(trial.score.value), self.ctx.budget.meets(trial.score.value)
            if candidate.key in self._earlier:
                self._earlier.discard(candidate.key)
                self.resumed += 1
        else:
            trial, _ = self.ctx.run(candidate)
            self.log.add(trial)
            if self.journal is not None:
                self.log.save(self.journal)
        self.expect(1)
        self.bar.set_postfix_str(f"{trial.name[:28]}: {trial.score.value:.4f}{' ok' if trial.meets else ''}")
        self.bar.update(1)
        return trial


def run_search(ctx: SearchContext, search_log: SearchLog, *, full: bool, metric: str, journal: Path | None = None,
               progress: bool = True) -> SearchResult:
    """Quick mode, or full mode; then rebuild the chosen candidate and score it on the held-out half."""
    start = time.perf_counter()
    quick = quick_candidates(ctx.base, channel_steps=ctx.uses_channel_steps())
    interrupted = False
    with tqdm(total=len(quick), unit="trial", desc="auto", disable=not progress, dynamic_ncols=True) as bar:
        runner = _Runner(ctx, search_log, journal, bar)
        try:
            trials = [runner(c) for c in quick]
            if full:
                full_search(ctx, runner, trials, expect=runner.expect)
        except KeyboardInterrupt:
            if not len(search_log):
                raise
            interrupted = True
    if not interrupted and runner.resumed < len(search_log):
        # the contenders timed side by side: their own timings came at different loads (a search
        # read whole from its log keeps the side-by-side timing it was chosen by)
        ctx.time_together(contenders(search_log.trials.values(), full=full))
        if journal is not None:
            search_log.save(journal)
    chosen, meets = choose(search_log.trials.values(), full=full)
    assert chosen is not None  # at least one trial ran or was read
    built = ctx.build(chosen.candidate())
    ranking: list[tuple[str, float]] = []
    if not meets:  # name the layers that cost most
        int8_layers = [n for n in ctx.macs if n not in built.plan.float_nodes]
        ranking = sensitivity_ranking(ctx.optimized, built.plan, int8_layers, ctx.scorer.evaluator)
    held_fp32 = Score.of(ctx.scorer.fp32("held_out"))
    held = Score.of(ctx.scorer.score(built.model, "held_out"))
    return SearchResult(chosen, built, meets, ctx.budget, metric, full, held_fp32, held, search_log, interrupted,
                        runner.resumed, ranking, time.perf_counter() - start, runtime=ctx.runtime)
