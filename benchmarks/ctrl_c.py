"""Ctrl-C at random moments of an ``int8kit`` run: how each try ended.

Starts the real console command (``.venv/bin/int8kit``, or ``python -m int8kit`` with ``--module``)
once per try, sends SIGINT after a random delay in ``[0, --window)`` seconds and sorts the outcome:

- ``interrupted``: the one "interrupted" line, no traceback, exit code != 0 (what we want);
- ``finished``: exit code 0 and no traceback (the run ended before the signal came);
- ``killed``: ended by the signal itself (exit -2), silent: Python had not installed its handler yet,
  or the work was done (the command gives SIGINT its default action back for the teardown);
- ``traceback``: "Traceback" in stderr (a failure; the delay and the stderr tail are printed);
- ``segfault`` / ``abort``: exit -11 / -6 or 134 (a failure; stderr kept, with faulthandler's stacks);
- ``other``: anything else (printed).

Tries run one at a time at nice 10 (the machine is shared). Placeholders in the command:
``{model}`` (the demo MNIST CNN), ``{calib}`` (its 512 calibration images as .npy), ``{out}`` (a
fresh output folder per try). Example, the start-up window of a quantize run::

    .venv/bin/python benchmarks/ctrl_c.py --tries 40 --window 0.4 -- quantize {model} --data {calib} -o {out} --no-progress

``--startup`` times the start-up instead (no signals): how long Python runs before the console
script's first line, and how long the script's import of ``int8kit.__main__`` takes after it;
together they are the window in which a Ctrl-C is still Python's KeyboardInterrupt traceback.
"""

from __future__ import annotations

import argparse
import collections
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from int8kit.demo_data import demo_model_path, load_demo_data

VENV_BIN = Path(sys.executable).parent


def classify(rc: int, err: str) -> str:
    if "Traceback" in err:
        return "traceback"
    if rc == -signal.SIGSEGV:
        return "segfault"
    if rc in (-signal.SIGABRT, 134):
        return "abort"
    if rc == -signal.SIGINT:
        return "killed" if not err.strip() else "other"
    if rc == 0:
        return "finished"
    if "interrupted" in err and len(err.strip().splitlines()) == 1:
        return "interrupted"
    return "other"


_PROBE = """import time
t1 = time.monotonic()
import sys
from int8kit.__main__ import main
print(t1, time.monotonic())
"""


def startup(tries: int, bytecode: bool) -> None:
    """Median ms from the exec to the console script's first line (Python's own start-up: site, .pth
    files), and from there to the moment ``int8kit.__main__.main`` could run (our imports)."""
    with tempfile.TemporaryDirectory() as tmp:
        probe = Path(tmp) / "int8kit-probe"
        probe.write_text(f"#!{VENV_BIN / 'python'}\n{_PROBE}")
        probe.chmod(0o755)
        env = dict(os.environ)
        if bytecode:  # as an installed package has it: .pyc files written once, then read
            env.pop("PYTHONDONTWRITEBYTECODE", None)
            subprocess.run([str(probe)], env=env, check=True, capture_output=True)
        python, ours = [], []
        for _ in range(tries):
            t0 = time.monotonic()
            t1, t2 = map(float, subprocess.run([str(probe)], env=env, check=True, capture_output=True, text=True,
                                               preexec_fn=lambda: os.nice(10)).stdout.split())
            python.append(t1 - t0)
            ours.append(t2 - t1)
    print(f"start-up ({'with' if bytecode else 'without'} .pyc for int8kit), median of {tries}: "
          f"exec to the console script's first line {np.median(python) * 1000:.1f} ms, "
          f"then `from int8kit.__main__ import main` {np.median(ours) * 1000:.2f} ms")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tries", type=int, default=40)
    ap.add_argument("--window", type=float, default=0.4, help="SIGINT after a uniform random delay in [0, window) s")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--module", action="store_true", help="run `python -m int8kit` instead of the console script")
    ap.add_argument("--keep", type=Path, help="folder for the stderr of every failed try")
    ap.add_argument("--startup", action="store_true", help="only time the start-up (--tries runs), no signals")
    ap.add_argument("args", nargs=argparse.REMAINDER, help="int8kit arguments after --")
    opts = ap.parse_args()
    args = opts.args[1:] if opts.args[:1] == ["--"] else opts.args
    if opts.startup:
        startup(opts.tries, bytecode=False)
        startup(opts.tries, bytecode=True)
        return 0
    rng = random.Random(opts.seed)
    work = Path(tempfile.mkdtemp(prefix="int8kit-ctrl-c-"))
    calib = work / "calib.npy"
    np.save(calib, load_demo_data()["calib"])
    cmd0 = [str(VENV_BIN / "python"), "-m", "int8kit"] if opts.module else [str(VENV_BIN / "int8kit")]
    env = dict(os.environ, PYTHONFAULTHANDLER="1")  # a crash prints every thread's Python stack
    counts: collections.Counter[str] = collections.Counter()
    started = time.perf_counter()
    try:
        for i in range(opts.tries):
            out = work / f"out{i}"
            cmd = [*cmd0, *(a.format(model=demo_model_path(), calib=calib, out=out) for a in args)]
            delay = rng.uniform(0.0, opts.window)
            p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env,
                                 preexec_fn=lambda: os.nice(10))  # Popen returns once the exec succeeded
            t0 = time.perf_counter()
            time.sleep(max(0.0, delay - (time.perf_counter() - t0)))
            try:
                p.send_signal(signal.SIGINT)
            except ProcessLookupError:
                pass
            err = p.communicate(timeout=600)[1]
            kind = classify(p.returncode, err)
            counts[kind] += 1
            if kind not in ("interrupted", "finished", "killed"):
                tail = "\n    ".join(err.strip().splitlines()[-8:])
                print(f"try {i}: {kind} rc={p.returncode} at {delay * 1000:.1f} ms\n    {tail}", flush=True)
                if opts.keep:
                    opts.keep.mkdir(parents=True, exist_ok=True)
                    (opts.keep / f"try{i}_{kind}.txt").write_text(f"delay {delay:.4f} s rc {p.returncode}\n{err}")
            shutil.rmtree(out, ignore_errors=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    took = time.perf_counter() - started
    print(f"{opts.tries} tries in {took:.0f} s, SIGINT in [0, {opts.window * 1000:.0f}) ms of "
          f"`{' '.join(['int8kit' if not opts.module else 'python -m int8kit', *args])}`:")
    for kind in ("interrupted", "finished", "killed", "traceback", "segfault", "abort", "other"):
        print(f"  {kind:12s} {counts[kind]}")
    return 1 if counts["traceback"] + counts["segfault"] + counts["abort"] + counts["other"] else 0


if __name__ == "__main__":
    sys.exit(main())
