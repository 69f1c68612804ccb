"""The one exception type the local runner raises; its message is what the user sees."""


class LocalServingError(Exception):
    """A problem the user can fix (missing repository, busy port, model that will not load, missing tool)."""


class PortInUseError(LocalServingError):
    """A port the runner needs on 127.0.0.1 is already taken."""


class ServingRepositoryError(LocalServingError):
    """The model repository is missing or does not follow the layout in CONTRACTS.md."""


class ModelLoadError(LocalServingError):
    """Triton refused to load a model; the message carries Triton's own error lines."""


class ToolMissingError(LocalServingError):
    """The Triton environment or the Prometheus binaries are not installed."""
