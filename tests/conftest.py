"""Fixtures for every test."""

from __future__ import annotations

import logging

import pytest


@pytest.fixture(autouse=True)
def _int8kit_logger_restored():
    """Give each test the ``int8kit`` logger as it found it: the AMCT facade attaches its screen and
    file handlers to it (as AMCT does for the whole process), which would leak INFO lines into the
    stderr of the tests after it."""
    logger = logging.getLogger("int8kit")
    handlers, level = list(logger.handlers), logger.level
    yield
    for h in logger.handlers:
        if h not in handlers:
            logger.removeHandler(h)
            h.close()
    logger.setLevel(level)
