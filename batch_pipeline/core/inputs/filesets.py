"""File sets: many small record files under one folder or prefix, processed as one batch.

A nightly drop of thousands of small objects would cost one Dagster step (and one run) per
object if each were its own batch. A *file set* is a batch over the record files under a folder
or prefix instead: the source is a local directory or a URI ending in ``/`` (every record file
under it, recursively, as ``discovery`` lists them), optionally narrowed to named ``members``
(keys relative to the folder; the nightly schedule names the files each run takes).

- **Identity.** The set is fixed when the batch starts: its fingerprint hashes each member's
  URI and fingerprint (ETag, else size and mtime), so a batch id names one set of file
  versions, and resume, redrive and the ledger work as for a single file. The request kept for
  redrive names the members.
- **Planning.** Whole files are grouped into ``objects`` chunks in key order, by estimated
  records (bytes over the first member's bytes per record), up to ``chunk_records`` (or
  ``chunk_bytes``) per chunk and at most ``MAX_FILES_PER_CHUNK`` files, with ``max_chunks``
  winning as for any source. A file is never split: files above ``MAX_MEMBER_BYTES`` are
  refused (run such a file as its own batch, which cuts it into chunks).
- **Reading.** A chunk reads its files in threads (8 on S3, 2 locally), each whole, with the
  reader of its format (gzip and JSON documents decompressed and parsed in memory), checks that
  each is still the version planned, and concatenates them (columns missing from a file are
  null). A ``_file`` column names each record's file, in valid and rejected records; ``_line``
  is the line within that file.
- **One format per set**: with ``format: auto`` every member must have the same one (ask for a
  format to read them all with it); each member's compression comes from its own suffix.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace

import numpy as np
import pyarrow as pa

from batch_pipeline.core.automation.discovery import (
    DEFAULT_SUFFIXES,
    list_local,
    objects_from_s3_listing,
    split_watch_uri,
)
from batch_pipeline.core.columns import concat_tables
from batch_pipeline.core.common.errors import (
    ChunkReadError,
    ConfigError,
    EmptySourceError,
    SourceError,
)
from batch_pipeline.core.common.models import (
    Chunk,
    ChunkingSettings,
    CsvOptions,
    ObjectInfo,
    SourceSpec,
)
from batch_pipeline.core.common.naming import check_member
from batch_pipeline.core.common.settings import Batch
from batch_pipeline.core.inputs.readers import ChunkData, combine_parts, read_chunk
from batch_pipeline.core.inputs.sources import detect_format, inspect_source
from batch_pipeline.core.inputs.staging import PartSizes, stream_parts
from batch_pipeline.core.planning.byte_ranges import header_lines_of
from batch_pipeline.core.planning.formats import DEFAULT_RECORD_BYTES, plan_sheets
from batch_pipeline.core.stores.storage import Storage, is_s3, normalize_uri

# A file is read whole into its chunk: 64 MiB of CSV is about 600,000 records of 100 bytes,
# which validate handles within the 1 GiB a step may use.
MAX_MEMBER_BYTES = 64 << 20
COMPRESSED_EXPANSION = 8
# Files read at once by a chunk: on S3 each file waits on requests; locally the work is
# parsing, where more threads than cores only contend (8 were slower than 2 on 2 cores).
READ_THREADS_S3 = 8
READ_THREADS_LOCAL = 2
INSPECT_TRIES = 20  # members tried for one with records to inspect
FILE_COLUMN = "_file"


def member_limit(uri: str, compression: str = Batch.compression.default) -> int:
    """The most bytes a set takes of this file: ``MAX_MEMBER_BYTES``, or an eighth of it for a
    compressed one (CSV and JSON expand 5-10 times out of gzip)."""
    try:
        compressed = detect_format(uri, "csv", compression)[1] is not None
    except ConfigError:
        compressed = False
    return MAX_MEMBER_BYTES // COMPRESSED_EXPANSION if compressed else MAX_MEMBER_BYTES


def is_file_set(uri: str) -> bool:
    """A folder or prefix rather than one file: ends with ``/``, or is a local directory."""
    if uri.endswith("/"):
        return True
    return not is_s3(uri) and os.path.isdir(normalize_uri(uri))


def set_uri(uri: str) -> str:
    """The set's canonical URI: absolute for a local folder, ending with ``/``."""
    if is_s3(uri):
        bucket, prefix = split_watch_uri(uri)
        return f"s3://{bucket}/{prefix}"
    return normalize_uri(uri).rstrip("/") + "/"


def set_info(uri: str, members: Sequence[ObjectInfo]) -> ObjectInfo:
    """The ObjectInfo standing for a whole set: its size, its newest mtime, and an ETag-like
    fingerprint hashing every member's URI and fingerprint."""
    digest = hashlib.sha256()
    for member in sorted(members, key=lambda m: m.uri):
        digest.update(f"{member.uri}\t{member.fingerprint}\n".encode())
    return ObjectInfo(
        uri=uri,
        size=sum(m.size for m in members),
        mtime=max((m.mtime or 0.0 for m in members), default=None),
        etag=f"set-{len(members)}-{digest.hexdigest()[:32]}",
    )


def relative_key(root: str, uri: str) -> str:
    """``uri``'s key relative to the set's folder ``root`` (as ``members`` names it)."""
    if not uri.startswith(root):
        raise ConfigError(f"{uri} is not under {root}")
    return uri[len(root) :]


def list_file_set(
    storage: Storage,
    uri: str,
    members: Sequence[str] | None = None,
    suffixes: Sequence[str] = DEFAULT_SUFFIXES,
) -> tuple[str, list[ObjectInfo]]:
    """The set's URI and its member files, in key order. ``members`` narrows the set to those
    keys (relative to the folder, whatever their suffix); one that is missing is an error
    naming it."""
    root = set_uri(uri)
    if members:  # named files are taken whatever their suffix (the schedule's may differ)
        for member in members:  # never a file outside the folder
            check_member(member)
        suffixes = ("",)
    if is_s3(root):
        bucket, prefix = split_watch_uri(root)
        pages = storage.s3_client().get_paginator("list_objects_v2")
        listing = [
            entry
            for page in pages.paginate(Bucket=bucket, Prefix=prefix)
            for entry in page.get("Contents", [])
        ]
        found = objects_from_s3_listing(bucket, listing, suffixes)
    else:
        if not os.path.isdir(root):
            raise SourceError(f"{root} does not exist or is not a folder")
        found = list_local(root, suffixes)
    infos = {o.uri: o.info for o in found}
    if members:
        wanted = [root + m for m in members]
        missing = [m for m in wanted if m not in infos]
        if missing:
            more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
            raise SourceError(
                f"file set {root}: {len(missing)} member(s) are not there: "
                f"{', '.join(missing[:5])}{more}"
            )
        chosen = [infos[m] for m in dict.fromkeys(wanted)]
    else:
        chosen = list(infos.values())
    if not chosen:
        raise SourceError(
            f"file set {root} holds no record files (looked for {', '.join(suffixes)})"
        )
    return root, sorted(chosen, key=lambda m: m.uri)


def inspect_file_set(
    storage: Storage,
    uri: str,
    members: Sequence[str] | None = None,
    fmt: str = Batch.format.default,
    compression: str = Batch.compression.default,
    csv_options: CsvOptions | None = None,
    json_records_path: str = Batch.json_records_path.default,
    excel_sheets: tuple[str, ...] | None = None,
) -> SourceSpec:
    """What initialize learns of a file set: its members (listed once), their one format, and
    the first member that holds records inspected in full (columns, CSV layout, bytes per
    record). A file that cannot be read is passed over here: its chunk fails, naming it."""
    root, infos = list_file_set(storage, uri, members)
    formats: dict[str, list[str]] = {}
    for info in infos:
        formats.setdefault(detect_format(info.uri, fmt, compression)[0], []).append(info.uri)
    if len(formats) > 1:
        counts = ", ".join(f"{n} {f} file(s)" for f, n in sorted(
            (f, len(u)) for f, u in formats.items()))  # fmt: skip
        raise ConfigError(
            f"file set {root} mixes formats ({counts}): give its format (one per set), or "
            "point it at a folder of one format"
        )
    big = [i for i in infos if i.size > member_limit(i.uri, compression)]
    if big:
        names = ", ".join(f"{i.uri} ({i.size:,} bytes)" for i in big[:5])
        raise ConfigError(
            f"file set {root}: {len(big)} file(s) are bigger than a set reads whole into one "
            f"chunk ({MAX_MEMBER_BYTES:,} bytes, compressed {member_limit('x.gz'):,}): "
            f"{names}. Run each as its own batch, which cuts it into chunks"
        )
    fmt_out = next(iter(formats))
    head = None
    unreadable: SourceError | None = None
    for info in [i for i in infos if i.size][:INSPECT_TRIES]:
        try:
            head = inspect_source(
                storage, info.uri, fmt_out, compression, csv_options, json_records_path,
                excel_sheets, info=info,
            )  # fmt: skip
            break
        except EmptySourceError:  # only whitespace or a byte-order mark: zero records
            continue
        except SourceError as exc:  # its chunk will fail naming it; the others may be fine
            unreadable = unreadable or exc
    if head is None and unreadable is not None:
        raise unreadable
    if head is None:  # no member holds anything to inspect: zero records, probably
        spec = SourceSpec(uri=root, format=fmt_out, compression=None, info=set_info(root, infos))  # type: ignore[arg-type]
        return replace(
            spec, csv=csv_options, members=tuple(infos), layout=_layout(infos, None, compression)
        )
    return replace(
        head,
        uri=root,
        info=set_info(root, infos),
        csv=csv_options,  # as asked: each file's own header names its columns
        compression=None,
        data_start=0,
        layout=_layout(infos, _record_bytes(storage, head), compression),
        members=tuple(infos),
    )


def _record_bytes(storage: Storage, head: SourceSpec) -> float | None:
    """Bytes per record of the first member with records: from its inspection (sample, footer
    or sheets), or, for a JSON document or a compressed file, whose size says little, by
    reading it (it is small): its stored bytes over its records."""
    if head.needs_staging:
        records = sum(t.num_rows + (b.num_rows if b is not None else 0)
                      for t, b in stream_parts(storage, head, PartSizes(1 << 62)))  # fmt: skip
        return head.info.size / records if records else None
    layout = head.layout
    sample = layout.get("record_bytes") or layout.get("bytes_per_record")
    if sample:
        return float(sample)
    rows = sum(layout.get("row_groups", []) or [])
    if rows:
        return head.info.size / rows
    sheets = layout.get("sheets") or []
    rows = sum(max(s.get("max_row", 0) - s.get("header_row", 0), 0) for s in sheets)
    return head.info.size / rows if rows else None


def _layout(infos: Sequence[ObjectInfo], record_bytes: float | None, compression: str) -> dict:
    """What the set is made of; ``compression`` as asked (auto: from each file's suffix)."""
    return {
        "compression": compression,
        "files": len(infos),
        "empty_files": sum(1 for i in infos if not i.size),
        "bytes": sum(i.size for i in infos),
        "largest_file_bytes": max((i.size for i in infos), default=0),
        "record_bytes_estimate": round(record_bytes or DEFAULT_RECORD_BYTES, 1),
    }


# Reading ---------------------------------------------------------------------------------------


def read_file_set_chunk(storage: Storage, source: SourceSpec, chunk: Chunk) -> ChunkData:
    """Read every file of an ``objects`` chunk, in threads, into one ChunkData with a
    ``_file`` column."""
    pairs = list(zip(chunk.members, chunk.fingerprints, strict=True))
    threads = READ_THREADS_S3 if is_s3(source.uri) else READ_THREADS_LOCAL
    with ThreadPoolExecutor(max_workers=max(1, min(threads, len(pairs)))) as pool:
        parts = list(pool.map(lambda p: _read_member(storage, source, chunk, *p), pairs))
    tables, rejects, records, lines = [], [], [], []
    offset = size = 0
    for uri, data in zip(chunk.members, parts, strict=True):
        n = data.records_in
        name = pa.array([uri], pa.string()).dictionary_encode()
        tables.append(_with_file(data.table, name))
        rows = data.records if data.records is not None else np.arange(data.table.num_rows)
        records.append(np.asarray(rows, dtype=np.int64) + offset)
        if data.rejects is not None and data.rejects.num_rows:
            bad = data.rejects
            at = bad.schema.get_field_index("_record")
            shifted = pa.array(bad.column(at).to_numpy() + offset, pa.int64())
            rejects.append(_with_file(bad.set_column(at, "_record", shifted), name))
        found = data.lines(np.arange(n, dtype=np.int64))
        lines.append(np.full(n, -1, np.int64) if found is None else np.asarray(found, np.int64))
        offset += n
        size += data.bytes_read
    table = concat_tables(tables)  # a column whose type differs between files: text
    table = table.select([c for c in table.column_names if c != FILE_COLUMN] + [FILE_COLUMN])
    all_lines = np.concatenate(lines) if lines else np.zeros(0, np.int64)
    return ChunkData(
        table,
        size,
        lambda idx: all_lines[np.asarray(idx, dtype=np.int64)],
        records=np.concatenate(records) if records else None,
        rejects=pa.concat_tables(rejects, promote_options="permissive") if rejects else None,
    )


def _with_file(table: pa.Table, name: pa.DictionaryArray) -> pa.Table:
    column = pa.DictionaryArray.from_arrays(
        pa.array(np.zeros(table.num_rows, np.int32)), name.dictionary
    )
    if FILE_COLUMN in table.column_names:
        table = table.drop_columns([FILE_COLUMN])
    return table.append_column(FILE_COLUMN, column)


def _read_member(
    storage: Storage, source: SourceSpec, chunk: Chunk, uri: str, planned: str
) -> ChunkData:
    """One file of the set, whole: checked to be the version planned (one HEAD or stat), read
    once (one GET), then inspected (its own header) and parsed from memory."""

    def where() -> str:  # only for errors: describing a chunk of many files is not free
        return f"{chunk.describe()}: file {uri}"

    try:
        current = storage.stat(uri)
    except SourceError as exc:
        raise SourceError(f"{where()}: {exc}") from exc
    if current.fingerprint != planned:
        raise ChunkReadError(
            f"{where()} changed after the batch was planned (fingerprint {planned}, now "
            f"{current.fingerprint}); run the set again as a new batch"
        )
    if not current.size:
        return ChunkData(pa.table({}), 0, lambda idx: None)
    try:
        data = storage.read_bytes(uri)
        if len(data) != current.size:
            raise ChunkReadError(f"{where()} changed while it was read ({len(data):,} bytes)")
        storage = ReadOnce(current, data)
        member = inspect_source(
            storage,
            uri,
            source.format,
            source.layout.get("compression", Batch.compression.default),
            source.csv,
            source.json_records_path,
            source.excel_sheets,
            info=current,
        )
        if member.needs_staging:
            return _read_streamed(storage, member)
        return read_chunk(storage, member, _whole(storage, member), check=False)
    except EmptySourceError:  # only whitespace or a byte-order mark: no records, as 0 bytes
        return ChunkData(pa.table({}), current.size, lambda idx: None)
    except (ChunkReadError, SourceError, ConfigError) as exc:
        if uri in str(exc):
            raise type(exc)(f"{chunk.describe()}: {exc}") from exc
        raise type(exc)(f"{where()}: {exc}") from exc
    except (OSError, pa.ArrowException) as exc:
        raise ChunkReadError(f"{where()}: {exc}") from exc


class ReadOnce(Storage):
    """One file of a set, read from storage once: its inspection, its header and its records
    are then read from memory (on S3: a HEAD and one GET per file, not a HEAD and three GETs)."""

    def __init__(self, info: ObjectInfo, data: bytes) -> None:
        super().__init__()
        self._info, self._data = info, pa.py_buffer(data)

    def _check(self, uri: str) -> None:
        if uri != self._info.uri:
            raise SourceError(f"{uri} is not the file read ({self._info.uri})")

    def stat(self, uri: str) -> ObjectInfo:
        self._check(uri)
        return self._info

    def open_input_file(self, uri: str) -> pa.NativeFile:
        self._check(uri)
        return pa.BufferReader(self._data)

    def open_input_stream(self, uri: str, compression: str | None = None) -> pa.NativeFile:
        self._check(uri)
        stream = pa.BufferReader(self._data)
        return pa.CompressedInputStream(stream, compression) if compression else stream


def _whole(storage: Storage, member: SourceSpec) -> Chunk:
    """The one chunk that covers a whole (uncompressed) member."""
    if member.format in ("csv", "jsonl"):
        first = header_lines_of(storage, member) + 1
        return Chunk(0, 1, "bytes", member.uri, member.data_start, member.info.size, first)
    if member.format == "parquet":
        groups = len(member.layout.get("row_groups", []))
        return Chunk(0, 1, "row_groups", member.uri, 0, groups, first_line=1)
    whole = ChunkingSettings(chunk_records=1 << 62, max_chunks=1)
    return plan_sheets(member, whole).chunks[0]


def _read_streamed(storage: Storage, member: SourceSpec) -> ChunkData:
    """A JSON document or a gzip file, parsed in memory as staging would (the file is small);
    ``_line`` is the record number, as for staged sources."""
    parts = stream_parts(storage, member, PartSizes(1 << 62))
    return combine_parts(parts, member.info.size, 1)
