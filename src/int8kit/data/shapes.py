"""Parse the manual's multi-input notation: ``--input-shapes '(1,3,224,224);(1,4)'``, ``--input-names 'a;b'``."""

from __future__ import annotations

import re

from int8kit.errors import ConfigError

_DYNAMIC = {"?", "-1", "n", "none", "batch"}


def parse_input_shapes(text: str) -> list[tuple[int | None, ...]]:
    """``'(1,3,224,224);(1,4)'`` -> ``[(1, 3, 224, 224), (1, 4)]``; a dim ``?``, ``-1`` or ``N`` is dynamic (``None``).

    Shapes are separated by ``;``; brackets are optional (``1,3,224,224`` and ``[1,3,224,224]`` work too).
    """
    if not isinstance(text, str) or not text.strip():
        raise ConfigError("--input-shapes is empty; write one shape per input, e.g. '(1,3,224,224);(1,4)'.")
    shapes: list[tuple[int | None, ...]] = []
    for part in text.split(";"):
        inner = part.strip()
        if not inner:
            continue
        inner = re.sub(r"^[\(\[]\s*|\s*[\)\]]$", "", inner)
        dims: list[int | None] = []
        for raw in (d.strip() for d in inner.split(",")):
            if not raw:
                continue
            if raw.lower() in _DYNAMIC:
                dims.append(None)
            elif raw.isdigit() and int(raw) > 0:
                dims.append(int(raw))
            else:
                raise ConfigError(
                    f"--input-shapes has dimension '{raw}' in '{part.strip()}'; expected positive integers "
                    "(or ? for a dynamic one), e.g. '(1,3,224,224);(1,4)'."
                )
        if not dims:
            raise ConfigError(f"--input-shapes has an empty shape '{part.strip()}'; write e.g. (1,3,224,224).")
        shapes.append(tuple(dims))
    if not shapes:
        raise ConfigError("--input-shapes holds no shape; write one per input, e.g. '(1,3,224,224);(1,4)'.")
    return shapes


def parse_input_names(text: str) -> list[str]:
    """``'(input);(mask)'``, ``'input;mask'`` or ``'input,mask'`` -> ``['input', 'mask']``."""
    sep = ";" if ";" in text else ","
    names = [re.sub(r"^\(\s*|\s*\)$", "", n.strip()) for n in text.split(sep)]
    names = [n for n in names if n]
    if not names:
        raise ConfigError("--input-names is empty; write the model's input names separated by ';', e.g. 'input;mask'.")
    if len(set(names)) != len(names):
        raise ConfigError(f"--input-names repeats a name ({', '.join(names)}); give each input once.")
    return names
