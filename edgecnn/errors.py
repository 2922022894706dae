"""The package's exception classes.

Every error a user can cause (a bad name, a missing file, an offline download) is an
:class:`EdgeCNNError`; the CLI prints it as one line and exits with code 1.
"""


class EdgeCNNError(Exception):
    """Base class for errors caused by the user's input or environment, not by a bug."""


class UnknownModelError(EdgeCNNError):
    """A model name that is not in the registry."""


class WeightsError(EdgeCNNError):
    """Weights that cannot be found, downloaded, verified or loaded."""
