"""Runners: one small class per runtime that loads an artifact and runs batches of its input."""

from edgecnn.runtime.base import Runner, open_runner

__all__ = ["Runner", "open_runner"]
