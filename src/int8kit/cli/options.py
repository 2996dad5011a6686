"""Command-line options built from the configuration fields (``int8kit.config``).

The flag, help text and default of every quantization, calibration and tuning option are read
from the field's metadata, so the parser cannot drift from the configuration. Options keep no
argparse default: only the ones the user typed reach the namespace, so that ``--config FILE``
supplies the rest (the default is shown in the help instead).
"""

from __future__ import annotations

import argparse
import json
from dataclasses import Field, fields
from typing import Any

from int8kit.config import QuantConfig, field_default
from int8kit.errors import ConfigError


def _default_text(value: Any) -> str:
    if isinstance(value, tuple):
        return ",".join(value) or "none"
    return "all" if value is None else str(value)


def _number_list(text: str) -> Any:
    """'0.5,2' or '(0.5, 2)' as [0.5, 2.0]; any other text as it is."""
    parts = text.strip().strip("()[]").split(",")
    try:
        return [float(p) for p in parts] if len(parts) > 1 else text
    except ValueError:
        return text


def parse_th_params(pairs: list[str]) -> dict[str, Any]:
    """``--th-param KEY=VALUE`` pairs as a dict (values as JSON where they parse)."""
    params: dict[str, Any] = {}
    for pair in pairs:
        if "=" not in pair:
            raise ConfigError(f"--th-param expects KEY=VALUE (e.g. search_step=0.01), got '{pair}'.")
        key, value = pair.split("=", 1)
        try:
            params[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            params[key.strip()] = _number_list(value)
        except RecursionError:
            raise ConfigError(f"--th-param {key.strip()} is nested too deeply to be a parameter value; "
                              "pass a number or a short list.") from None
    return params


def _flag(f: Field) -> str:
    return f.metadata.get("flag") or "--" + f.name.replace("_", "-")


def add_config_options(parser: argparse.ArgumentParser, cls: type, skip: tuple[str, ...] = ()) -> None:
    """One option (or on/off pair) per field of ``cls`` that has a command-line spelling."""
    group = parser.add_argument_group(cls.WHAT)
    for f in fields(cls):
        meta = f.metadata
        if not meta.get("cli", True) or f.name in skip:
            continue
        default = field_default(cls, f.name)
        help_text = meta["help"]
        if f.type == "bool":
            on, off = meta.get("flag"), meta.get("off_flag")
            if off is None:
                on = on or _flag(f)
            pair = group.add_mutually_exclusive_group() if on and off else group
            if on:
                pair.add_argument(on, *(() if off else meta["aliases"]), dest=f.name, action="store_const", const=True,
                                  default=argparse.SUPPRESS, help=meta.get("on_help") or help_text)
            if off:
                pair.add_argument(off, *meta["aliases"], dest=f.name, action="store_const", const=False,
                                  default=argparse.SUPPRESS, help=help_text)
            continue
        kwargs: dict[str, Any] = {"dest": f.name, "default": argparse.SUPPRESS, "metavar": meta.get("metavar")}
        if f.name == "th_params":
            kwargs["action"] = "append"
        elif f.type.startswith("int"):
            kwargs["type"] = int
        elif f.type == "float":
            kwargs["type"] = float
        silent = f.name in ("th_params", "overrides") or "default" in help_text
        shown = "" if silent else f" (default: {_default_text(default)})"
        action = group.add_argument(_flag(f), *meta["aliases"], help=help_text + shown, **kwargs)
        action.shown_default = None if f.name in ("th_params", "overrides") else default  # for docs/cli.md


def given_options(args: argparse.Namespace, cls: type) -> dict[str, Any]:
    """The fields of ``cls`` the user typed on the command line, as configuration values."""
    out = {}
    for f in fields(cls):
        if f.name in vars(args):
            value = getattr(args, f.name)
            out[f.name] = parse_th_params(value) if f.name == "th_params" else value
    return out


def add_percentile(parser: argparse.ArgumentParser) -> None:
    """``--percentile P``: the manuals' spelling of ``--th-param percentile=P``."""
    parser.add_argument("--percentile", type=float, help="percentile for --th-method percentile (default 99.99)")


def apply_percentile(options: dict[str, Any], percentile: float | None, base_method: str | None = None) -> dict[str, Any]:
    """Fold ``--percentile`` into ``th_params``, refusing it beside another method (``base_method``:
    the method of the ``--config`` file, when the command line names none)."""
    if percentile is None:
        return options
    from int8kit.thresholds import resolve

    method = options.get("th_method", base_method or field_default(QuantConfig, "th_method"))
    if resolve(method)[0] != "percentile":
        raise ConfigError(f"--percentile sets the percentile of --th-method percentile, but the method is '{method}'; "
                          "drop --percentile or choose --th-method percentile.")
    params = dict(options.get("th_params", {}))
    if "percentile" in params and params["percentile"] != percentile:
        raise ConfigError(f"--percentile {percentile} and --th-param percentile={params['percentile']} disagree; give one of them.")
    params["percentile"] = percentile
    return {**options, "th_params": params}
