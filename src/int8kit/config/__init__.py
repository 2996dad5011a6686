"""The one place where every option of a run and its default is defined.

Three frozen, typed, versioned configurations, one per stage:

- :class:`QuantConfig`: what ``plan()`` reads (methods, granularity, mixed precision, overrides);
- :class:`CalibOptions`: how the calibration pass reads the data (bins, samples, batch);
- :class:`TuneOptions`: steps that run the quantized model after planning (bias tuning).

Each field carries its help text and command-line flag as metadata: the CLI builds its options
from them (``int8kit.cli.options``) and the API accepts the field names as keywords, so names,
defaults and help cannot drift apart. A configuration is validated on construction, never mutated
afterwards (``replace`` returns a changed copy), and round-trips through JSON; the run
configuration file (``--save-config`` / ``--config``) holds all three.
"""

from __future__ import annotations

from int8kit.config.base import CONFIG_VERSION, Params, name_list, option, unknown_key
from int8kit.config.layers import LayerOverride, Overrides, as_overrides, load_overrides, read_json
from int8kit.config.run import RunConfig
from int8kit.config.stages import (
    MAX_BINS, MIN_BINS, STAGES, TARGETS, CalibOptions, QuantConfig, TuneOptions, field_default, split_options,
)

__all__ = [
    "CONFIG_VERSION", "MAX_BINS", "MIN_BINS", "STAGES", "TARGETS", "CalibOptions", "LayerOverride", "Overrides",
    "Params", "QuantConfig", "RunConfig", "TuneOptions", "as_overrides", "field_default", "load_overrides", "name_list",
    "option", "read_json", "split_options", "unknown_key",
]
