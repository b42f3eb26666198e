"""classify(): real exception objects (botocore, pyarrow's AWS SDK, sockets, our own wrappers,
chained as the readers and the chunk runner chain them) sorted into transient and permanent."""

from __future__ import annotations

from typing import Any

import pyarrow as pa
import pytest
from botocore.exceptions import (
    ClientError,
    ConnectTimeoutError,
    EndpointConnectionError,
    ReadTimeoutError,
)

from batch_pipeline.core.common.errors import (
    ChunkReadError,
    ConfigError,
    ConservationError,
    DeliveryError,
    ErrorInfo,
    ProcessorError,
    SourceError,
    classify,
)
from batch_pipeline.core.common.models import Chunk, CsvOptions, ObjectInfo, SourceSpec
from batch_pipeline.core.delivery.breaker import CircuitOpenError
from batch_pipeline.core.inputs.readers import read_chunk
from batch_pipeline.core.stores.storage import S3Settings, Storage
from batch_pipeline_tests.conftest import DEAD_ENDPOINT
from batch_pipeline_tests.core.helpers import full_device

CHUNK = "chunk_00003 of 8 (bytes 1024-2048 of s3://bucket/incoming/leads.csv)"


def client_error(code: str, message: str, status: int, operation: str = "GetObject") -> Any:
    return ClientError(
        {
            "Error": {"Code": code, "Message": message},
            "ResponseMetadata": {"HTTPStatusCode": status},
        },
        operation,
    )


def chained(outer: BaseException, cause: BaseException) -> BaseException:
    """``outer`` raised ``from cause``, as the readers and the chunk runner raise."""
    try:
        raise outer from cause
    except BaseException as exc:
        return exc


def raised_while_handling(handled: BaseException, new: BaseException, suppress: bool) -> Any:
    """``new`` raised in the ``except`` block of ``handled``, optionally ``from None``."""
    try:
        try:
            raise handled
        except BaseException:
            if suppress:
                raise new from None
            raise new  # noqa: B904  (an implicit context is what is being tested)
    except BaseException as exc:
        return exc


def processor_failure(cause: BaseException) -> BaseException:
    return chained(ProcessorError(f"processor 'x' failed on {CHUNK}: {cause}"), cause)


def read_failure(cause: BaseException) -> BaseException:
    return chained(ChunkReadError(f"{CHUNK}: {cause}"), cause)


NETWORK = OSError(
    "When reading information for key 'incoming/leads.csv' in bucket 'bucket': AWS Error "
    "NETWORK_CONNECTION during HeadObject operation: curlCode: 7, Could not connect to server"
)

CASES: list[tuple[str, BaseException, str, bool]] = [
    # botocore errors, as S3 returns them
    (
        "SlowDown",
        client_error("SlowDown", "Please reduce your request rate.", 503),
        "throttled",
        True,
    ),
    (
        "ThrottlingException",
        client_error("ThrottlingException", "Rate exceeded", 400, "SendMessageBatch"),
        "throttled",
        True,
    ),
    (
        "InternalError",
        client_error("InternalError", "We encountered an internal error.", 500),
        "server_error",
        True,
    ),
    (
        "ServiceUnavailable",
        client_error("ServiceUnavailable", "Service is unable to handle the request.", 503),
        "server_error",
        True,
    ),
    (
        "NoSuchKey",
        client_error("NoSuchKey", "The specified key does not exist.", 404),
        "missing_object",
        False,
    ),
    (
        "HeadObject 404",
        client_error("404", "Not Found", 404, "HeadObject"),
        "missing_object",
        False,
    ),
    ("AccessDenied", client_error("AccessDenied", "Access Denied", 403), "access_denied", False),
    ("HeadObject 403", client_error("403", "Forbidden", 403, "HeadObject"), "access_denied", False),
    (
        "read time-out",
        ReadTimeoutError(endpoint_url="https://bucket.s3.amazonaws.com/key"),
        "timeout",
        True,
    ),
    (
        "connect time-out",
        ConnectTimeoutError(endpoint_url="https://bucket.s3.amazonaws.com/key"),
        "timeout",
        True,
    ),
    (
        "endpoint unreachable",
        EndpointConnectionError(endpoint_url="https://sqs.us-east-1.amazonaws.com/"),
        "connection",
        True,
    ),
    # pyarrow's AWS SDK errors (OSError with the SDK's error name)
    ("pyarrow NETWORK_CONNECTION", NETWORK, "connection", True),
    (
        "pyarrow SLOW_DOWN",
        OSError("AWS Error SLOW_DOWN during GetObject operation: Please reduce your request rate."),
        "throttled",
        True,
    ),
    (
        "pyarrow HTTP 503",
        OSError("AWS Error UNKNOWN (HTTP status 503) during GetObject operation: Unable to parse"),
        "server_error",
        True,
    ),
    (
        "pyarrow ACCESS_DENIED",
        OSError("AWS Error ACCESS_DENIED during HeadObject operation: No response body."),
        "access_denied",
        False,
    ),
    (
        "pyarrow missing path",
        OSError("Path does not exist 'bucket/key.csv'"),
        "missing_object",
        False,
    ),
    # sockets and the OS
    ("connection reset", ConnectionResetError(104, "Connection reset by peer"), "connection", True),
    ("connection refused", ConnectionRefusedError(111, "Connection refused"), "connection", True),
    ("broken pipe", BrokenPipeError(32, "Broken pipe"), "connection", True),
    ("TimeoutError", TimeoutError("The read operation timed out"), "timeout", True),
    (
        "local file missing",
        FileNotFoundError(2, "No such file or directory"),
        "missing_object",
        False,
    ),
    ("local permission", PermissionError(13, "Permission denied"), "access_denied", False),
    # through our wrappers (__cause__ chains)
    ("read <- network", read_failure(NETWORK), "connection", True),
    ("read <- reset", read_failure(ConnectionResetError(104, "reset")), "connection", True),
    ("read <- time-out", read_failure(TimeoutError("timed out")), "timeout", True),
    (
        "read <- SlowDown",
        read_failure(client_error("SlowDown", "Reduce your request rate.", 503)),
        "throttled",
        True,
    ),
    (
        "read <- bad CSV",
        read_failure(pa.ArrowInvalid("CSV parse error: Expected 3 columns, got 4")),
        "bad_data",
        False,
    ),
    ("read alone", ChunkReadError(f"{CHUNK}: line 77: unterminated quote"), "bad_data", False),
    (
        "read <- NoSuchKey",
        read_failure(client_error("NoSuchKey", "gone", 404)),
        "missing_object",
        False,
    ),
    (
        "source empty",
        SourceError("s3://bucket/incoming/leads.csv: the object is empty"),
        "bad_data",
        False,
    ),
    ("processor <- ValueError", processor_failure(ValueError("bad email")), "processor", False),
    ("processor <- KeyError", processor_failure(KeyError("email")), "processor", False),
    (
        "processor <- reset",
        processor_failure(ConnectionResetError(104, "reset")),
        "connection",
        True,
    ),
    ("processor <- MemoryError", processor_failure(MemoryError()), "out_of_memory", False),
    (
        "processor <- ValueError from None",
        processor_failure(
            raised_while_handling(ConnectionResetError(104, "reset"), ValueError("bad"), True)
        ),
        "processor",
        False,
    ),
    (
        "processor <- ValueError while handling a reset",
        processor_failure(
            raised_while_handling(ConnectionResetError(104, "reset"), ValueError("bad"), False)
        ),
        "connection",
        True,
    ),
    ("lost records", ProcessorError(f"processor 'x' lost records on {CHUNK}"), "processor", False),
    # memory
    ("MemoryError", MemoryError(), "out_of_memory", False),
    (
        "ArrowMemoryError",
        pa.lib.ArrowMemoryError("malloc of size 1 failed"),
        "out_of_memory",
        False,
    ),
    # configuration, accounting, delivery
    ("config", ConfigError("Unknown processor 'nope'"), "config", False),
    ("conservation", ConservationError("10 in != 9 out + 0 rejected"), "conservation", False),
    ("delivery retryable", DeliveryError("3 message(s) not accepted"), "delivery", True),
    (
        "delivery refused",
        DeliveryError("queue refused messages [4]", permanent=True),
        "delivery",
        False,
    ),
    ("circuit open", CircuitOpenError("https://sqs.example/q", 12.0), "delivery", True),
    # unknown: a few retries are cheaper than a lost chunk
    ("unknown", RuntimeError("something odd happened"), "unknown", True),
    ("unknown chained", chained(RuntimeError("outer"), LookupError("inner")), "unknown", True),
]


@pytest.mark.parametrize(
    ("exc", "category", "transient"),
    [pytest.param(exc, category, transient, id=name) for name, exc, category, transient in CASES],
)
def test_classify(exc: BaseException, category: str, transient: bool) -> None:
    info = classify(exc)
    assert (info.category, info.transient) == (category, transient), info
    assert isinstance(info, ErrorInfo)
    if str(exc):
        assert info.message == str(exc)  # the outermost message: it names the chunk
    else:
        assert info.message  # never empty


def test_every_category_keeps_its_message() -> None:
    error = read_failure(NETWORK)
    assert classify(error).message.startswith(CHUNK)


def test_out_of_memory_without_a_message_says_what_to_do() -> None:
    assert "chunk_records" in classify(MemoryError()).message


def test_long_chains_end() -> None:
    error: BaseException = ValueError("root")
    for depth in range(50):
        error = chained(ChunkReadError(f"level {depth}"), error)
    assert classify(error).category == "bad_data"
    looped = ValueError("a")
    other = ValueError("b")
    looped.__context__, other.__context__ = other, looped  # a cycle must not hang
    assert classify(looped).category == "unknown"


def test_a_real_chunk_read_from_an_unreachable_endpoint_is_transient() -> None:
    """The real chain: pyarrow's S3 read fails to connect, the reader wraps it."""
    storage = Storage(S3Settings(endpoint_url=DEAD_ENDPOINT, max_attempts=1))
    uri = "s3://bucket/incoming/leads.csv"
    source = SourceSpec(
        uri=uri,
        format="csv",
        compression=None,
        info=ObjectInfo(uri, 100, etag="e"),
        csv=CsvOptions(),
        columns=("id", "name"),
        data_start=8,
    )
    chunk = Chunk(0, 1, "bytes", uri, start=8, end=100, first_line=2)
    with pytest.raises(ChunkReadError) as caught:
        read_chunk(storage, source, chunk)
    info = classify(caught.value)
    assert (info.category, info.transient) == ("connection", True), caught.value


def test_a_real_missing_key_is_permanent(s3_client: Any, s3_bucket: str) -> None:
    with pytest.raises(ClientError) as caught:
        s3_client.get_object(Bucket=s3_bucket, Key="nope.csv")
    assert classify(caught.value) == ErrorInfo("missing_object", False, str(caught.value))


def test_file_names_do_not_change_the_category() -> None:
    """Our messages name the file; a file called Timeout_... or Not Found... says nothing about
    what went wrong."""
    bad_data = ChunkReadError("chunk_00001 of 2 (bytes 1-9 of s3://b/Timeout_leads.csv): junk")
    assert (classify(bad_data).category, classify(bad_data).transient) == ("bad_data", False)
    reset = ChunkReadError("chunk_00001 of 2 (bytes 1-9 of /data/Not Found.csv): read failed")
    reset.__cause__ = ConnectionResetError(104, "Connection reset by peer")
    assert (classify(reset).category, classify(reset).transient) == ("connection", True)


def test_an_error_raised_while_handling_another_keeps_its_own_category() -> None:
    """A dead-letter write throttled while handling a missing object is throttled."""
    throttled = raised_while_handling(
        FileNotFoundError("gone.csv"), client_error("SlowDown", "slow down", 503, "PutObject"),
        False,
    )  # fmt: skip
    assert (classify(throttled).category, classify(throttled).transient) == ("throttled", True)


def test_a_throttled_queue_lookup_is_transient(sqs_client: Any) -> None:
    from batch_pipeline.core.delivery.sinks import resolve_queue_url

    class Throttled:
        def get_queue_url(self, QueueName: str) -> Any:
            raise client_error("Throttling", "rate exceeded", 400, "GetQueueUrl")

    with pytest.raises(DeliveryError) as caught:
        resolve_queue_url(Throttled(), "sqs://leads")
    assert not caught.value.permanent
    with pytest.raises(DeliveryError) as missing:
        resolve_queue_url(sqs_client, "sqs://no-such-queue")
    assert missing.value.permanent


# Permanent errors of the machine: disk full, access denied, bad paths, a corrupt ledger --------


def raised(action) -> BaseException:
    try:
        action()
    except BaseException as exc:
        return exc
    raise AssertionError("expected an error")


def write_python(path) -> None:
    with open(path, "wb") as f:
        f.write(b"x" * 10)


def write_pyarrow(path) -> None:
    import pyarrow.fs as pafs

    with pafs.LocalFileSystem().open_output_stream(str(path)) as f:
        f.write(b"x" * 100_000)


def write_parquet(path) -> None:
    import pyarrow.fs as pafs
    import pyarrow.parquet as pq

    table = pa.table({"a": list(range(1000))})
    pq.write_table(table, str(path), filesystem=pafs.LocalFileSystem())


@pytest.mark.parametrize("write", [write_python, write_pyarrow, write_parquet])
def test_a_full_disk_is_permanent_and_keeps_the_os_message(write, tmp_path) -> None:
    error = raised(lambda: write(full_device(tmp_path)))
    wrapped = chained(ChunkReadError(f"{CHUNK}: {error}"), error)

    for exc in (error, wrapped):
        info = classify(exc)
        assert (info.category, info.transient) == ("disk_full", False)
        assert "No space left on device" in info.message


def test_errno_in_a_message_without_the_attribute_is_read_too() -> None:
    """pyarrow's wording when only the text survives (a re-raised or re-wrapped error)."""
    text = "Error writing bytes to file. Detail: [errno 28] No space left on device"
    assert classify(RuntimeError(text)).category == "unknown"  # not a library OSError
    assert (classify(OSError(text)).category, classify(OSError(text)).transient) == (
        "disk_full",
        False,
    )
    quota = OSError("Failed to open local file '/x'. Detail: [errno 122] Disk quota exceeded")
    assert classify(quota).category == "disk_full"
    assert classify(OSError("Detail: [errno 13] Permission denied")).category == "access_denied"


def test_a_name_too_long_or_a_file_where_a_folder_should_be_is_a_bad_path(tmp_path) -> None:
    import os

    import pyarrow.fs as pafs

    too_long = str(tmp_path / ("x" * 300) / "a.parquet")
    not_a_dir = str(tmp_path / "file" / "a.parquet")
    (tmp_path / "file").write_text("")
    errors = [
        raised(lambda: os.makedirs(os.path.dirname(too_long))),
        raised(lambda: pafs.LocalFileSystem().open_output_stream(too_long)),
        raised(lambda: os.makedirs(os.path.dirname(not_a_dir) + "/sub")),
        raised(lambda: write_python(tmp_path)),  # a folder where a file should be
    ]
    for error in errors:
        info = classify(chained(SourceError(f"writing: {error}"), error))
        assert (info.category, info.transient) == ("bad_path", False), error


def test_a_file_where_the_results_folder_should_be_is_a_bad_path(tmp_path) -> None:
    """``touch out/b/valid``: writing ``out/b/valid/chunk-00000.parquet`` meets EEXIST
    ([Errno 17] File exists), which no retry mends."""
    blocker = tmp_path / "out" / "b" / "valid"
    blocker.parent.mkdir(parents=True)
    blocker.write_text("")
    target = str(blocker / "chunk-00000.parquet")
    errors = [
        raised(lambda: Storage().write_bytes(target, b"x")),
        raised(lambda: Storage().write_parquet(pa.table({"a": [1]}), target)),
    ]
    for error in errors:
        assert "File exists" in str(error)
        info = classify(chained(ChunkReadError(f"{CHUNK}: {error}"), error))
        assert (info.category, info.transient) == ("bad_path", False), error


def test_a_chunk_whose_results_folder_is_a_file_is_dead_lettered_at_once(tmp_path) -> None:
    from batch_pipeline.core.common.models import RetrySettings
    from batch_pipeline.core.initialize import prepare_batch
    from batch_pipeline.core.ledger import DEAD_LETTERED, Ledger
    from batch_pipeline.core.pipeline import run_batch

    source = tmp_path / "in.csv"
    source.write_text("id\n1\n2\n")
    (tmp_path / "out" / "tbp").mkdir(parents=True)
    (tmp_path / "out" / "tbp" / "valid").write_text("")
    spec = prepare_batch(
        Storage(), str(source), output=str(tmp_path / "out"), batch_id="tbp",
        retry=RetrySettings(max_retries=3, base_delay_seconds=0, max_delay_seconds=0),
        failures=None,
    )  # fmt: skip
    ledger = Ledger("sqlite://")
    run = run_batch(Storage(), spec, ledger)
    assert run.result.status == "failed"
    [state] = ledger.chunk_states("tbp")
    assert (state.status, state.attempts, state.error_category) == (DEAD_LETTERED, 1, "bad_path")
    assert "File exists" in (state.error_message or "")


def test_access_denied_and_read_only_by_errno() -> None:
    """We run as root, so chmod cannot deny us: the real errno objects, as the OS raises them."""
    import errno
    import os

    for code, category in [
        (errno.EACCES, "access_denied"),
        (errno.EPERM, "access_denied"),
        (errno.EROFS, "read_only"),
        (errno.ENOSPC, "disk_full"),
        (errno.EDQUOT, "disk_full"),
        (errno.ENAMETOOLONG, "bad_path"),
    ]:
        error = OSError(code, os.strerror(code), "/data/out/a.parquet")
        info = classify(chained(ChunkReadError(f"{CHUNK}: {error}"), error))
        assert (info.category, info.transient) == (category, False), code
    with_path = OSError(errno.EINVAL, os.strerror(errno.EINVAL), "/data/out/a:b")
    assert classify(with_path).category == "bad_path"
    # An invalid argument that is not about a path says nothing permanent about the run.
    assert classify(OSError(errno.EINVAL, os.strerror(errno.EINVAL))).category == "unknown"


def test_connection_errors_stay_transient() -> None:
    import socket

    def connect() -> None:
        with socket.create_connection(("127.0.0.1", 9), timeout=5):
            pass

    refused = raised(connect)
    assert (classify(refused).category, classify(refused).transient) == ("connection", True)
    reset = OSError("Detail: [errno 104] Connection reset by peer")
    assert (classify(reset).category, classify(reset).transient) == ("connection", True)


def test_a_ledger_file_of_garbage_is_permanent(tmp_path) -> None:
    from batch_pipeline.core.ledger import Ledger

    path = tmp_path / "ledger.db"
    path.write_bytes(b"this is not a database " * 200)

    error = raised(lambda: Ledger(f"sqlite:///{path}").chunk_states("b"))

    info = classify(error)
    assert (info.category, info.transient) == ("ledger_corrupt", False)
    assert "file is not a database" in info.message


def test_a_malformed_ledger_and_a_full_one_are_permanent(tmp_path) -> None:
    import sqlite3

    import sqlalchemy as sa

    path = tmp_path / "ledger.db"
    with sqlite3.connect(path) as db:
        db.execute("create table t (v text)")
        db.executemany("insert into t values (?)", [("x" * 500,) for _ in range(200)])
    data = bytearray(path.read_bytes())
    data[4096 * 2 : 4096 * 2 + 64] = b"\xff" * 64  # a b-tree page header of the table
    path.write_bytes(bytes(data))
    engine = sa.create_engine(f"sqlite:///{path}")

    def read() -> None:
        with engine.connect() as connection:
            connection.execute(sa.text("select count(*), max(v) from t")).fetchall()

    malformed = raised(read)
    assert "malformed" in str(malformed)
    assert (classify(malformed).category, classify(malformed).transient) == (
        "ledger_corrupt",
        False,
    )

    full = tmp_path / "full.db"

    def fill() -> None:
        with sqlite3.connect(full) as db:
            db.execute("pragma max_page_count = 3")
            db.execute("create table t (v text)")
            db.executemany("insert into t values (?)", [("x" * 1000,) for _ in range(100)])

    error = raised(fill)
    assert "database or disk is full" in str(error)
    assert (classify(error).category, classify(error).transient) == ("disk_full", False)
