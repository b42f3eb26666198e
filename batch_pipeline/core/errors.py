"""Errors of the data plane. Each message names the source, and the chunk and line where known."""

from __future__ import annotations


class BatchPipelineError(Exception):
    """Base class. ``permanent`` errors are not worth retrying: the input or config is wrong."""

    permanent: bool = True


class ConfigError(BatchPipelineError):
    """The run config is invalid (unknown format, bad CSV options, unknown processor...)."""


class SourceError(BatchPipelineError):
    """The source object is missing, unreadable, empty or not in the expected format."""


class ChunkReadError(BatchPipelineError):
    """A chunk's slice could not be read or parsed as a whole."""


class ProcessorError(BatchPipelineError):
    """A processor failed or broke its contract (records in = records out + rejected)."""


class ConservationError(BatchPipelineError):
    """Records in != records out + records rejected, for a chunk or for the run."""


class DeliveryError(BatchPipelineError):
    """Messages could not be delivered; ``permanent`` is False when a retry may succeed."""

    def __init__(self, message: str, *, permanent: bool = False) -> None:
        super().__init__(message)
        self.permanent = permanent
