"""Runners: one small class per runtime that loads an artifact and runs batches of its input."""

from edgecnn.runtime.base import RUNTIMES, Runner, open_runner, runtime_for
from edgecnn.runtime.metadata import ArtifactMetadata

__all__ = ["RUNTIMES", "ArtifactMetadata", "Runner", "open_runner", "runtime_for"]
