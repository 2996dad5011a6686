"""The user's own code named as ``module:name`` (a metric class, a post-processing function),
imported from the Python path or, like ``python -m``, from the current folder."""

from __future__ import annotations

import difflib
import importlib
import os
import sys
from typing import Any

from int8kit.errors import ConfigError


def load_object(ref: str, *, what: str, flag: str) -> Any:
    """The object ``name`` of module ``module`` for ``ref`` = ``module:name`` (``what`` and
    ``flag`` name it in errors: "metric class", "--metric")."""
    module_name, sep, attr = ref.partition(":")
    if not sep or not module_name or not attr:
        raise ConfigError(f"{flag} '{ref}' is not module:name; expected e.g. mypkg.ocr:ExactMatch; "
                          f"name the {what} as module:name.")
    cwd = os.getcwd()
    if cwd not in sys.path and "" not in sys.path:
        sys.path.append(cwd)  # after installed packages: a local file never hides one
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # ImportError, or the module itself failing on import
        raise ConfigError(f"{flag} '{ref}': module '{module_name}' cannot be imported ({type(exc).__name__}: {exc}); "
                          "expected a module on the Python path or in the current folder; check the name, "
                          "or run from the folder that holds it.") from None
    found = getattr(module, attr, None)
    if found is None:
        names = [n for n in dir(module) if not n.startswith("_")]
        close = difflib.get_close_matches(attr, names, n=1)
        hint = f"did you mean '{module_name}:{close[0]}'?" if close else f"it defines {names[:8]}"
        raise ConfigError(f"{flag} '{ref}': module '{module_name}' has no '{attr}'; expected a {what}; {hint}")
    return found
