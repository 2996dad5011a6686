"""Moved to :mod:`int8kit.config` (the one place options are defined); kept for old imports."""

from int8kit.config import CONFIG_VERSION, LayerOverride, QuantConfig, as_overrides, load_overrides, name_list  # noqa: F401
