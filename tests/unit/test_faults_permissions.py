"""Files and folders the user may not use, as a real user: nothing is injected, the file system itself
refuses (PermissionError). The tests run as root here and in CI, so each call runs in a forked child
that has dropped to ``nobody`` (``tests.unit.faults.as_unprivileged``). Every refusal must be one line
(exit code 2) that names the path, and must leave what was there as it was."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from int8kit.cli import main
from int8kit.demo_data import demo_model_path, load_demo_data
from tests.unit.faults import as_unprivileged, readable_tmp, remove_tree

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="the calls run in a forked child as a user without root's rights")


@pytest.fixture(scope="module")
def world():
    """A folder every user can read but not write: a model, calibration data and statistics, an
    earlier quantize set, unreadable copies of the inputs (mode 0600) and a folder anyone may write."""
    root = readable_tmp()
    model, calib, stats = root / "net.onnx", root / "calib.npy", root / "net_stats.npz"
    shutil.copy(demo_model_path(), model)
    np.save(calib, load_demo_data()["calib"][:16])
    # as this user first, on writable paths: the child can use only modules loaded in this process
    assert main(["calibrate", str(model), "--data", str(calib), "-o", str(stats), "--no-progress"]) == 0
    assert main(["quantize", str(model), "--stats", str(stats), "-o", str(root / "old"), "--no-progress"]) == 0
    assert main(["quantize", str(model), "--data", str(calib), "-o", str(root / "old"), "--no-progress"]) == 0
    assert main(["inspect", str(model)]) == 0
    for src in (model, calib, stats):
        secret = root / f"secret_{src.name}"
        shutil.copy(src, secret)
        secret.chmod(0o600)
    for path in (root, root / "old"):
        path.chmod(0o755)  # a user's umask may have given the group or others the write bit
    (root / "anyone").mkdir()
    (root / "anyone").chmod(0o1777)
    yield root
    remove_tree(root)


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _refused(args: list[str], *, names: Path) -> str:
    code, err = as_unprivileged(lambda: main(args))
    assert code == 2 and len(err.splitlines()) == 1, f"exit code {code}:\n{err}"
    assert err.startswith("int8kit: error: ") and str(names) in err, err
    return err


@pytest.mark.parametrize("verb", ["quantize", "calibrate"])
def test_an_output_folder_the_user_cannot_write_is_one_line_and_keeps_what_was_there(world, verb):
    before = _files(world)
    model, calib = str(world / "net.onnx"), str(world / "calib.npy")
    if verb == "quantize":  # a new set in the read-only folder, and over the earlier set in it
        _refused(["quantize", model, "--data", calib, "-o", str(world / "new"), "--no-progress"], names=world)
        _refused(["quantize", model, "--data", calib, "-o", str(world / "old"), "--no-progress"], names=world / "old")
    else:  # a new statistics file, and over the one that is there
        _refused(["calibrate", model, "--data", calib, "-o", str(world / "new.npz"), "--no-progress"], names=world)
        _refused(["calibrate", model, "--data", calib, "-o", str(world / "net_stats.npz"), "--no-progress"], names=world)
    assert _files(world) == before  # no staging folder, lock or temporary file; the old outputs untouched


@pytest.mark.parametrize("what", ["model", "data", "statistics"])
def test_an_input_the_user_cannot_read_is_one_line(world, what):
    out = world / "anyone" / what
    model, calib, stats = (str(world / n) for n in ("net.onnx", "calib.npy", "net_stats.npz"))
    secret = world / {"model": "secret_net.onnx", "data": "secret_calib.npy", "statistics": "secret_net_stats.npz"}[what]
    args = {"model": ["quantize", str(secret), "--data", calib],
            "data": ["quantize", model, "--data", str(secret)],
            "statistics": ["quantize", model, "--stats", str(secret)]}[what]
    _refused([*args, "-o", str(out), "--no-progress"], names=secret)
    assert not out.exists()


@pytest.mark.parametrize("what", ["model", "data", "statistics"])
def test_an_input_the_user_cannot_read_is_called_so(world, what):
    secret = world / {"model": "secret_net.onnx", "data": "secret_calib.npy", "statistics": "secret_net_stats.npz"}[what]
    model, calib = str(world / "net.onnx"), str(world / "calib.npy")
    args = {"model": ["quantize", str(secret), "--data", calib],
            "data": ["quantize", model, "--data", str(secret)],
            "statistics": ["quantize", model, "--stats", str(secret)]}[what]
    err = _refused([*args, "-o", str(world / "anyone" / f"called_{what}"), "--no-progress"], names=secret)
    assert "permission denied" in err.lower(), err
    assert not any(blame in err for blame in ("re-export", "re-save", "re-run calibrate")), err  # the file is fine
