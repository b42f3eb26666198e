"""Errors of the data plane. Each message names the source, and the chunk and line where known."""

from __future__ import annotations

import errno
import re
from dataclasses import dataclass


class BatchPipelineError(Exception):
    """Base class. ``permanent`` errors are not worth retrying: the input or config is wrong."""

    permanent: bool = True


class ConfigError(BatchPipelineError):
    """The run config is invalid (unknown format, bad CSV options, unknown processor...)."""


class SourceError(BatchPipelineError):
    """The source object is missing, unreadable, empty or not in the expected format."""


class EmptySourceError(SourceError):
    """The source holds no records at all: 0 bytes, or only whitespace or a byte-order mark (a
    file set counts such a file as zero records rather than failing on it)."""


class ChunkReadError(BatchPipelineError):
    """A chunk's slice could not be read or parsed as a whole."""


class ProcessorError(BatchPipelineError):
    """A processor failed or broke its contract (records in = records out + rejected)."""


class ConservationError(BatchPipelineError):
    """Records in != records out + records rejected, for a chunk or for the run."""


class LedgerError(ConfigError):
    """The ledger cannot be used as it is (its file is not a database, or is damaged): a retry
    meets the same file. Permanent (a ConfigError, so that ``classify`` says so)."""


class BatchBusyError(ConfigError):
    """Another run holds the batch's lease: this run refuses to touch the batch. Permanent."""


class LeaseLostError(ConfigError):
    """This run no longer holds its batch's lease (another run took it after it expired): the
    step stops before writing. Permanent."""


class DeliveryError(BatchPipelineError):
    """Messages could not be delivered; ``permanent`` is False when a retry may succeed."""

    def __init__(self, message: str, *, permanent: bool = False) -> None:
        super().__init__(message)
        self.permanent = permanent


class StateStoreError(BatchPipelineError):
    """A state store (``core/stores/state_stores``) could not load or save keys' states; the
    message names the store (never its password) and, where one is to blame, the key.
    ``permanent`` is False when a retry may succeed (unreachable, throttled)."""

    def __init__(self, message: str, *, permanent: bool = True) -> None:
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


# AWS error codes (botocore's ClientError) by category.
_AWS_CODES: dict[str, tuple[str, bool]] = {
    **{c: ("throttled", True) for c in (
        "SlowDown", "Throttling", "ThrottlingException", "RequestLimitExceeded",
        "TooManyRequestsException", "RequestThrottled", "RequestThrottledException",
        "ProvisionedThroughputExceededException", "KmsThrottled")},
    **{c: ("timeout", True) for c in ("RequestTimeout", "RequestTimeoutException")},
    **{c: ("server_error", True) for c in (
        "InternalError", "InternalFailure", "ServiceUnavailable", "ServiceUnavailableException")},
    **{c: ("missing_object", False) for c in (
        "NoSuchKey", "NoSuchBucket", "404", "NotFound", "QueueDoesNotExist",
        "AWS.SimpleQueueService.NonExistentQueue")},
    **{c: ("access_denied", False) for c in (
        "AccessDenied", "AccessDeniedException", "403", "Forbidden", "InvalidAccessKeyId",
        "SignatureDoesNotMatch", "ExpiredToken", "InvalidClientTokenId")},
}  # fmt: skip
# pyarrow's S3 errors read "AWS Error <NAME> during <Operation> operation: ...".
_ARROW_AWS_ERROR = re.compile(r"AWS Error ([A-Z_]+)")
_ARROW_CODES: dict[str, tuple[str, bool]] = {
    "NETWORK_CONNECTION": ("connection", True),
    "SLOW_DOWN": ("throttled", True),
    "THROTTLING": ("throttled", True),
    "REQUEST_TIMEOUT": ("timeout", True),
    "SERVICE_UNAVAILABLE": ("server_error", True),
    "INTERNAL_FAILURE": ("server_error", True),
    "NO_SUCH_KEY": ("missing_object", False),
    "NO_SUCH_BUCKET": ("missing_object", False),
    "RESOURCE_NOT_FOUND": ("missing_object", False),
    "ACCESS_DENIED": ("access_denied", False),
    "INVALID_ACCESS_KEY_ID": ("access_denied", False),
    "SIGNATURE_DOES_NOT_MATCH": ("access_denied", False),
}
# OSErrors by errno: the machine's permanent trouble (a full disk, no permission, a read-only
# file system, a path the OS refuses), which no retry mends, and connection trouble, which one may.
_ERRNO: dict[int, tuple[str, bool]] = {
    errno.ENOSPC: ("disk_full", False),
    errno.EDQUOT: ("disk_full", False),
    errno.EACCES: ("access_denied", False),
    errno.EPERM: ("access_denied", False),
    errno.EROFS: ("read_only", False),
    errno.ENAMETOOLONG: ("bad_path", False),
    errno.ENOTDIR: ("bad_path", False),
    errno.EISDIR: ("bad_path", False),
    errno.EEXIST: ("bad_path", False),  # a file where a folder is to be made (touch out/b/valid)
    errno.ENOENT: ("missing_object", False),
    errno.ECONNRESET: ("connection", True),
    errno.ECONNREFUSED: ("connection", True),
    errno.ECONNABORTED: ("connection", True),
    errno.EPIPE: ("connection", True),
    errno.EHOSTUNREACH: ("connection", True),
    errno.ENETUNREACH: ("connection", True),
    errno.ETIMEDOUT: ("timeout", True),
}
# pyarrow's wording of an OS error ("... Detail: [errno 28] No space left on device"), for when
# the errno attribute did not survive.
_ERRNO_TEXT = re.compile(r"\[errno (\d+)\]", re.IGNORECASE)
# SQLite (through SQLAlchemy or not) on a ledger file that is not, or no longer, a database;
# and on a full one.
_SQLITE_TEXT = {
    "file is not a database": "ledger_corrupt",
    "database disk image is malformed": "ledger_corrupt",
    "database or disk is full": "disk_full",
}
_BOTOCORE_CONNECTION = {"EndpointConnectionError", "ConnectionClosedError", "ProxyConnectionError"}
_BOTOCORE_TIMEOUT = {"ConnectTimeoutError", "ReadTimeoutError"}
_BOTOCORE_CONFIG = {"NoCredentialsError", "NoRegionError", "PartialCredentialsError"}
# Last resort, on the messages of library errors only (ours embed file names, which could say
# anything): connection trouble that surfaced without a telling type.
_TRANSIENT_TEXT = {
    "connection": ("Connection reset", "Connection refused", "Connection aborted", "Broken pipe",
                   "Remote end closed connection", "Could not connect", "curlCode",
                   "Failed to flush response stream"),  # pyarrow's SDK reading a 503 body
    "timeout": ("timed out",),
    "server_error": ("HTTP response code: 5", "HTTP status 5", "Service Unavailable"),
}  # fmt: skip
_PERMANENT_TEXT = {
    "missing_object": ("Path does not exist", "No such file or directory", "NoSuchKey"),
    "access_denied": ("Access Denied", "AccessDenied"),
}


def _by_type(e: BaseException) -> tuple[str, bool] | None:
    """The category of one exception from its type, AWS error code or errno; None: no idea."""
    names = {cls.__name__ for cls in type(e).__mro__}
    if isinstance(e, MemoryError):
        return "out_of_memory", False
    if isinstance(e, RetryableChunkError):
        return e.category, True
    if isinstance(e, DeliveryError):  # says itself whether it is worth another try
        return "delivery", not e.permanent
    if isinstance(e, StateStoreError) and e.permanent:  # a transient one: its cause decides
        return "state_store", False
    if "ClientError" in names and hasattr(e, "response"):
        response = getattr(e, "response", None) or {}
        code = str(response.get("Error", {}).get("Code", ""))
        status = int(response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
        if code in _AWS_CODES:
            return _AWS_CODES[code]
        if status >= 500:
            return "server_error", True
        return "client_error", False  # any other 4xx: the request itself is wrong
    if names & _BOTOCORE_CONNECTION:
        return "connection", True
    if names & _BOTOCORE_TIMEOUT:
        return "timeout", True
    if names & _BOTOCORE_CONFIG:
        return "config", False
    if isinstance(e, FileNotFoundError):
        return "missing_object", False
    if isinstance(e, PermissionError):
        return "access_denied", False
    if isinstance(e, TimeoutError):
        return "timeout", True
    if isinstance(e, ConnectionError):
        return "connection", True
    if isinstance(e, OSError):
        match = _ARROW_AWS_ERROR.search(str(e))
        if match and match.group(1) in _ARROW_CODES:
            return _ARROW_CODES[match.group(1)]
        return _by_errno(e)
    if "DatabaseError" in names:  # sqlite3's, or SQLAlchemy's wrapping it
        for text, category in _SQLITE_TEXT.items():
            if text in str(e):
                return category, False
    return None


def _by_errno(e: OSError) -> tuple[str, bool] | None:
    """An OSError's category from its errno (the attribute, else pyarrow's ``[errno N]``)."""
    code = e.errno
    if code is None:
        match = _ERRNO_TEXT.search(str(e))
        code = int(match.group(1)) if match else None
    if code in _ERRNO:
        return _ERRNO[code]
    if code == errno.EINVAL and (e.filename is not None or _names_a_path(str(e))):
        return "bad_path", False  # a name the file system refuses (a ':' on some, say)
    return None


def _names_a_path(message: str) -> bool:
    return any(m in message for m in ("local file '", "directory '", "path '"))


def _chain(exc: BaseException) -> list[BaseException]:
    """``exc`` and what led to it: its cause (``raise ... from``), else the error it was raised
    while handling, unless ``from None`` suppressed that. Earlier links decide first, so an
    error raised while handling another is classified by its own type when it has a telling
    one (a throttled dead-letter write stays throttled whatever failed before it)."""
    chain: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and len(chain) < 10:
        chain.append(current)
        context = None if current.__suppress_context__ else current.__context__
        current = current.__cause__ or context
    return chain


def classify(exc: BaseException) -> ErrorInfo:
    """Sort a failure into transient (throttling, time-outs, 5xx, connection resets: retry) and
    permanent (bad data, schema or config, a missing object, access denied: dead-letter at once).
    OS errors go by errno: a full disk or quota (``disk_full``), no permission
    (``access_denied``), a read-only file system (``read_only``), a name too long, a file
    where a folder should be or is to be made (``bad_path``) are permanent, and so is a ledger
    that is not a database (``ledger_corrupt``); connection errors stay transient.

    The error and its causes are looked at in order, by type, AWS error code and errno first:
    a chunk-read error caused by a connection reset is transient. Then the messages of library
    errors, for connection trouble without a telling type. Then this project's own error types.
    Unknown errors are transient: a few retries are cheaper than a lost chunk, and the last
    attempt still dead-letters them."""
    message = str(exc)
    chain = _chain(exc)
    for e in chain:
        found = _by_type(e)
        if found:
            if found[0] == "out_of_memory" and not message:
                message = "out of memory: lower chunk_records"
            return ErrorInfo(found[0], found[1], message)
    library = " | ".join(str(e) for e in chain if not isinstance(e, BatchPipelineError))
    for category, markers in _PERMANENT_TEXT.items():
        if any(m in library for m in markers):
            return ErrorInfo(category, False, message)
    for category, markers in _TRANSIENT_TEXT.items():
        if any(m in library for m in markers):
            return ErrorInfo(category, True, message)
    for e in chain:
        if isinstance(e, (ChunkReadError, SourceError)):
            missing = "does not exist" in str(e)
            return ErrorInfo("missing_object" if missing else "bad_data", False, message)
        if isinstance(e, ConfigError):
            return ErrorInfo("config", False, message)
        if isinstance(e, ConservationError):
            return ErrorInfo("conservation", False, message)
        if isinstance(e, ProcessorError):
            return ErrorInfo("processor", False, message)
    return ErrorInfo("unknown", True, message)
