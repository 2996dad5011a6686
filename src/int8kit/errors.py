"""The exception hierarchy for problems a user can fix.

Every message is one sentence that names the thing, what was expected, what came and what to do.
The CLI prints ``str(error)`` without a traceback and exits with a non-zero code.
"""

from __future__ import annotations


class Int8kitError(Exception):
    """Base class for every error caused by the user's input, not by a bug in int8kit."""

    exit_code = 2


class ModelError(Int8kitError):
    """A model file is missing, unreadable, corrupt or structurally unsupported."""


class DataError(Int8kitError):
    """Calibration or test data does not fit the model (shape, dtype, count, NaN/Inf)."""


class ConfigError(Int8kitError):
    """An option, config key, overrides file entry or layer name is invalid."""


class CalibrationError(Int8kitError):
    """Statistics are unusable: wrong file, other model, non-finite activations."""


class OutputError(Int8kitError):
    """An output path cannot be written, or names one of the run's own input files."""


class PathError(Int8kitError):
    """A path cannot be followed: a symbolic link in it loops back on itself."""


def refuse_unreadable(path: object, what: str, error: type[Int8kitError]) -> None:
    """Raise ``error`` when this user may not read the file ``path`` (``what`` names it: "model
    file"), before a reader reports the refusal as a damaged file."""
    import os

    if os.path.isfile(path) and not os.access(path, os.R_OK):
        raise error(f"{what} '{path}' cannot be read by this user (permission denied); expected a readable file, "
                    "grant read access or copy it somewhere readable.")
