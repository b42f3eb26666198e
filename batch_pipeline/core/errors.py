"""Errors of the data plane. Each message names the source, and the chunk and line where known."""

from __future__ import annotations

from dataclasses import dataclass


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


class RetryableChunkError(BatchPipelineError):
    """A chunk attempt failed for a transient reason and should be tried again later."""

    permanent = False

    def __init__(self, message: str, category: str, delay: float) -> None:
        super().__init__(message)
        self.category = category
        self.delay = delay


@dataclass(frozen=True)
class ErrorInfo:
    """What went wrong, in a category an operator can act on, and whether to try again."""

    category: str
    transient: bool
    message: str


# Substrings of error messages (botocore codes, pyarrow's AWS SDK errors, socket errors).
_TRANSIENT_MARKERS = {
    "throttled": ("SlowDown", "SLOW_DOWN", "Throttl", "RequestLimitExceeded", "TooManyRequests"),
    "timeout": ("timed out", "Timeout", "TIMEOUT", "RequestTimeout"),
    "server_error": (
        "ServiceUnavailable",
        "Service Unavailable",
        "InternalError",
        "Internal Server Error",
        "HTTP response code: 5",
        "HTTP status 5",
        "status code: 5",
    ),
    "connection": (
        "NETWORK_CONNECTION",
        "Connection reset",
        "Connection refused",
        "Connection aborted",
        "ConnectionResetError",
        "EndpointConnectionError",
        "Broken pipe",
        "Remote end closed connection",
        "Could not connect",
        "Failed to flush response stream",  # pyarrow's AWS SDK reading a 503 body
        "curlCode",
    ),
}
_PERMANENT_MARKERS = {
    "missing_object": (
        "NoSuchKey",
        "NO_SUCH_KEY",
        "does not exist",
        "Path does not exist",
        "No such file",
        "NoSuchBucket",
        "Not Found",
    ),
    "access_denied": (
        "AccessDenied",
        "ACCESS_DENIED",
        "Forbidden",
        "permission denied",
        "Permission denied",
    ),
}


def classify(exc: BaseException) -> ErrorInfo:
    """Sort a failure into transient (throttling, timeouts, 5xx, connection resets: retry) and
    permanent (bad data, schema or config, missing object, access denied: dead-letter at once).

    The whole chain of causes is looked at: a chunk-read error caused by a connection reset is
    transient. Unknown errors are treated as transient: a few retries are cheaper than a lost
    chunk, and the last attempt still dead-letters them."""
    chain: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and len(chain) < 10:
        chain.append(current)
        # ``raise ... from None`` says the error being handled is not the cause: stop there.
        context = None if current.__suppress_context__ else current.__context__
        current = current.__cause__ or context
    text = " | ".join(f"{type(e).__name__}: {e}" for e in chain)
    message = str(exc)
    if isinstance(exc, MemoryError) or any(isinstance(e, MemoryError) for e in chain):
        return ErrorInfo("out_of_memory", False, message or "out of memory: lower chunk_records")
    if any(isinstance(e, FileNotFoundError) for e in chain):
        return ErrorInfo("missing_object", False, message)
    if any(isinstance(e, PermissionError) for e in chain):
        return ErrorInfo("access_denied", False, message)
    for category, markers in _PERMANENT_MARKERS.items():
        if any(m in text for m in markers):
            return ErrorInfo(category, False, message)
    if any(isinstance(e, TimeoutError) for e in chain):
        return ErrorInfo("timeout", True, message)
    if any(isinstance(e, ConnectionError) for e in chain):
        return ErrorInfo("connection", True, message)
    for category, markers in _TRANSIENT_MARKERS.items():
        if any(m in text for m in markers):
            return ErrorInfo(category, True, message)
    for e in chain:
        if isinstance(e, DeliveryError):
            return ErrorInfo("delivery", not e.permanent, message)
        if isinstance(e, (ChunkReadError, SourceError)):
            return ErrorInfo("bad_data", False, message)
        if isinstance(e, ConfigError):
            return ErrorInfo("config", False, message)
        if isinstance(e, ConservationError):
            return ErrorInfo("conservation", False, message)
        if isinstance(e, ProcessorError):
            return ErrorInfo("processor", False, message)
    return ErrorInfo("unknown", True, message)
