"""One interface for local paths and ``s3://`` URIs, on top of pyarrow's filesystems.

Reads, range reads and Parquet I/O go through ``pyarrow.fs`` (``LocalFileSystem`` or
``S3FileSystem``); the one thing pyarrow does not expose, an S3 object's ETag, comes from boto3.
S3 is reached through the standard credential chain, at ``S3Settings.endpoint_url`` (unset: AWS)
in ``S3Settings.region_name`` (unset: the profile's, ``profile_region``). The core reads no
environment: ``batch_pipeline.settings.s3_settings`` fills in the endpoint and region that the
environment gives (``AWS_ENDPOINT_URL_S3``/``AWS_ENDPOINT_URL``, ``AWS_REGION``/
``AWS_DEFAULT_REGION``), for the storage resource and the CLI, never at import.
"""

from __future__ import annotations

import os
import tempfile
import time
import uuid
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from batch_pipeline.core.common.errors import SourceError, classify
from batch_pipeline.core.common.models import ObjectInfo, RetrySettings
from batch_pipeline.core.common.retries import backoff_delay
from batch_pipeline.core.inputs.boundaries import split_lines

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator


MIN_RANGE_READ = 4096
LINE_BLOCK_BYTES = 1 << 20
RANGE_READ_ATTEMPTS = 4
RANGE_READ_BACKOFF = RetrySettings(RANGE_READ_ATTEMPTS, 0.2, 2.0)


@dataclass(frozen=True)
class S3Settings:
    """How to reach S3. Every field None means: the AWS SDK's defaults (the environment's
    endpoint and region are filled in by ``batch_pipeline.settings.s3_settings``)."""

    endpoint_url: str | None = None
    region_name: str | None = None
    aws_access_key_id: str | None = None
    aws_secret_access_key: str | None = None
    aws_session_token: str | None = None
    max_attempts: int = 5

    def resolved_endpoint(self) -> str | None:
        return self.endpoint_url or None

    def resolved_region(self) -> str:
        return self.region_name or profile_region()


def profile_region(profile_name: str | None = None) -> str:
    """The region botocore resolves for ``profile_name`` (its own ``AWS_DEFAULT_REGION``, else
    the profile's in the AWS config file), else us-east-1: where an AWS client goes when no
    region is given (``batch_pipeline.settings.resolve_region`` gives ``AWS_REGION`` first)."""
    try:
        import botocore.session

        found = botocore.session.Session(profile=profile_name).get_config_variable("region")
    except Exception:  # an unreadable config file or a missing profile: the SDK says so later
        found = None
    return found or "us-east-1"


def is_s3(uri: str) -> bool:
    return uri.startswith("s3://")


def split_s3(uri: str) -> tuple[str, str]:
    """``s3://bucket/key`` -> (bucket, key)."""
    bucket, _, key = uri[len("s3://") :].partition("/")
    return bucket, key


def normalize_uri(uri: str) -> str:
    """Local paths become absolute (steps may run elsewhere); ``file://`` is dropped."""
    if is_s3(uri):
        return uri
    if uri.startswith("file://"):
        uri = uri[len("file://") :]
    return os.path.abspath(os.path.expanduser(uri))


def dictionary_columns(table: pa.Table, sample: int = 10_000) -> list[str]:
    """The columns worth dictionary-encoding: fewer distinct values than half of a sample of
    their first rows (names, countries, statuses; not ids, e-mails or timestamps). Encoding
    every column, pyarrow's default, spends a third of a chunk's write time building
    dictionaries that it then abandons for high-cardinality columns. Columns of nulls (a blank
    Excel column, a field null in the whole chunk) and of types ``count_distinct`` cannot count
    are not encoded."""
    rows = min(table.num_rows, sample)
    if rows == 0:
        return []
    chosen = []
    for name in table.column_names:
        head = table.column(name).slice(0, rows)
        if pa.types.is_dictionary(head.type):  # encoded already (a file set's _file)
            chosen.append(name)
            continue
        if pa.types.is_nested(head.type) or pa.types.is_null(head.type):
            continue
        try:
            distinct = pc.count_distinct(head).as_py()
        except (pa.ArrowNotImplementedError, pa.ArrowTypeError):
            continue
        if distinct * 2 < rows:
            chosen.append(name)
    return chosen


class PartWriter:
    """Appends tables to one local Parquet file (``Storage.parquet_writer``): the schema and
    the dictionary-encoded columns are the first table's; a later table of another schema is
    cast to it (a ValueError names the difference when it cannot be)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.rows: int | None = None  # None: nothing written yet
        self._writer: pq.ParquetWriter | None = None

    def write(self, table: pa.Table) -> None:
        if self._writer is None:
            self._writer = pq.ParquetWriter(
                self.path, table.schema, use_dictionary=dictionary_columns(table)
            )
            self.rows = 0
        elif table.schema != self._writer.schema:
            try:
                table = table.cast(self._writer.schema)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError, ValueError) as exc:
                raise ValueError(
                    f"a part's columns ({table.schema}) differ from the first part's "
                    f"({self._writer.schema}): {exc}"
                ) from exc
        self._writer.write_table(table)
        self.rows = (self.rows or 0) + table.num_rows

    def close(self) -> None:
        """Close the file once: a close that failed is not tried again."""
        writer, self._writer = self._writer, None
        if writer is not None:
            writer.close()


class Storage:
    """Reads and writes objects by URI. Thread-safe; clients are created on first use.

    ``s3`` is the S3 settings, or a function that gives them when S3 is first used (for
    instance ``batch_pipeline.settings.s3_settings``, which reads the environment then)."""

    def __init__(self, s3: S3Settings | Callable[[], S3Settings] | None = None) -> None:
        self._s3_given = s3 or S3Settings()

    @cached_property
    def s3_settings(self) -> S3Settings:
        given = self._s3_given
        return given if isinstance(given, S3Settings) else given()

    @cached_property
    def _local(self) -> pafs.LocalFileSystem:
        return pafs.LocalFileSystem()

    @cached_property
    def _s3(self) -> pafs.S3FileSystem:
        s = self.s3_settings
        kwargs: dict[str, Any] = {
            "region": s.resolved_region(),
            "retry_strategy": pafs.AwsStandardS3RetryStrategy(max_attempts=s.max_attempts),
        }
        endpoint = s.resolved_endpoint()
        if endpoint:
            kwargs["endpoint_override"] = endpoint
        if s.aws_access_key_id and s.aws_secret_access_key:
            kwargs.update(
                access_key=s.aws_access_key_id,
                secret_key=s.aws_secret_access_key,
                session_token=s.aws_session_token,
            )
        return pafs.S3FileSystem(**kwargs)

    @cached_property
    def _boto_s3(self) -> Any:
        import boto3
        from botocore.config import Config

        s = self.s3_settings
        return boto3.session.Session().client(
            "s3",
            endpoint_url=s.resolved_endpoint(),
            region_name=s.resolved_region(),
            aws_access_key_id=s.aws_access_key_id,
            aws_secret_access_key=s.aws_secret_access_key,
            aws_session_token=s.aws_session_token,
            config=Config(retries={"max_attempts": s.max_attempts, "mode": "standard"}),
        )

    def s3_client(self) -> Any:
        """The boto3 S3 client of these settings (for listings; reads go through pyarrow)."""
        return self._boto_s3

    def filesystem(self, uri: str) -> tuple[pafs.FileSystem, str]:
        """The pyarrow filesystem and the path within it for ``uri``."""
        if is_s3(uri):
            return self._s3, uri[len("s3://") :]
        return self._local, normalize_uri(uri)

    def stat(self, uri: str) -> ObjectInfo:
        """Size, mtime and (S3) ETag of an object. Raises SourceError naming the URI."""
        if is_s3(uri):
            from botocore.exceptions import ClientError

            bucket, key = split_s3(uri)
            try:
                head = self._boto_s3.head_object(Bucket=bucket, Key=key)
            except ClientError as exc:
                code = exc.response.get("Error", {}).get("Code", "")
                if code in ("404", "NoSuchKey", "NotFound"):
                    raise SourceError(f"{uri} does not exist") from exc
                if code in ("403", "AccessDenied"):
                    raise SourceError(f"{uri} is not readable: access denied") from exc
                raise
            return ObjectInfo(
                uri=uri,
                size=int(head["ContentLength"]),
                mtime=head["LastModified"].timestamp(),
                etag=head.get("ETag"),
            )
        path = normalize_uri(uri)
        if not os.path.exists(path):
            raise SourceError(f"{path} does not exist")
        if os.path.isdir(path):
            raise SourceError(f"{path} is a directory, not a file")
        if not os.access(path, os.R_OK):
            raise SourceError(f"{path} is not readable: permission denied")
        st = os.stat(path)
        return ObjectInfo(uri=path, size=st.st_size, mtime=st.st_mtime, etag=None)

    def exists(self, uri: str) -> bool:
        fs, path = self.filesystem(uri)
        return fs.get_file_info(path).type == pafs.FileType.File

    def open_input_file(self, uri: str) -> pa.NativeFile:
        """A random-access file: reads at an offset become range GETs on S3."""
        fs, path = self.filesystem(uri)
        return fs.open_input_file(path)

    def open_input_stream(self, uri: str, compression: str | None = None) -> pa.NativeFile:
        """A sequential stream, decompressed on the fly when ``compression`` is given."""
        fs, path = self.filesystem(uri)
        return fs.open_input_stream(path, compression=compression)

    def read_range(self, uri: str, start: int, end: int) -> bytes:
        """Bytes ``start``..``end`` (exclusive) of an object: a seek locally, a range GET on S3.

        Ranges are read at least MIN_RANGE_READ bytes long, and transient errors are tried
        again: the AWS SDK under pyarrow fails, without retrying, to read an error response
        (a 503 SlowDown body) that is longer than the range it asked for."""
        if end <= start:
            return b""
        for attempt in range(RANGE_READ_ATTEMPTS):
            try:
                with self.open_input_file(uri) as f:
                    return f.read_at(max(end - start, MIN_RANGE_READ), start)[: end - start]
            except OSError as exc:
                if attempt + 1 == RANGE_READ_ATTEMPTS or not classify(exc).transient:
                    raise
                time.sleep(backoff_delay(attempt, RANGE_READ_BACKOFF))
        raise AssertionError("unreachable")

    def iter_blocks(
        self, uri: str, start: int = 0, block_size: int = 8 << 20
    ) -> Iterator[tuple[int, bytes]]:
        """Stream an object from ``start`` in blocks: yields (offset, bytes)."""
        with self.open_input_file(uri) as f:
            f.seek(start)
            offset = start
            while True:
                block = f.read(block_size)
                if not block:
                    return
                yield offset, block
                offset += len(block)

    @contextmanager
    def open_lines(
        self, uri: str, start: int = 0, compression: str | None = None
    ) -> Iterator[Iterator[bytes]]:
        """The lines of an object from ``start``, each with its line break: ``\\n``, ``\\r\\n``
        or a lone ``\\r`` (see ``boundaries.split_lines``), read in blocks of 1 MiB."""
        if compression:
            stream = self.open_input_stream(uri, compression=compression)
        else:
            stream = self.open_input_file(uri)
            stream.seek(start)
        with stream:
            yield split_lines(iter(lambda: stream.read(LINE_BLOCK_BYTES), b""))

    def read_bytes(self, uri: str) -> bytes:
        with self.open_input_stream(uri) as f:
            return f.read()

    def write_bytes(self, uri: str, data: bytes) -> None:
        """Write an object whole. Local writes go to a temp file then rename: readers never see
        half a file. S3 PUTs are atomic already."""
        fs, path = self.filesystem(uri)
        target = self._temp_path(fs, path)
        with fs.open_output_stream(target) as f:
            f.write(data)
        self._commit(fs, target, path)

    def write_parquet(self, table: pa.Table, uri: str, row_group_size: int | None = None) -> None:
        """Write a table as one Parquet object, atomically as for ``write_bytes``."""
        fs, path = self.filesystem(uri)
        target = self._temp_path(fs, path)
        pq.write_table(
            table,
            target,
            filesystem=fs,
            row_group_size=row_group_size,
            use_dictionary=dictionary_columns(table),
        )
        self._commit(fs, target, path)

    @contextmanager
    def parquet_writer(self, uri: str) -> Iterator[PartWriter]:
        """A Parquet object written part by part (one row group or more per ``write``), made
        visible at ``uri`` only when the block ends without an error: locally a temporary file
        renamed, on S3 a local temporary file uploaded at the end (a failed chunk leaves no
        half-written object, as ``write_parquet`` does not). Columns are dictionary-encoded as
        ``write_parquet`` chooses from the first part. With no part written, no object is made:
        the caller writes an empty table itself."""
        fs, path = self.filesystem(uri)
        remote = isinstance(fs, pafs.S3FileSystem)
        if remote:
            handle, target = tempfile.mkstemp(prefix="part-", suffix=".parquet")
            os.close(handle)
        else:
            target = self._temp_path(fs, path)
        writer = PartWriter(target)
        try:
            yield writer
            writer.close()
            if writer.rows is None:
                return
            if remote:
                pafs.copy_files(target, path, destination_filesystem=fs)
            else:
                self._commit(fs, target, path)
        finally:
            writer.close()
            if remote or os.path.exists(target):
                with suppress(FileNotFoundError):
                    os.remove(target)

    def list(self, prefix: str) -> list[str]:
        """The URIs of every file under ``prefix`` (a folder, or an S3 prefix taken as one),
        recursively, sorted; [] when there is nothing there."""
        fs, path = self.filesystem(prefix)
        selector = pafs.FileSelector(path.rstrip("/"), recursive=True, allow_not_found=True)
        scheme = "s3://" if is_s3(prefix) else ""
        return sorted(
            scheme + info.path
            for info in fs.get_file_info(selector)
            if info.type == pafs.FileType.File
        )

    def delete(self, uri: str) -> None:
        fs, path = self.filesystem(uri)
        if fs.get_file_info(path).type == pafs.FileType.File:
            fs.delete_file(path)

    def _temp_path(self, fs: pafs.FileSystem, path: str) -> str:
        if isinstance(fs, pafs.S3FileSystem):
            return path
        os.makedirs(os.path.dirname(path), exist_ok=True)
        return f"{path}.tmp-{uuid.uuid4().hex[:8]}"

    def _commit(self, fs: pafs.FileSystem, target: str, path: str) -> None:
        if target != path:
            os.replace(target, path)
