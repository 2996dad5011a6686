"""Fault injection on LMDB writes: ``lmdb refresh`` and ``create --overwrite`` keep everything in the
folder that is not the database, a kill at any step leaves an LMDB (old or new) at the path, and a
full disk or an unwritable folder is one line, not a traceback."""

from __future__ import annotations

import errno
import os
import stat
import sys
from pathlib import Path

import numpy as np
import pytest

lmdb = pytest.importorskip("lmdb", reason="the LMDB writer needs the lmdb package")
pytest.importorskip("PIL", reason="original images need Pillow")

from int8kit.cli import main  # noqa: E402
from int8kit.data import LmdbWriter  # noqa: E402
from int8kit.data import lmdb_store  # noqa: E402
from int8kit.data.lmdb_source import LmdbSource  # noqa: E402
from int8kit.data.lmdb_store import refresh_lmdb  # noqa: E402
from int8kit.errors import OutputError  # noqa: E402
from int8kit.graph.io import UMASK  # noqa: E402
from tests.unit.faults import as_unprivileged, fault_at, readable_tmp, remove_tree  # noqa: E402

_STEPS = ("replace", "rename", "symlink", "link", "unlink", "rmdir", "mkdir")


def _db(path: Path, records: int = 3, overwrite: bool = False) -> None:
    rng = np.random.default_rng(0)
    with LmdbWriter(path, overwrite=overwrite) as w:
        for r in range(records):
            w.put(np.full((2, 4), r, np.float32), labels=[r, r], originals=rng.integers(0, 255, (2, 8, 8, 3), dtype=np.uint8))


def _count(path: Path) -> int:
    src = LmdbSource(path)
    try:
        return len(src)
    finally:
        src.close()


def _user_files(db: Path) -> None:
    (db / "notes.txt").write_text("notes")
    (db / "my_scripts").mkdir()
    (db / "my_scripts" / "make.sh").write_text("echo hi")
    os.symlink("notes.txt", db / "link_to_notes")


def _user_files_kept(db: Path) -> bool:
    return ((db / "notes.txt").read_text() == "notes" and (db / "my_scripts" / "make.sh").read_text() == "echo hi"
            and os.readlink(db / "link_to_notes") == "notes.txt")


def test_refresh_and_overwrite_keep_everything_that_is_not_the_database(tmp_path):
    db = tmp_path / "db"
    _db(db)
    _user_files(db)
    (db / "original_images" / "0000000001_0.jpg").unlink()
    assert refresh_lmdb(db).kept == 5
    assert _user_files_kept(db) and _count(db) == 5
    _db(db, records=1, overwrite=True)  # lmdb create --overwrite
    assert _user_files_kept(db) and _count(db) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["db"]  # no staging, no lock files


def test_an_lmdb_folder_gets_the_users_umask_and_an_overwritten_one_keeps_its_mode(tmp_path):
    db = tmp_path / "db"
    _db(db)
    assert stat.S_IMODE(db.stat().st_mode) == 0o777 & ~UMASK
    os.chmod(db, 0o750)
    _db(db, overwrite=True)
    assert stat.S_IMODE(db.stat().st_mode) == 0o750


@pytest.mark.skipif(not hasattr(os, "fork"), reason="fork is needed to kill a writer at an exact step")
@pytest.mark.parametrize("verb", ["refresh", "overwrite"])
def test_a_kill_at_every_step_leaves_an_lmdb_and_the_users_files(tmp_path, verb):
    for step in range(1, 400):
        db = tmp_path / f"db{step}"
        _db(db)
        _user_files(db)
        (db / "original_images" / "0000000000_1.jpg").unlink()
        pid = os.fork()
        if pid == 0:  # the child dies just before its step-th file-system change
            try:
                fault_at(step, _STEPS)
                refresh_lmdb(db) if verb == "refresh" else _db(db, records=1, overwrite=True)
            finally:
                os._exit(0)
        _, status = os.waitpid(pid, 0)
        killed = os.WIFSIGNALED(status)
        assert (db / "data.mdb").is_file(), f"no LMDB at its path after a kill at step {step}"
        assert _count(db) in ((6, 5) if verb == "refresh" else (6, 2)) and _user_files_kept(db)
        _db(tmp_path / "other", overwrite=True)  # writers of another path leave its staging alone
        _db(db, records=2, overwrite=True)  # the next writer clears what the killed one left
        assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(f".{db.name}.")) == []
        if not killed:
            break
    assert step > 5


def test_full_disk_in_create_and_refresh_is_one_line_and_keeps_the_old_lmdb(tmp_path, monkeypatch):
    db = tmp_path / "db"
    _db(db)
    before = (db / "data.mdb").read_bytes()

    def disk_full(*args, **kwargs):
        raise lmdb.Error("mdb_put: Input/output error")

    monkeypatch.setattr(LmdbWriter, "_put", disk_full)
    with pytest.raises(OutputError, match="cannot write the LMDB .*db.*disk may be full.*left as it was"):
        _db(db, overwrite=True)
    monkeypatch.undo()
    (db / "original_images" / "0000000000_0.jpg").unlink()

    def enospc(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(lmdb_store.shutil, "copy2", enospc)
    with pytest.raises(OutputError, match="the disk is full"):
        refresh_lmdb(db)
    assert (db / "data.mdb").read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["db"]
    monkeypatch.undo()

    def no_space(*args, **kwargs):  # the disk is full before the first record: lmdb cannot even open
        raise lmdb.Error("mdb_env_open: No space left on device")

    monkeypatch.setattr(lmdb_store.lmdb, "open", no_space)
    with pytest.raises(OutputError, match="No space left"):
        _db(tmp_path / "new")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["db"]  # no staging folder, no lock file


def test_an_unwritable_folder_is_one_line(tmp_path, monkeypatch):
    def denied(*args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(lmdb_store.tempfile, "mkdtemp", denied)
    with pytest.raises(OutputError, match="cannot write the LMDB .*permission denied"):
        _db(tmp_path / "db")


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() if p.is_file() else b"" for p in sorted(folder.rglob("*"))}


@pytest.mark.skipif(not hasattr(os, "fork"), reason="the calls run in a forked child as a user without root's rights")
def test_a_folder_the_user_cannot_write_is_one_line_as_a_real_user():
    # Nothing injected: a user without root's rights (nobody, when the tests run as root) and a
    # folder it cannot write, so the file system itself refuses. ``create`` stages inside the
    # folder, ``refresh`` beside the LMDB: both must be one line that leaves everything as it was.
    base = readable_tmp()
    try:
        _db(base / "warm")  # as this user first: the child can use only modules loaded here
        assert main(["lmdb", "refresh", str(base / "warm")]) == 0
        ro = base / "ro"
        _db(ro / "db")
        next((ro / "db" / "original_images").iterdir()).unlink()  # refresh has a sample to drop
        for path in (ro, ro / "db", ro / "db" / "original_images"):
            path.chmod(0o555)
        before = _files(ro)

        def create() -> int:
            try:
                _db(ro / "new")
            except OutputError as exc:  # what the command line prints for it
                print(f"int8kit: error: {exc}", file=sys.stderr)
                return exc.exit_code
            return 0

        for what, call in (("create", create), ("refresh", lambda: main(["lmdb", "refresh", str(ro / "db")]))):
            code, err = as_unprivileged(call)
            assert code == 2 and len(err.splitlines()) == 1, f"{what}: exit code {code}\n{err}"
            assert "permission denied" in err and str(ro) in err, f"{what}: {err}"
            assert _files(ro) == before, what  # no staging folder, no lock file, the LMDB untouched
    finally:
        remove_tree(base)
