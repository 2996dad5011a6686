"""The search log: every scored trial in order, as JSON (the resume journal and the output) and as
a table. A rerun with the same arguments reads it and does not score a candidate twice."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

from tabulate import tabulate

from int8kit.auto.trial import Trial

log = logging.getLogger(__name__)
LOG_VERSION = 1
HEADERS = ["#", "strategy", "score [95% interval]", "drop", "budget", "output SQNR dB", "float layers", "MACs INT8",
           "INT8/FP32 latency", "s"]


class SearchLog:
    """Trials by candidate key, in the order they ran; ``run_key`` names the arguments they belong to."""

    def __init__(self, run_key: str, trials: list[Trial] | None = None) -> None:
        self.run_key = run_key
        self.trials: dict[str, Trial] = {t.key: t for t in trials or []}

    def get(self, key: str) -> Trial | None:
        return self.trials.get(key)

    def add(self, trial: Trial) -> None:
        self.trials[trial.key] = trial

    def __len__(self) -> int:
        return len(self.trials)

    def to_dict(self, **extra: Any) -> dict[str, Any]:
        return {"version": LOG_VERSION, "run_key": self.run_key, **extra, "trials": [t.to_dict() for t in self.trials.values()]}

    def save(self, path: str | os.PathLike, **extra: Any) -> Path:
        """Write atomically (a temp name, then a rename)."""
        from int8kit.graph.io import write_text_atomic

        return write_text_atomic(Path(path), json.dumps(self.to_dict(**extra), indent=2) + "\n")

    @classmethod
    def resume(cls, paths: list[Path], run_key: str) -> "SearchLog":
        """The trials of the first readable log among ``paths`` written for ``run_key`` (else none)."""
        for path in paths:
            if not path.is_file():
                continue
            try:
                raw = json.loads(path.read_text())
                if raw.get("version") != LOG_VERSION or raw.get("run_key") != run_key:
                    log.info("search log %s belongs to other arguments; starting afresh", path)
                    continue
                return cls(run_key, [Trial.from_dict(t) for t in raw["trials"]])
            except (OSError, ValueError, KeyError, TypeError) as exc:
                log.warning("search log %s cannot be read (%s); starting afresh", path, exc)
        return cls(run_key)

    def table(self, chosen: str | None = None) -> str:
        """One row per trial; the chosen one marked with *."""
        rows = []
        for i, t in enumerate(self.trials.values(), 1):
            floats = ", ".join(t.float_layers[:3]) + (f" +{len(t.float_layers) - 3}" if len(t.float_layers) > 3 else "")
            rows.append([f"{i}{'*' if t.key == chosen else ''}", t.name, t.score.text(), f"{t.drop:+.4f}",
                         "meets" if t.meets else "misses", "-" if t.output_sqnr_db is None else f"{t.output_sqnr_db:.2f}",
                         f"{len(t.float_layers)}: {floats}" if t.float_layers else "0",
                         f"{t.int8_macs * 100:.1f}%", f"{t.latency_ratio:.2f}", f"{t.seconds:.1f}"])
        return tabulate(rows, headers=HEADERS, tablefmt="simple", disable_numparse=True)
