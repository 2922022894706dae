"""Converters talk a lot: progress on stdout (where ``--json`` output goes), deprecation notes about
their own internals, and log lines about optional packages. None of it is for the user."""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from collections.abc import Iterator

from edgecnn.runtime.base import third_party_output_wanted


@contextlib.contextmanager
def quiet(*logger_names: str) -> Iterator[None]:
    """Swallow stdout, Future/Deprecation warnings and the named loggers below ERROR, unless the user asked
    to see them (``edgecnn --verbose``)."""
    if third_party_output_wanted():
        yield
        return
    loggers = [logging.getLogger(name) for name in logger_names]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore", FutureWarning)
            warnings.simplefilter("ignore", DeprecationWarning)
            yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)
