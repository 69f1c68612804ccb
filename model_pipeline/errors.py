"""Exception types of the model pipeline: one message each, naming the bad thing and what is allowed.

The CLI turns any ``PipelineError`` into that single message and a non-zero exit code, without a traceback.
"""

from __future__ import annotations


class PipelineError(Exception):
    """Base class of every error the pipeline reports to a user."""


class SpecError(PipelineError, ValueError):
    """A model spec that cannot be built or served (impossible batch profile, unknown backend, ...)."""


class UnknownModelError(PipelineError, KeyError):
    """A model name that is not one of the known specs."""

    def __str__(self) -> str:  # KeyError would otherwise quote the whole message
        return str(self.args[0]) if self.args else ""


class ModelValidationError(PipelineError):
    """A model file that is corrupt, or does not match its Triton config or its reference outputs."""


class RepositoryError(PipelineError):
    """A model repository on disk that is incomplete or whose files do not match its manifest."""


class PublishError(PipelineError):
    """An upload to S3 that could not be done (credentials, bucket, endpoint, or an interrupted transfer)."""


class DataError(PipelineError):
    """Training data that cannot be found, downloaded or parsed."""


class DataUnavailableError(DataError):
    """Training data that is absent or unreachable (not corrupt): the MNIST loader may fall back on it."""


class ModelWeightsError(PipelineError):
    """A weights file that is missing, unreadable, or whose keys or shapes do not match the architecture."""


class EngineBuildError(PipelineError):
    """A TensorRT engine that could not be built (parser errors, invalid profile, builder failure)."""


class EngineCompatibilityError(PipelineError):
    """A TensorRT plan built by a TensorRT version other than the one the Triton image ships."""
