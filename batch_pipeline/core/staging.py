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
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.csv as pacsv

from batch_pipeline.core.errors import SourceError
from batch_pipeline.core.models import Chunk, SourceSpec, join_uri
from batch_pipeline.core.readers import _read_jsonl, _rejects
from batch_pipeline.core.storage import Storage
from batch_pipeline.core.tables import table_from_records

MARKER = "_staged.json"
EMPTY_REJECTS = pa.table(
    {
        "_record": pa.array([], type=pa.int64()),
        "_reason": pa.array([], type=pa.string()),
        "_raw": pa.array([], type=pa.string()),
    }
)


@dataclass(frozen=True)
class StagedPart:
    uri: str
    records: int


def part_uri(prefix: str, index: int) -> str:
    return join_uri(prefix, f"part-{index:05d}.parquet")


def rejects_uri(part: str) -> str:
    return part.removesuffix(".parquet") + ".rejects.parquet"


def stage_source(
    storage: Storage, source: SourceSpec, prefix: str, part_records: int
) -> list[StagedPart]:
    """Stream ``source`` into Parquet parts under ``prefix``; returns the parts in order."""
    marker = join_uri(prefix, MARKER)
    if storage.exists(marker):
        state = json.loads(storage.read_bytes(marker))
        if (
            state.get("fingerprint") == source.info.fingerprint
            and state.get("part_records") == part_records
        ):
            return [StagedPart(**p) for p in state["parts"]]
    parts: list[StagedPart] = []
    for index, (table, rejects) in enumerate(_parts(storage, source, part_records)):
        uri = part_uri(prefix, index)
        storage.write_parquet(table, uri)
        storage.write_parquet(rejects if rejects is not None else EMPTY_REJECTS, rejects_uri(uri))
        parts.append(StagedPart(uri, table.num_rows + _rows(rejects)))
    state = {
        "source": source.uri,
        "fingerprint": source.info.fingerprint,
        "part_records": part_records,
        "parts": [p.__dict__ for p in parts],
    }
    storage.write_bytes(marker, json.dumps(state, indent=1).encode())
    return parts


def _rows(table: pa.Table | None) -> int:
    return table.num_rows if table is not None else 0


def _parts(
    storage: Storage, source: SourceSpec, part_records: int
) -> Iterator[tuple[pa.Table, pa.Table | None]]:
    if source.format == "json":
        yield from _json_parts(storage, source, part_records)
    elif source.format == "csv":
        yield from _csv_parts(storage, source, part_records)
    elif source.format == "jsonl":
        yield from _jsonl_parts(storage, source, part_records)
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

    def read(self, size: int = -1) -> bytes:
        if self._pending:
            out, self._pending = self._pending, b""
            if size is None or size < 0:
                return out + self._stream.read()
            return out + self._stream.read(max(size - len(out), 0)) if size > len(out) else out
        return self._stream.read() if size is None or size < 0 else self._stream.read(size)


def _json_parts(
    storage: Storage, source: SourceSpec, part_records: int
) -> Iterator[tuple[pa.Table, pa.Table | None]]:
    import ijson

    good: list[dict] = []
    bad: list[tuple[int, str, str]] = []
    count = 0
    with storage.open_input_stream(source.uri, compression=source.compression) as raw:
        items = ijson.items(_SkipBom(raw), source.json_records_path, use_float=True)
        try:
            for item in items:
                if isinstance(item, dict):
                    good.append(item)
                else:
                    bad.append(
                        (
                            count,
                            f"record is a JSON {type(item).__name__}, not an object",
                            json.dumps(item, default=str),
                        )
                    )
                count += 1
                if count == part_records:
                    yield _json_part(good, bad)
                    good, bad, count = [], [], 0
        except ijson.JSONError as exc:
            raise SourceError(
                f"{source.uri}: malformed JSON after record {count} of the current part: {exc}"
            ) from exc
    if count or not good:
        yield _json_part(good, bad)


def _json_part(
    good: list[dict], bad: list[tuple[int, str, str]]
) -> tuple[pa.Table, pa.Table | None]:
    rejects = _rejects([b[0] for b in bad], [b[1] for b in bad], [b[2] for b in bad])
    return table_from_records(good), rejects


def _csv_parts(
    storage: Storage, source: SourceSpec, part_records: int
) -> Iterator[tuple[pa.Table, pa.Table | None]]:
    assert source.csv is not None and source.columns is not None
    invalid: list[tuple[int, str, str]] = []

    def handler(row) -> str:
        invalid.append(
            (
                row.number,
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
            skip_rows=1 if source.csv.has_header else 0,
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
            column_types={n: pa.string() for n in source.columns},
            strings_can_be_null=False,
            quoted_strings_can_be_null=False,
        ),
    )
    pending: list[pa.RecordBatch] = []
    pending_rows = 0
    emitted = 0  # records (parsed or not) in parts already yielded
    with stream:
        for batch in reader:
            pending.append(batch)
            pending_rows += batch.num_rows
            while pending_rows + len(invalid) >= part_records:
                table = pa.Table.from_batches(pending, schema=reader.schema)
                take = max(part_records - len(invalid), 0)
                yield _csv_part(table.slice(0, take), invalid, emitted)
                emitted += take + len(invalid)
                invalid.clear()
                rest = table.slice(take)
                pending, pending_rows = rest.to_batches(), rest.num_rows
        table = pa.Table.from_batches(pending, schema=reader.schema)
        if table.num_rows or invalid or not emitted:
            yield _csv_part(table, invalid, emitted)


def _csv_part(
    table: pa.Table, invalid: list[tuple[int, str, str]], emitted: int
) -> tuple[pa.Table, pa.Table | None]:
    # pyarrow numbers rows from 1 across the stream; make them indices within this part.
    records = [max(number - 1 - emitted, 0) for number, _, _ in invalid]
    return table, _rejects(records, [r for _, r, _ in invalid], [t for _, _, t in invalid])


def _jsonl_parts(
    storage: Storage, source: SourceSpec, part_records: int
) -> Iterator[tuple[pa.Table, pa.Table | None]]:
    lines: list[bytes] = []
    first = True
    with storage.open_lines(source.uri, compression=source.compression) as buffered:
        for line in buffered:
            if first:
                line, first = line.removeprefix(b"\xef\xbb\xbf"), False
            if not line.strip():
                continue
            lines.append(line)
            if len(lines) == part_records:
                yield _jsonl_part(lines)
                lines = []
    if lines or first:
        yield _jsonl_part(lines)


def _jsonl_part(lines: list[bytes]) -> tuple[pa.Table, pa.Table | None]:
    data = b"".join(ln if ln.endswith(b"\n") else ln + b"\n" for ln in lines)
    chunk = Chunk(index=0, count=1, kind="bytes", uri="staging", end=len(data))
    parsed = _read_jsonl(data, chunk)
    return parsed.table, parsed.rejects
