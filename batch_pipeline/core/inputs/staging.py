"""Stage sources that cannot be cut by bytes into Parquet parts, streaming them once.

A JSON document (an array, or an object holding one) and gzip-compressed CSV or JSONL have no
byte offset where a reader could start. They are streamed once into
``{batch}/_staging/part-NNNNN.parquet`` of ``part_records`` records each; the planner then
plans over the parts. Records that do not parse are kept beside their part
(``part-NNNNN.rejects.parquet``, with ``_record``, ``_reason`` and ``_raw``) and are counted
by the chunk that reads the part, so records in = out + rejected still holds. Every part has
its rejects file, empty or not, so a reader never has to ask whether one exists.

Staging is idempotent: a marker (``_staged.json``) records the source fingerprint; a re-run of
the same source reuses the parts.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from dataclasses import astuple, dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from batch_pipeline.core.columns import (
    join_schemas,
    json_text,
    record_depth,
    schema_from_json,
    schema_to_json,
    table_from_records,
    too_deep,
)
from batch_pipeline.core.common.errors import SourceError
from batch_pipeline.core.common.models import Chunk, SourceSpec, join_uri
from batch_pipeline.core.inputs.readers import read_jsonl, rejects_table, split_invalid_utf8
from batch_pipeline.core.stores.storage import Storage

MARKER = "_staged.json"
EMPTY_REJECTS = pa.table(
    {
        "_record": pa.array([], type=pa.int64()),
        "_reason": pa.array([], type=pa.string()),
        "_raw": pa.array([], type=pa.string()),
    }
)


@dataclass(frozen=True)
class PartSizes:
    """Records per staged part: ``first``, doubled after every ``grow_every`` parts, up to
    ``cap``. A small chunk_records on a big input then stages into a bounded number of parts
    (about ``grow_every`` per doubling) instead of one part, and two files, per few records."""

    first: int
    grow_every: int | None = None
    cap: int | None = None

    def __call__(self, index: int) -> int:
        if not self.grow_every:
            return self.first
        size = self.first << min(index // self.grow_every, 40)
        return max(self.first, min(size, self.cap)) if self.cap else size


@dataclass(frozen=True)
class StagedPart:
    uri: str
    records: int


def part_uri(prefix: str, index: int) -> str:
    return join_uri(prefix, f"part-{index:05d}.parquet")


def rejects_uri(part: str) -> str:
    return part.removesuffix(".parquet") + ".rejects.parquet"


def stage_source(
    storage: Storage,
    source: SourceSpec,
    prefix: str,
    part_records: int,
    grow_every: int | None = None,
    max_part_records: int | None = None,
) -> list[StagedPart]:
    """Stream ``source`` into Parquet parts under ``prefix``; returns the parts in order.

    Parts hold ``part_records`` records; with ``grow_every``, the part size doubles after every
    ``grow_every`` parts, up to ``max_part_records`` (see PartSizes)."""
    sizes = PartSizes(part_records, grow_every, max_part_records)
    marker = join_uri(prefix, MARKER)
    if storage.exists(marker):
        state = json.loads(storage.read_bytes(marker))
        same_source = state.get("fingerprint") == source.info.fingerprint
        if same_source and state.get("part_sizes") == list(astuple(sizes)):
            return [StagedPart(**p) for p in state["parts"]]
    parts: list[StagedPart] = []
    schema = pa.schema([])
    try:
        for index, (table, rejects) in enumerate(stream_parts(storage, source, sizes)):
            uri = part_uri(prefix, index)
            schema = join_schemas([schema, table.schema])
            storage.write_parquet(table, uri)
            bad = rejects if rejects is not None else EMPTY_REJECTS
            storage.write_parquet(bad, rejects_uri(uri))
            parts.append(StagedPart(uri, table.num_rows + _rows(rejects)))
    except (OSError, pa.ArrowException) as exc:
        # A truncated or corrupt stream (or a lost connection: classify sees the cause).
        staged = sum(p.records for p in parts)
        raise SourceError(
            f"{source.uri} could not be read to its end while staging (after {staged:,} "
            f"records): {exc}"
        ) from exc
    state = {
        "source": source.uri,
        "fingerprint": source.info.fingerprint,
        "part_sizes": list(astuple(sizes)),
        "parts": [p.__dict__ for p in parts],
        "schema": schema_to_json(schema),
    }
    storage.write_bytes(marker, json.dumps(state, indent=1).encode())
    return parts


def staged_schema(storage: Storage, prefix: str, parts: list[str]) -> pa.Schema:
    """The join of the staged parts' schemas: from the marker, or (a marker written before it
    kept one) from the parts' Parquet footers."""
    marker = join_uri(prefix, MARKER)
    if storage.exists(marker):
        schema = schema_from_json(json.loads(storage.read_bytes(marker)).get("schema"))
        if schema is not None:
            return schema
    footers = []
    for uri in parts:
        with storage.open_input_file(uri) as f:
            footers.append(pq.read_schema(f).remove_metadata())
    return join_schemas(footers)


def _rows(table: pa.Table | None) -> int:
    return table.num_rows if table is not None else 0


def stream_parts(
    storage: Storage, source: SourceSpec, sizes: PartSizes
) -> Iterator[tuple[pa.Table, pa.Table | None]]:
    if source.format == "json":
        yield from _json_parts(storage, source, sizes)
    elif source.format == "csv":
        yield from _csv_parts(storage, source, sizes)
    elif source.format == "jsonl":
        yield from _jsonl_parts(storage, source, sizes)
    else:
        raise SourceError(f"{source.uri}: {source.format} is never staged")


class _SkipBom(io.RawIOBase):
    """A byte stream with a leading UTF-8 byte-order mark removed (ijson does not skip it)."""

    def __init__(self, stream: Any) -> None:
        self._stream = stream
        head = stream.read(3)
        self._pending = head[3:] if head.startswith(b"\xef\xbb\xbf") else head

    def readable(self) -> bool:
        return True

    def read(self, size: int | None = -1) -> bytes:
        if size is None or size < 0:
            out, self._pending = self._pending, b""
            return out + self._stream.read()
        if size == 0:
            return b""  # ijson probes the stream's type with read(0): keep what is pending
        if self._pending:
            out, self._pending = self._pending[:size], self._pending[size:]
            return out
        return self._stream.read(size)

    def readinto(self, buffer: Any) -> int:
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)


def _json_parts(
    storage: Storage, source: SourceSpec, sizes: PartSizes
) -> Iterator[tuple[pa.Table, pa.Table | None]]:
    """A JSON document's records in parts. ijson's C backend stops at an integer beyond int64
    (yajl's limit); the document is then parsed again with ijson's Python backend (slower,
    exact), and the parts already given are not given again."""
    import ijson

    given = 0
    try:
        for part in _json_parts_with(ijson.items, storage, source, sizes):
            yield part
            given += 1
    except _IntegerOverflow:
        python = ijson.get_backend("python").items
        for i, part in enumerate(_json_parts_with(python, storage, source, sizes)):
            if i >= given:
                yield part


class _IntegerOverflow(Exception):
    pass


def _json_parts_with(
    parse_items: Any, storage: Storage, source: SourceSpec, sizes: PartSizes
) -> Iterator[tuple[pa.Table, pa.Table | None]]:
    import ijson

    good: list[dict] = []
    bad: list[tuple[int, str, str]] = []
    count = emitted = index = 0
    with storage.open_input_stream(source.uri, compression=source.compression) as raw:
        items = parse_items(_SkipBom(raw), source.json_records_path, use_float=True)
        try:
            for item in items:
                reason: str | None
                if not isinstance(item, dict):
                    reason = f"record is a JSON {type(item).__name__}, not an object"
                else:
                    reason = too_deep(record_depth(item))
                if reason is None:
                    good.append(item)
                else:
                    bad.append((count, reason, json_text(item)))
                count += 1
                if count == sizes(index):
                    yield _json_part(good, bad)
                    good, bad, emitted, count, index = [], [], emitted + count, 0, index + 1
        except ijson.JSONError as exc:
            if "integer overflow" in str(exc):
                raise _IntegerOverflow() from exc
            raise SourceError(
                f"{source.uri}: malformed JSON after record {emitted + count}: {exc}"
            ) from exc
    if count or not emitted:
        yield _json_part(good, bad)


def _json_part(
    good: list[dict], bad: list[tuple[int, str, str]]
) -> tuple[pa.Table, pa.Table | None]:
    rejects = rejects_table([b[0] for b in bad], [b[1] for b in bad], [b[2] for b in bad])
    return table_from_records(good), rejects


def _csv_parts(
    storage: Storage, source: SourceSpec, sizes: PartSizes
) -> Iterator[tuple[pa.Table, pa.Table | None]]:
    assert source.csv is not None and source.columns is not None
    header_rows = 1 if source.csv.has_header else 0
    invalid: list[tuple[int, str, str]] = []  # (record index in the source, reason, text)

    def handler(row) -> str:
        # pyarrow numbers records from 1, the skipped header included, empty lines not.
        invalid.append(
            (
                row.number - 1 - header_rows,
                f"expected {row.expected_columns} fields, got {row.actual_columns}",
                row.text,
            )
        )
        return "skip"

    quote = source.csv.quote_char
    stream = storage.open_input_stream(source.uri, compression=source.compression)
    reader = pacsv.open_csv(
        stream,
        read_options=pacsv.ReadOptions(
            column_names=list(source.columns),
            skip_rows=header_rows,
            use_threads=False,
            block_size=4 << 20,
        ),
        parse_options=pacsv.ParseOptions(
            delimiter=source.csv.delimiter,
            quote_char=quote or False,
            double_quote=True,
            newlines_in_values=quote is not None,
            invalid_row_handler=handler,
        ),
        convert_options=pacsv.ConvertOptions(
            # Bytes, so that a value that is not UTF-8 rejects its record, not the file.
            column_types={n: pa.binary() for n in source.columns},
            strings_can_be_null=False,
            quoted_strings_can_be_null=False,
        ),
    )
    pending = pa.table({n: pa.array([], type=pa.string()) for n in source.columns})
    emitted = index = 0  # records (parsed or not) and parts already yielded
    next_record = 0  # the record index of the next parsed row
    with stream:
        for batch in reader:
            rows = _row_records(next_record, batch.num_rows, [i for i, _, _ in invalid])
            next_record = int(rows[-1]) + 1 if rows.size else next_record
            good, _, bad_rows, reasons, raws = split_invalid_utf8(
                pa.Table.from_batches([batch]), source.csv.delimiter
            )
            if bad_rows:
                invalid.extend(zip(rows[bad_rows].tolist(), reasons, raws, strict=True))
                invalid.sort(key=lambda row: row[0])
            pending = pa.concat_tables([pending, good])
            while True:
                # The part holds records emitted..end: the rejects among them, and as many
                # parsed rows as fill the rest. Rejects are reported in order, before the
                # rows after them, so the part is complete once enough rows are pending.
                end = emitted + sizes(index)
                bad = [row for row in invalid if row[0] < end]
                take = end - emitted - len(bad)
                if pending.num_rows < take:
                    break
                yield _csv_part(pending.slice(0, take), bad, emitted)
                invalid[:] = invalid[len(bad) :]
                pending, emitted, index = pending.slice(take), end, index + 1
        if pending.num_rows or invalid or not index:
            yield _csv_part(pending, list(invalid), emitted)


def _row_records(start: int, rows: int, rejected: list[int]) -> np.ndarray:
    """Record indices of ``rows`` parsed rows from record ``start`` on, skipping the records
    rejected by the parser (which never become rows)."""
    skip = np.asarray([i for i in rejected if i >= start], dtype=np.int64)
    return np.setdiff1d(np.arange(start, start + rows + skip.size, dtype=np.int64), skip)[:rows]


def _csv_part(
    table: pa.Table, invalid: list[tuple[int, str, str]], emitted: int
) -> tuple[pa.Table, pa.Table | None]:
    records = [index - emitted for index, _, _ in invalid]  # indices within this part
    return table, rejects_table(records, [r for _, r, _ in invalid], [t for _, _, t in invalid])


def _jsonl_parts(
    storage: Storage, source: SourceSpec, sizes: PartSizes
) -> Iterator[tuple[pa.Table, pa.Table | None]]:
    lines: list[bytes] = []
    first = True
    index = 0
    with storage.open_lines(source.uri, compression=source.compression) as buffered:
        for line in buffered:
            if first:
                line, first = line.removeprefix(b"\xef\xbb\xbf"), False
            if not line.strip():
                continue
            lines.append(line)
            if len(lines) == sizes(index):
                yield _jsonl_part(lines)
                lines, index = [], index + 1
    if lines or not index:
        yield _jsonl_part(lines)


def _jsonl_part(lines: list[bytes]) -> tuple[pa.Table, pa.Table | None]:
    data = b"".join(ln if ln.endswith(b"\n") else ln + b"\n" for ln in lines)
    chunk = Chunk(index=0, chunks_in_plan=1, kind="bytes", uri="staging", end=len(data))
    parsed = read_jsonl(data, chunk)
    return parsed.table, parsed.rejects
