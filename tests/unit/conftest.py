"""Unit tests keep int8kit's cache (FP32 references of the evaluator) in a temporary folder."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True, scope="session")
def _private_cache(tmp_path_factory):
    mp = pytest.MonkeyPatch()
    mp.setenv("INT8KIT_CACHE", str(tmp_path_factory.mktemp("int8kit_cache")))
    yield
    mp.undo()
