"""Arguments several verbs share: the model (any framework), the data and its preprocessing."""

from __future__ import annotations

import argparse

from int8kit.cli import convert as cli_convert
from int8kit.cli import data as cli_data
from int8kit.cli.options import add_config_options
from int8kit.config import CalibOptions


def names(text: str | None) -> tuple[str, ...]:
    """Comma-separated layer names."""
    return tuple(n.strip() for n in (text or "").split(",") if n.strip())


def add_model(p: argparse.ArgumentParser, help_text: str = "FP32 model: ONNX, or Caffe/Darknet/PyTorch/... files (converted first)",
              dest: str = "model") -> None:
    """The model argument and the flags that take another framework's files."""
    p.add_argument(dest, help=help_text)
    cli_convert.add_source_args(p)


def add_model_data(p: argparse.ArgumentParser, data_required: bool) -> None:
    """Model, data, preprocessing and the calibration options of a verb that calibrates."""
    add_model(p)
    p.add_argument("--data", required=data_required, help=cli_data.DATA_HELP)
    cli_data.add_preprocess_args(p)
    add_config_options(p, CalibOptions)
    p.add_argument("--no-fuse", default="", help="comma-separated layer names the optimizer must not fold")
    add_progress(p)


def add_model_pair(p: argparse.ArgumentParser) -> None:
    """The FP32 and INT8 models and the data a verb that compares them (eval, analyze) runs both on."""
    add_model(p, "the FP32 model: ONNX, or Caffe/Darknet/PyTorch/... files (converted first)", dest="fp32_model")
    p.add_argument("int8_model", help="the INT8 ONNX model (quantize's <stem>_int8.onnx)")
    p.add_argument("--data", required=True, help=cli_data.DATA_HELP)
    cli_data.add_preprocess_args(p)


def add_progress(p: argparse.ArgumentParser) -> None:
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
