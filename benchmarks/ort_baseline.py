"""onnxruntime.quantization baselines, and wall-time / peak-RSS measurement of any subprocess.

Run as a module to quantize in a fresh process (so its peak RSS is its own):
    python -m benchmarks.ort_baseline MODEL --calib CALIB.npz -o OUT.onnx --method MinMax
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
ORT_METHODS = ("MinMax", "Entropy", "Percentile")


@dataclass
class Measured:
    """Outcome of one measured subprocess."""

    cmd: list[str]
    returncode: int
    wall_s: float
    peak_rss_gb: float
    output: str

    @property
    def ok(self) -> bool:
        return self.returncode == 0


# Runs inside a tiny wrapper interpreter. A child's ru_maxrss starts from the RSS of the
# process it was forked from (Linux records the old mm's high-water mark at exec), so forking
# straight from this big benchmark process would inflate every number; the wrapper is small.
_WRAPPER = """
import os, subprocess, sys, json
p = subprocess.Popen(sys.argv[2:])
_, status, usage = os.wait4(p.pid, 0)
with open(sys.argv[1], "w") as f:
    json.dump({"rc": os.waitstatus_to_exitcode(status), "maxrss_kib": usage.ru_maxrss}, f)
"""


def run_measured(cmd: list[str], env: dict[str, str] | None = None, timeout_s: float | None = None) -> Measured:
    """Run ``cmd``; return its wall time and peak RSS (its own plus waited-for descendants)."""
    full_env = dict(os.environ, **(env or {}))
    # Subprocesses import int8kit from src/ and benchmarks from the repo root.
    extra = [str(REPO_ROOT / "src"), str(REPO_ROOT)]
    full_env["PYTHONPATH"] = os.pathsep.join(extra + [p for p in [full_env.get("PYTHONPATH")] if p])
    with tempfile.TemporaryDirectory() as tmp:
        report, log_path = Path(tmp) / "rusage.json", Path(tmp) / "log.txt"
        with open(log_path, "w") as log:
            start = time.perf_counter()
            # Own session, so a timeout kills the wrapper and the measured command together.
            proc = subprocess.Popen([sys.executable, "-c", _WRAPPER, str(report), *cmd], stdout=log,
                                    stderr=subprocess.STDOUT, env=full_env, start_new_session=True)
            try:
                proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
            wall = time.perf_counter() - start
        output = log_path.read_text(errors="replace")
        info = json.loads(report.read_text()) if report.exists() else {"rc": -9, "maxrss_kib": 0}
    # Linux reports ru_maxrss in KiB.
    return Measured(cmd, info["rc"], wall, info["maxrss_kib"] * 1024 / 1e9, output)


def ort_quantize_measured(model: Path, calib_npz: Path, out: Path, method: str,
                          batch: int = 16, limit: int | None = None,
                          timeout_s: float | None = None) -> Measured:
    """quantize_static in a fresh subprocess; returns its wall time and peak RSS."""
    cmd = [sys.executable, "-m", "benchmarks.ort_baseline", str(model), "--calib", str(calib_npz),
           "-o", str(out), "--method", method, "--batch", str(batch)]
    if limit:
        cmd += ["--limit", str(limit)]
    return run_measured(cmd, timeout_s=timeout_s)


def ort_quantize(model: Path, calib_npz: Path, out: Path, method: str,
                 batch: int = 16, limit: int | None = None) -> Path:
    """QDQ, per-channel, QUInt8 activations, QInt8 weights, the given CalibrationMethod name."""
    from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat,
                                          QuantType, quantize_static)

    data = dict(np.load(calib_npz))
    n = len(next(iter(data.values())))
    n = min(n, limit) if limit else n

    class Reader(CalibrationDataReader):
        """Feed the .npz in batches (all the models have a dynamic batch axis)."""

        def __init__(self) -> None:
            self.starts = iter(range(0, n, batch))

        def get_next(self):
            start = next(self.starts, None)
            if start is None:
                return None
            stop = min(start + batch, n)
            return {k: v[start:stop] for k, v in data.items()}

    out.parent.mkdir(parents=True, exist_ok=True)
    quantize_static(
        str(model), str(out), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
        calibrate_method=getattr(CalibrationMethod, method),
    )
    return out


def main(argv: list[str] | None = None) -> int:
    """Command-line entry used by :func:`ort_quantize_measured`."""
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("model")
    ap.add_argument("--calib", required=True)
    ap.add_argument("-o", "--output", required=True)
    ap.add_argument("--method", choices=ORT_METHODS, default="MinMax")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--limit", type=int)
    args = ap.parse_args(argv)
    ort_quantize(Path(args.model), Path(args.calib), Path(args.output), args.method,
                 args.batch, args.limit)
    return 0


if __name__ == "__main__":
    sys.exit(main())
