"""Hostile paths and files give one line, never a traceback: symbolic-link loops in a model, data
or output path, JSON nested 100 000 deep."""

from __future__ import annotations

import os
import shutil

import numpy as np
import pytest

from int8kit.cli import main
from int8kit.data.lmdb_format import label_lines
from int8kit.demo_data import demo_model_path, load_demo_data
from int8kit.errors import DataError

pytestmark = pytest.mark.skipif(not hasattr(os, "symlink"), reason="symbolic links are needed")


@pytest.fixture()
def root(tmp_path, monkeypatch):
    shutil.copy(demo_model_path(), tmp_path / "m.onnx")
    np.save(tmp_path / "x.npy", load_demo_data()["calib"][:8])
    os.symlink("loop_b", tmp_path / "loop_a")
    os.symlink("loop_a", tmp_path / "loop_b")
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.mark.parametrize("args, what", [
    ("quantize loop_a --data x.npy -o out", "the model file given 'loop_a'"),
    ("quantize m.onnx --data loop_a -o out", "the data file given 'loop_a'"),
    ("quantize m.onnx --data x.npy -o loop_a", "'loop_a/m_int8.onnx'"),
    ("quantize m.onnx --data x.npy -o loop_a/sub", "'loop_a/sub/m_int8.onnx'"),
    ("calibrate m.onnx --data x.npy -o loop_a", "'loop_a'"),
    ("optimize m.onnx -o loop_a", "'loop_a'"),
    ("eval loop_a m.onnx --data x.npy", "'loop_a'"),
    ("lmdb create --images loop_a --preprocess resize_h=8,resize_w=8 --shape 1,3,8,8 -o db", "the images 'loop_a'"),
    ("lmdb create --images . --preprocess resize_h=8,resize_w=8 --shape 1,3,8,8 -o loop_a", "the LMDB output 'loop_a'"),
])
def test_a_symlink_loop_in_a_path_is_one_line(root, capsys, args, what):
    assert main(args.split()) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert what in err and "loops back on itself" in err


def test_json_nested_100000_deep_is_one_line(root, capsys):
    deep = "[" * 100_000 + "]" * 100_000
    (root / "overrides.json").write_text('{"layers": ' + deep + "}")
    assert main(["quantize", "m.onnx", "--data", "x.npy", "-o", "out", "--overrides", "overrides.json", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and "nested too deeply" in err and "overrides.json" in err
    with pytest.raises(DataError, match="nested too deeply"):
        label_lines(deep, 1)  # the manual's labels=json.dumps(...) form
