"""Checks that run before any work, so a typo fails in a second, not after the calibration pass."""

from __future__ import annotations

from typing import Any

import onnx

from int8kit.errors import ConfigError
from int8kit.config import QuantConfig


def check_layer_names(source: onnx.ModelProto, optimized: onnx.ModelProto, config: QuantConfig) -> None:
    """Every layer the options name exists in the optimized graph; a layer optimisation folded
    away (a BatchNormalization into its conv) is named with where it went."""
    from int8kit.describe import folded_layers
    from int8kit.plan.graph_facts import GraphFacts, float_nodes

    try:
        float_nodes(GraphFacts.of(optimized), config)
    except ConfigError:
        folded = {name: into for name, _, into in folded_layers(source, optimized)}
        named = (*config.fp_inputs, *config.fp_outputs, *config.fp_blocks, *config.fp_layers, *config.overrides)
        for name in (n for n in named if n in folded):
            raise ConfigError(f"layer '{name}' is folded away by graph optimisation ({folded[name]}); "
                              "name the layer it became part of ('int8kit inspect' lists both).") from None
        raise


def input_paths(**paths: Any) -> dict[str, Any]:
    """The run's input files by a label for messages ("the model file '...'")."""
    return {f"the {what.replace('_', ' ')} file given": p for what, p in paths.items()}
