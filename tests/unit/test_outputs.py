"""Outputs never overwrite inputs, land together or not at all, and bad output paths are one clear line."""

from __future__ import annotations

from pathlib import Path

import pytest

import int8kit
from int8kit.cli import main
from int8kit.errors import OutputError
from int8kit.graph.io import outputs_together, write_text_atomic


def _snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("args", [
    ["optimize", "{m}", "-o", "{m}"],
    ["calibrate", "{m}", "--data", "{d}", "-o", "{m}"],
    ["calibrate", "{m}", "--data", "{d}", "-o", "{d}"],
    ["quantize", "{m}", "--data", "{d}", "-o", "{r}/out", "--dump-stats", "{d}"],
    ["quantize", "{m}", "--data", "{d}", "-o", "{r}/out", "--dump-stats", "{m}"],
    ["eval", "{m}", "{m}", "--data", "{d}", "--report", "{m}", "--no-latency"],
])
def test_an_output_naming_an_input_is_refused_before_any_work(files, capsys, args):
    root, model = files
    before = _snapshot(root)
    argv = [a.format(m=model, d=root / "calib.npy", r=root) for a in args] + ["--no-progress"] * (args[0] != "optimize")
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "never overwrites its inputs" in err and "Traceback" not in err
    assert _snapshot(root) == before  # nothing changed, nothing added


@pytest.mark.parametrize("where, needle", [("afile/sub", "which is a file"), ("adir", "is a folder")])
def test_unwritable_output_paths_fail_first_in_one_line(files, capsys, where, needle):
    root, model = files
    (root / "afile").write_text("x")
    (root / "adir").mkdir()
    assert main(["calibrate", str(model), "--data", str(root / "calib.npy"), "-o", str(root / where), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert needle in err and "Traceback" not in err
    # a quantize output folder that is a file fails the same way
    assert main(["quantize", str(model), "--data", str(root / "calib.npy"), "-o", str(root / "afile"), "--no-progress"]) == 2
    assert "which is a file" in capsys.readouterr().err


def test_outputs_together_lands_all_or_none(tmp_path):
    with outputs_together():
        write_text_atomic(tmp_path / "a.txt", "a")
        assert not (tmp_path / "a.txt").exists()  # waits for the block
        write_text_atomic(tmp_path / "b.txt", "b")
    assert (tmp_path / "a.txt").read_text() == "a" and (tmp_path / "b.txt").read_text() == "b"

    (tmp_path / "a.txt").write_text("old")
    with pytest.raises(KeyboardInterrupt), outputs_together():
        write_text_atomic(tmp_path / "a.txt", "new")
        write_text_atomic(tmp_path / "c.txt", "c")
        raise KeyboardInterrupt
    assert (tmp_path / "a.txt").read_text() == "old" and not (tmp_path / "c.txt").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt", "b.txt"]  # no temp files left


def test_quantize_failing_late_leaves_no_outputs(files, monkeypatch):
    root, model = files
    import int8kit.emit.records as records

    def fail(*args, **kwargs):
        raise KeyboardInterrupt  # as if Ctrl-C came while the records were written

    monkeypatch.setattr(records, "write_tensorrt_cache", fail)
    with pytest.raises(KeyboardInterrupt):
        int8kit.quantize(model, root / "calib.npy", output_dir=root / "out", dump_stats=root / "s.npz", progress=False)
    assert not (root / "out").exists() or not any((root / "out").iterdir())
    assert not (root / "s.npz").exists()


def test_stats_exclude_data_and_dump_and_record_their_own_bins(files):
    root, model = files
    stats = int8kit.calibrate(model, root / "calib.npy", bins=1024, output=root / "s.npz", progress=False).path
    with pytest.raises(int8kit.errors.ConfigError, match="--data is not read"):
        int8kit.quantize(model, root / "calib.npy", stats=stats, output_dir=root / "o", progress=False)
    with pytest.raises(int8kit.errors.ConfigError, match="--dump-stats"):
        int8kit.quantize(model, stats=stats, dump_stats=root / "t.npz", output_dir=root / "o", progress=False)
    with pytest.raises(int8kit.errors.CalibrationError, match="finer histograms than the statistics hold"):
        int8kit.quantize(model, stats=stats, bins=4096, output_dir=root / "o", progress=False)
    assert int8kit.quantize(model, stats=stats, output_dir=root / "o", progress=False).run_config.calib.bins == 1024
    assert int8kit.quantize(model, stats=stats, bins=512, output_dir=root / "o", progress=False).run_config.calib.bins == 512


def test_output_error_is_an_int8kit_error():
    assert issubclass(OutputError, int8kit.errors.Int8kitError)


def test_outputs_may_not_overwrite_each_other_or_the_record_a_report_reads(files, capsys):
    root, model = files
    calib = str(root / "calib.npy")
    args = ["quantize", str(model), "--data", calib, "-o", str(root / "q"), "--dump-stats", str(root / "q" / "net_int8.onnx"), "--no-progress"]
    assert main(args) == 2
    assert "one would overwrite the other" in capsys.readouterr().err
    assert main(["quantize", str(model), "--data", calib, "-o", str(root / "q"), "--no-progress"]) == 0
    record = root / "q" / "net_quant.json"
    before = record.read_bytes()
    args = ["eval", str(model), str(root / "q" / "net_int8.onnx"), "--data", calib, "--report", str(record), "--no-latency", "--no-progress"]
    assert main(args) == 2  # the default --quant-json is an input of the report
    assert "never overwrites its inputs" in capsys.readouterr().err and record.read_bytes() == before


def test_quantize_writes_the_model_alone_or_nothing(files, capsys):
    """output='x.onnx' is the INT8 model file (it was a folder named x.onnx); output_dir=None keeps
    the result in memory."""
    root, model = files
    alone = int8kit.quantize(model, root / "calib.npy", output=root / "m" / "net_int8.onnx", progress=False)
    assert (root / "m" / "net_int8.onnx").is_file() and sorted(p.name for p in (root / "m").iterdir()) == ["net_int8.onnx"]
    assert alone.quant_json is None and alone.int8_model == root / "m" / "net_int8.onnx"
    memory = int8kit.quantize(model, root / "calib.npy", output_dir=None, progress=False)
    assert memory.int8_model is None and memory.model.SerializeToString() == alone.model.SerializeToString()
    assert not (root / "int8kit-out").exists() and not Path("int8kit-out").exists()
    with pytest.raises(int8kit.errors.ConfigError, match="ends in .onnx but names the folder"):
        int8kit.quantize(model, root / "calib.npy", output_dir=root / "x.onnx", progress=False)
    with pytest.raises(int8kit.errors.ConfigError, match="give one of them"):
        int8kit.quantize(model, root / "calib.npy", output=root / "y.onnx", output_dir=root / "d", progress=False)
    assert main(["quantize", str(model), "--data", str(root / "calib.npy"), "-o", str(root / "cli.onnx"), "--no-progress"]) == 0
    assert (root / "cli.onnx").is_file() and "the INT8 model alone" in capsys.readouterr().out
