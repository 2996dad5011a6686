"""Fault injection on quantize's output set: a kill (SIGKILL) or Ctrl-C at every file-system step,
a full disk, concurrent runs. Every interruption must leave the previous complete set or the new
complete set, never a mix, and the next run must clear what a killed one left."""

from __future__ import annotations

import errno
import os
import shutil
import signal
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

import int8kit
from int8kit.demo_data import demo_model_path, load_demo_data
from int8kit.errors import OutputError
from int8kit.graph import output_set
from int8kit.graph.io import outputs_together, write_bytes_atomic
from tests.unit.faults import fault_at

NAMES = ("net_int8.onnx", "net_fp32_optimized.onnx", "net_quant.json", "net_calibration_table.txt", "net_trt_calib.cache")
OLD = {n: f"old {n}".encode() for n in NAMES}
NEW = {n: f"new {n} ".encode() * 3 for n in NAMES}
# every call that changes the file system; a kill is injected before the k-th of them
_STEPS = ("replace", "rename", "symlink", "link", "unlink", "rmdir", "mkdir")

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="fork is needed to kill a writer at an exact step")


def _write_set(folder: Path, contents: dict[str, bytes]) -> None:
    with outputs_together([folder / n for n in contents]):
        for name, data in contents.items():
            write_bytes_atomic(folder / name, data)


def _killed_at(step: int, folder: Path, contents: dict[str, bytes], how: str = "kill") -> bool:
    """Write ``contents`` as a set in a child process that dies (SIGKILL) or gets Ctrl-C just
    before its ``step``-th file-system change; True when the fault fired before the end."""
    pid = os.fork()
    if pid == 0:  # child
        code = 0
        try:
            fault_at(step, _STEPS, how)
            try:
                _write_set(folder, contents)
            except KeyboardInterrupt:
                code = 3
        except BaseException:
            code = 1
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    if os.WIFEXITED(status):
        assert os.WEXITSTATUS(status) in (0, 3)
        return os.WEXITSTATUS(status) == 3
    return os.WTERMSIG(status) == signal.SIGKILL


def _visible(folder: Path) -> dict[str, bytes]:
    return {n: (folder / n).read_bytes() for n in NAMES if (folder / n).exists()}


def _assert_whole(folder: Path, allowed: list[dict[str, bytes]]) -> None:
    seen = _visible(folder)
    assert seen in allowed, f"a mixed or partial set: {sorted(seen)}"


@pytest.mark.parametrize("how", ["kill", "ctrl-c"])
@pytest.mark.parametrize("before", ["none", "set", "plain files"])
def test_an_interruption_at_every_step_leaves_the_old_or_the_new_complete_set(tmp_path, how, before):
    fired_any = False
    for step in range(1, 200):
        folder = tmp_path / f"s{step}"
        folder.mkdir()
        (folder / "mine.txt").write_text("the user's file")
        if before == "set":
            _write_set(folder, OLD)
        elif before == "plain files":  # what int8kit wrote before output sets
            for name, data in OLD.items():
                (folder / name).write_bytes(data)
        fired = _killed_at(step, folder, NEW, how)
        old = {} if before == "none" else OLD
        _assert_whole(folder, [old, NEW] if fired else [NEW])
        assert (folder / "mine.txt").read_text() == "the user's file"
        # the next run clears what the interrupted one left and lands whole
        _write_set(folder, {n: b"third" for n in NAMES})
        assert _visible(folder) == {n: b"third" for n in NAMES}
        store = folder / output_set.store_name(folder / n for n in NAMES)
        assert sorted(p.name for p in store.iterdir() if not p.name.startswith("run-")) == ["current", "lock"]
        assert len([p for p in store.iterdir() if p.name.startswith("run-")]) == 1
        assert not [p for p in folder.iterdir() if p.name.endswith(".tmp")]
        fired_any |= fired
        if not fired:
            break
    else:
        pytest.fail("the write never finished")
    assert fired_any and step > 5  # the faults really hit the swap's steps


def test_full_disk_while_writing_or_swapping_keeps_the_old_set_and_says_so(tmp_path, monkeypatch):
    _write_set(tmp_path, OLD)

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(OutputError, match="disk is full"):
        with outputs_together([tmp_path / n for n in NAMES]):
            write_bytes_atomic(tmp_path / NAMES[0], NEW[NAMES[0]])
            monkeypatch.setattr(Path, "write_bytes", full)
            write_bytes_atomic(tmp_path / NAMES[1], NEW[NAMES[1]])
    monkeypatch.undo()
    assert _visible(tmp_path) == OLD
    monkeypatch.setattr(output_set.os, "symlink", full)  # the disk fills up during the swap itself
    with pytest.raises(OutputError, match="disk is full.*previous outputs were kept"):
        _write_set(tmp_path, NEW)
    monkeypatch.undo()
    assert _visible(tmp_path) == OLD


def test_a_second_run_into_the_same_set_is_refused_in_one_line(tmp_path):
    errors: list[BaseException] = []

    def second() -> None:  # another thread: its own context, so not joined to the first block
        try:
            _write_set(tmp_path, NEW)
        except BaseException as exc:
            errors.append(exc)

    with outputs_together([tmp_path / n for n in NAMES]):
        write_bytes_atomic(tmp_path / NAMES[0], b"first")
        thread = threading.Thread(target=second)
        thread.start()
        thread.join()
        assert len(errors) == 1 and isinstance(errors[0], OutputError)
        assert f"being written by another int8kit run (process {os.getpid()})" in str(errors[0])
        for name in NAMES[1:]:
            write_bytes_atomic(tmp_path / name, b"first")
    assert _visible(tmp_path) == {n: b"first" for n in NAMES}
    _write_set(tmp_path, NEW)  # the lock went with the first run
    assert _visible(tmp_path) == NEW


@pytest.fixture()
def files(tmp_path):
    model = tmp_path / "net.onnx"
    shutil.copy(demo_model_path(), model)
    np.save(tmp_path / "calib.npy", load_demo_data()["calib"][:16])
    return tmp_path, model


def test_quantize_killed_between_renames_keeps_the_previous_run(files):
    root, model = files
    out = root / "out"
    int8kit.quantize(model, root / "calib.npy", output_dir=out, th_method="max", progress=False)
    old = _visible(out)
    # the same run again with another method, killed just before the rename that lands the record
    # (a set renamed file by file then holds a new model beside old records) or the set's commit
    code = (
        "import os, signal, runpy, sys\n"
        "real = os.replace\n"
        "def replace(src, dst, **k):\n"
        "    if str(dst).endswith(('net_quant.json', 'current')): os.kill(os.getpid(), signal.SIGKILL)\n"
        "    return real(src, dst, **k)\n"
        "os.replace = replace\n"
        f"sys.argv = ['int8kit', 'quantize', {str(model)!r}, '--data', {str(root / 'calib.npy')!r}, '-o', {str(out)!r}, "
        "'--th-method', 'mse', '--no-progress']\n"
        "runpy.run_module('int8kit', run_name='__main__')\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert _visible(out) == old
    new = int8kit.quantize(model, root / "calib.npy", output_dir=out, th_method="mse", progress=False)
    assert _visible(out) != old and len(_visible(out)) == 5
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]
    assert new.int8_model == out / "net_int8.onnx"


def test_quantize_into_a_folder_another_run_holds_is_one_line(files, capsys):
    root, model = files
    from int8kit.graph.fsops import try_lock

    store = root / "out" / ".net.int8kit"
    store.mkdir(parents=True)
    fd = try_lock(store / "lock")
    try:
        code = (f"import sys, runpy; sys.argv = ['int8kit', 'quantize', {str(model)!r}, '--data', "
                f"{str(root / 'calib.npy')!r}, '-o', {str(root / 'out')!r}, '--no-progress']\n"
                "runpy.run_module('int8kit', run_name='__main__')\n")
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    finally:
        os.close(fd)
    assert proc.returncode == 2 and "being written by another int8kit run" in proc.stderr
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert not (root / "out" / "net_int8.onnx").exists()


def test_temp_files_of_killed_writers_are_cleared_by_the_next_write(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True).stdout.strip()
    killed = tmp_path / f".s.npz.{dead}-x1y2.tmp"  # a calibrate -o killed before its rename
    older = tmp_path / ".s.npz.k3j2_x9.tmp"  # written by an int8kit without process ids
    live = tmp_path / f".s.npz.{os.getpid()}-live.tmp"  # another write of this process, in flight
    for path in (killed, older, live):
        path.write_bytes(b"x" * 1000)
    write_bytes_atomic(tmp_path / "s.npz", b"stats")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["s.npz", live.name])
