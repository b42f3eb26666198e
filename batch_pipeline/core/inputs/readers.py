"""Read one chunk's slice straight from storage into an Arrow table.

CSV and JSONL chunks are one range read (a seek locally, a range GET on S3) parsed by pyarrow;
Parquet chunks read their row groups (or staged parts); Excel chunks stream their sheet rows.

CSV values are read as text, as Step Functions' CSV reader does: nothing is lost to type
guessing ("007" stays "007") and every chunk of a file has the same schema. Typing is the job of
a processor (``validate`` declares column types).

Records that cannot be parsed (a CSV row with the wrong number of fields, invalid UTF-8, a
malformed JSON line) are not fatal: they come back as parse rejects with a reason and their raw
text, and the rest of the chunk is kept.
"""

from __future__ import annotations

import io
import json
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.json as pajson
import pyarrow.parquet as pq

from batch_pipeline.core.columns.tables import table_from_records
from batch_pipeline.core.columns.types import (
    EXACT_FLOAT_INT,
    PARQUET_MAX_DEPTH,
    concat_tables,
    contains,
    record_depth,
    schema_depth,
    storable,
    text_depth,
    too_deep,
)
from batch_pipeline.core.common.errors import ChunkReadError, SourceError
from batch_pipeline.core.common.models import Chunk, SourceSpec
from batch_pipeline.core.inputs.boundaries import (
    LINE_BREAK,
    AmbiguousQuotes,
    RecordScanner,
    count_line_breaks,
    line_break_positions,
    record_line_offsets,
)
from batch_pipeline.core.inputs.excel import read_sheet_ranges
from batch_pipeline.core.stores.storage import Storage

MIN_BLOCK = 1 << 20

_CONTENT = re.compile(rb"[^\r\n]")


@dataclass
class ChunkData:
    """A chunk's parsed records and what could not be parsed.

    ``records`` maps each table row to its record index in the chunk (None: row i is record i).
    ``rejects`` has ``_record``, ``_reason`` and ``_raw`` for records that did not parse.
    ``lines`` gives the 1-based line (text), sheet row (Excel) or record number (Parquet) of
    record indices, or None when the plan did not learn line numbers.
    """

    table: pa.Table
    bytes_read: int
    lines: Callable[[np.ndarray], np.ndarray | None]
    records: np.ndarray | None = None
    rejects: pa.Table | None = None

    @property
    def records_in(self) -> int:
        return self.table.num_rows + (self.rejects.num_rows if self.rejects is not None else 0)


def _no_lines(_: np.ndarray) -> None:
    return None


def offset_lines(first: int | None) -> Callable[[np.ndarray], np.ndarray | None]:
    if first is None:
        return _no_lines
    return lambda idx: np.asarray(idx, dtype=np.int64) + first


def _rejects(records: list[int], reasons: list[str], raws: list[str | None]) -> pa.Table | None:
    if not records:
        return None
    return pa.table(
        {
            "_record": pa.array(records, type=pa.int64()),
            "_reason": pa.array(reasons, type=pa.string()),
            "_raw": pa.array(raws, type=pa.string()),
        }
    )


def read_chunk(storage: Storage, source: SourceSpec, chunk: Chunk, check: bool = True) -> ChunkData:
    """Read ``chunk`` of ``source``. Raises ChunkReadError naming the chunk when the slice as a
    whole cannot be read (missing object, not the expected format). ``check``: first make sure
    the object is still the version planned (a caller that just did may skip it)."""
    if check and chunk.kind in ("bytes", "row_groups", "sheets"):
        _check_unchanged(storage, source, chunk)
    try:
        if chunk.kind == "empty":
            names = list(source.columns or ())
            table = pa.table({n: pa.array([], type=pa.string()) for n in names})
            return ChunkData(table, 0, _no_lines)
        if chunk.kind == "bytes":
            data = storage.read_range(chunk.uri, chunk.start, chunk.end)
            if len(data) != chunk.end - chunk.start:
                raise ChunkReadError(
                    f"{chunk.describe()}: read {len(data)} bytes, expected "
                    f"{chunk.end - chunk.start}; the object changed after planning"
                )
            if source.format == "csv":
                return _read_csv(data, source, chunk)
            return _read_jsonl(data, chunk)
        if chunk.kind == "row_groups":
            return _read_row_groups(storage, chunk)
        if chunk.kind == "parts":
            return _read_parts(storage, chunk)
        if chunk.kind == "sheets":
            table, rows = read_sheet_ranges(storage, chunk.uri, chunk.sheets)
            row_numbers = np.asarray(rows, dtype=np.int64)
            return ChunkData(table, 0, lambda idx: row_numbers[np.asarray(idx, dtype=np.int64)])
    except (ChunkReadError, SourceError):
        raise
    except (OSError, pa.ArrowException) as exc:
        raise ChunkReadError(f"{chunk.describe()}: {exc}") from exc
    raise ChunkReadError(f"{chunk.describe()}: unknown chunk kind {chunk.kind!r}")


def _check_unchanged(storage: Storage, source: SourceSpec, chunk: Chunk) -> None:
    """The object is still the version that was planned (its ETag, or size and mtime): a batch
    must not mix two versions of its source. One HEAD (or stat) per chunk."""
    try:
        current = storage.stat(chunk.uri).fingerprint
    except SourceError as exc:  # gone, or no longer readable
        raise SourceError(f"{chunk.describe()}: {exc}") from exc
    except Exception as exc:  # the HEAD itself failed (classify tells transient from permanent)
        raise ChunkReadError(f"{chunk.describe()}: {exc}") from exc
    if current != source.info.fingerprint:
        raise ChunkReadError(
            f"{chunk.describe()}: {chunk.uri} changed after the batch was planned (fingerprint "
            f"{source.info.fingerprint}, now {current}); run the new version as its own batch"
        )


# CSV -------------------------------------------------------------------------------------------


def _csv_options(
    source: SourceSpec, column_type: pa.DataType, use_threads: bool, block_size: int, handler
) -> tuple[pacsv.ReadOptions, pacsv.ParseOptions, pacsv.ConvertOptions]:
    assert source.csv is not None and source.columns is not None
    quote = source.csv.quote_char
    read = pacsv.ReadOptions(
        column_names=list(source.columns), use_threads=use_threads, block_size=block_size
    )
    parse = pacsv.ParseOptions(
        delimiter=source.csv.delimiter,
        quote_char=quote or False,
        double_quote=True,
        newlines_in_values=quote is not None,
        invalid_row_handler=handler,
    )
    convert = pacsv.ConvertOptions(
        column_types={name: column_type for name in source.columns},
        strings_can_be_null=False,
        quoted_strings_can_be_null=False,
    )
    return read, parse, convert


def _parse_csv(
    data: bytes, source: SourceSpec, column_type: pa.DataType, use_threads: bool
) -> tuple[pa.Table, list[tuple[int | None, str]]]:
    invalid: list[tuple[int | None, str]] = []

    def handler(row) -> str:
        invalid.append(
            (
                row.number,
                f"expected {row.expected_columns} fields, got {row.actual_columns}",
                row.text,
            )
        )
        return "skip"

    block = MIN_BLOCK * 4
    while True:
        invalid.clear()
        options = _csv_options(source, column_type, use_threads, block, handler)
        try:
            return pacsv.read_csv(io.BytesIO(data), *options), invalid
        except pa.ArrowInvalid as exc:
            # A record longer than a block: read the chunk as one block.
            if "straddling" in str(exc) and block <= len(data):
                block = len(data) + 1
                continue
            raise


def _read_csv(data: bytes, source: SourceSpec, chunk: Chunk) -> ChunkData:
    assert source.csv is not None and source.columns is not None
    names = list(source.columns)
    quote, delimiter = source.csv.quote_char, source.csv.delimiter

    parsed: list[int] = []  # how many records the chunk holds, once parsed

    def lines(idx: np.ndarray) -> np.ndarray | None:
        if chunk.first_line is None:
            return None
        if parsed and one_record_per_line(data, parsed[0]):
            return np.asarray(idx, dtype=np.int64) + chunk.first_line
        return record_line_offsets(data, quote, delimiter, np.asarray(idx)) + chunk.first_line

    if _CONTENT.search(data) is None:  # only line breaks (strip would copy the whole chunk)
        table = pa.table({n: pa.array([], type=pa.string()) for n in names})
        return ChunkData(table, len(data), lines)
    if chunk.first_line is None and quote is not None:
        check_not_cut_in_quotes(data, quote, delimiter, chunk)
    try:
        table, invalid = _parse_csv(data, source, pa.string(), use_threads=True)
    except pa.ArrowInvalid as exc:
        if "UTF8" not in str(exc):
            raise ChunkReadError(f"{chunk.describe()}: {exc}") from exc
        return _read_csv_bad_utf8(data, source, chunk, lines)
    if not invalid:
        parsed.append(table.num_rows)
        return ChunkData(table, len(data), lines)
    # Rows with the wrong number of fields were skipped; read again on one thread, where
    # pyarrow numbers them, to know which records they were.
    table, invalid_numbered = _parse_csv(data, source, pa.string(), use_threads=False)
    bad = [int(number) - 1 for number, *_ in invalid_numbered]  # type: ignore[arg-type]
    total = table.num_rows + len(bad)
    parsed.append(total)
    records = np.setdiff1d(np.arange(total, dtype=np.int64), np.asarray(bad, dtype=np.int64))
    rejects = _rejects(
        bad, [r for _, r, _ in invalid_numbered], [t for _, _, t in invalid_numbered]
    )
    return ChunkData(table, len(data), lines, records=records, rejects=rejects)


def check_not_cut_in_quotes(data: bytes, quote: str, delimiter: str | None, chunk: Chunk) -> None:
    """A chunk planned without a scan (``scan: false``: its cuts are estimated byte offsets
    moved to the next line break, blind to quotes) must not end inside a quoted field, where a
    cut at a quoted line break would split a record in two and parse both halves as records.
    Raises a permanent ChunkReadError naming the chunk when it does. The chunk starts where its
    planner cut, so a chunk that starts inside quotes cannot tell (its quotes may look
    ambiguous, and the check is skipped): the chunk before it, which ended there, fails."""
    scanner = RecordScanner(0, quote, delimiter)
    try:
        scanner.feed(data)
    except AmbiguousQuotes:
        return  # a quote inside an unquoted field: parity cannot tell
    if scanner.inside_quotes:
        raise ChunkReadError(
            f"{chunk.describe()}: cut inside a quoted field (a line break inside quotes): "
            "plan with scan: true"
        )


def one_record_per_line(data: bytes, records: int) -> bool:
    """Whether each line of ``data`` is exactly one of its ``records`` records, so that record
    ``i`` is on line ``i`` of the chunk. Quoted line breaks and blank lines only ever add lines,
    so the chunk's line count equals its record count exactly when it has neither. Lines end at
    ``\\n``, ``\\r\\n`` or a lone ``\\r``."""
    breaks = count_line_breaks(data)
    last = 0 if not data or data.endswith((b"\n", b"\r")) else 1
    return breaks + last == records


def _read_csv_bad_utf8(data: bytes, source: SourceSpec, chunk: Chunk, lines) -> ChunkData:
    """Some values are not UTF-8: read as bytes, reject the records that hold such values (and
    the rows of the wrong width, as ``_read_csv`` does)."""
    assert source.csv is not None
    table, invalid = _parse_csv(data, source, pa.binary(), use_threads=False)
    width_bad = [int(number) - 1 for number, *_ in invalid]  # type: ignore[arg-type]
    total = table.num_rows + len(width_bad)
    row_records = np.setdiff1d(np.arange(total, dtype=np.int64), np.asarray(width_bad, np.int64))
    good, keep, bad, reasons, raws = split_invalid_utf8(table, source.csv.delimiter)
    rejects = _rejects(
        width_bad + row_records[bad].tolist(),
        [r for _, r, _ in invalid] + reasons,
        [t for _, _, t in invalid] + raws,
    )
    return ChunkData(good, len(data), lines, records=row_records[keep], rejects=rejects)


def split_invalid_utf8(
    table: pa.Table, delimiter: str
) -> tuple[pa.Table, np.ndarray, list[int], list[str], list[str]]:
    """Split a table of binary columns into the rows whose values are all UTF-8 (as text
    columns) and the rest. Returns (good rows, their indices, bad row indices, reasons, raw
    text of the bad rows). Columns that are valid UTF-8 throughout are checked in one cast."""
    bad_reason: dict[int, str] = {}
    text: dict[str, pa.ChunkedArray] = {}
    for name in table.column_names:
        column = table.column(name)
        try:
            text[name] = column.cast(pa.string())
            continue
        except pa.ArrowInvalid:
            pass
        for i, value in enumerate(column.to_pylist()):
            if i in bad_reason or value is None:
                continue
            try:
                value.decode("utf-8")
            except UnicodeDecodeError:
                bad_reason[i] = f"invalid UTF-8 in column {name}"
    bad = sorted(bad_reason)
    raws = [
        delimiter.join(
            (table.column(n)[i].as_py() or b"").decode("utf-8", errors="backslashreplace")
            for n in table.column_names
        )
        for i in bad
    ]
    keep = np.setdiff1d(np.arange(table.num_rows, dtype=np.int64), np.asarray(bad, np.int64))
    if not bad:  # every column cast cleanly
        good = pa.table([text[n] for n in table.column_names], names=table.column_names)
    else:
        good = table.take(pa.array(keep))
        good = good.cast(pa.schema([(n, pa.string()) for n in table.column_names]))
    return good, keep, bad, [bad_reason[i] for i in bad], raws


# JSONL -----------------------------------------------------------------------------------------


def _read_jsonl(data: bytes, chunk: Chunk) -> ChunkData:
    nonblank: list[int] | None = None

    def record_lines() -> list[int]:
        nonlocal nonblank
        if nonblank is None:
            nonblank = [i for i, ln in enumerate(LINE_BREAK.split(data)) if ln.strip()]
        return nonblank

    def lines(idx: np.ndarray) -> np.ndarray | None:
        if chunk.first_line is None:
            return None
        return np.asarray(record_lines(), dtype=np.int64)[np.asarray(idx)] + chunk.first_line

    if not data.strip():
        return ChunkData(pa.table({}), len(data), lines)
    newlines = line_break_positions(np.frombuffer(data, dtype=np.uint8))
    longest = int(np.diff(newlines, prepend=-1).max()) if newlines.size else len(data)
    longest = max(longest, len(data) - (int(newlines[-1]) + 1 if newlines.size else 0))
    options = pajson.ReadOptions(use_threads=True, block_size=max(MIN_BLOCK, longest + 2))
    if longest < 2 * PYARROW_SAFE_DEPTH or not _deeply_nested(data, newlines):
        table = _parse_json_lines(data, options)
        if table is not None:
            return ChunkData(table, len(data), lines)
    # Some line is malformed or nested too deep, or a field changes type between lines, or
    # pyarrow would change a value: parse line by line.
    good: list[dict] = []
    records: list[int] = []
    bad: list[int] = []
    reasons: list[str] = []
    raws: list[str] = []
    index = 0
    for line in LINE_BREAK.split(data):
        if not line.strip():
            continue
        reason = None
        try:
            value = json.loads(line)
            if not isinstance(value, dict):
                raise ValueError(f"a JSON {type(value).__name__}, not an object")
            reason = too_deep(record_depth(value))
        except UnicodeDecodeError as exc:
            reason = f"invalid UTF-8 at byte {exc.start} of the line"
        except ValueError as exc:
            reason = f"malformed JSON line: {exc}"
        except RecursionError:  # deeper than Python's json parses
            reason = _deep_line_reason(line)
        if reason is None:
            good.append(value)
            records.append(index)
        else:
            bad.append(index)
            reasons.append(reason)
            raws.append(line.decode("utf-8", errors="backslashreplace"))
        index += 1
    table = None
    if good:
        joined = b"\n".join(json.dumps(v).encode() for v in good)
        table = _parse_json_lines(joined, options)
    if table is None:
        table = table_from_records(good)  # the values' own kinds decide (see ``tables``)
    return ChunkData(
        table,
        len(data),
        lines,
        records=np.asarray(records, dtype=np.int64),
        rejects=_rejects(bad, reasons, raws),
    )


PYARROW_SAFE_DEPTH = 1000  # pyarrow's JSON reader crashes (stack overflow) on ~15,000 levels


def _parse_json_lines(data: bytes, options: pajson.ReadOptions) -> pa.Table | None:
    """JSON lines read by pyarrow, or None when pyarrow cannot read them or would change a
    value: an int beyond int64, or an int beside floats that a double cannot hold, becomes a
    double; a record nested deeper than Parquet reads. Strings that pyarrow reads as
    timestamps (ISO 8601 text, also inside objects and arrays) are read again as strings: JSON
    has no timestamp type, and the text must come out as it went in."""
    try:
        table = pajson.read_json(io.BytesIO(data), read_options=options)
        if schema_depth(table.schema) > PARQUET_MAX_DEPTH:
            return None
        if _has(table.schema, pa.types.is_floating) and _large_floats(table):
            return None  # maybe an int that pyarrow made a double: parse it exactly
        if _has(table.schema, pa.types.is_timestamp):
            explicit = pa.schema([f.with_type(_no_timestamps(f.type)) for f in table.schema])
            parse = pajson.ParseOptions(explicit_schema=explicit, unexpected_field_behavior="infer")
            table = pajson.read_json(io.BytesIO(data), read_options=options, parse_options=parse)
        table.validate(full=True)  # pyarrow's JSON reader lets invalid UTF-8 into strings
    except pa.ArrowInvalid:
        return None
    return storable(table)


def _large_floats(table: pa.Table) -> bool:
    """Whether a float (at any depth) is 2**53 or more in magnitude: only such a double can
    be an int that pyarrow's reader rounded (ints below it are exact, an int beyond int64
    becomes a double too)."""
    stack: list[pa.Array | pa.ChunkedArray] = list(table.columns)
    while stack:
        column = stack.pop()
        kind = column.type
        if pa.types.is_floating(kind):
            top = pc.max(pc.abs(column)).as_py()
            if top is not None and top >= EXACT_FLOAT_INT:
                return True
        elif pa.types.is_struct(kind) or pa.types.is_list(kind):
            chunks = column.chunks if isinstance(column, pa.ChunkedArray) else [column]
            for chunk in chunks:
                if pa.types.is_struct(kind):
                    stack.extend(chunk.field(i) for i in range(kind.num_fields))
                else:
                    stack.append(chunk.flatten())
    return False


def _has(schema: pa.Schema, test: Callable[[pa.DataType], bool]) -> bool:
    return any(contains(f.type, test) for f in schema)


def _no_timestamps(kind: pa.DataType) -> pa.DataType:
    if pa.types.is_timestamp(kind):
        return pa.string()
    if pa.types.is_struct(kind):
        return pa.struct([f.with_type(_no_timestamps(f.type)) for f in kind])
    if pa.types.is_list(kind):
        return pa.list_(kind.value_field.with_type(_no_timestamps(kind.value_type)))
    return kind


def _deeply_nested(data: bytes, newlines: np.ndarray) -> bool:
    """Whether some line may open more than PYARROW_SAFE_DEPTH brackets at once (counting
    brackets inside strings too: it may say yes wrongly, never no). Only long lines can."""
    arr = np.frombuffer(data, dtype=np.uint8)
    starts = np.concatenate([[0], newlines + 1])
    ends = np.concatenate([newlines, [len(data)]])
    for i in np.flatnonzero(ends - starts > 2 * PYARROW_SAFE_DEPTH):
        line = arr[starts[i] : ends[i]]
        opens = (line == ord("{")) | (line == ord("["))
        if np.count_nonzero(opens) <= PYARROW_SAFE_DEPTH:
            continue
        closes = (line == ord("}")) | (line == ord("]"))
        if np.cumsum(opens.astype(np.int32) - closes).max() > PYARROW_SAFE_DEPTH:
            return True
    return False


def _deep_line_reason(line: bytes) -> str:
    try:
        return too_deep(text_depth(line)) or "malformed JSON line: nested too deep to parse"
    except Exception as exc:  # ijson's errors for malformed text
        return f"malformed JSON line: {exc}"


# Parquet ---------------------------------------------------------------------------------------


def _read_row_groups(storage: Storage, chunk: Chunk) -> ChunkData:
    with storage.open_input_file(chunk.uri) as f:
        parquet = pq.ParquetFile(f)
        groups = list(range(chunk.start, chunk.end))
        table = parquet.read_row_groups(groups, use_threads=True)
        meta = parquet.metadata
        size = sum(
            meta.row_group(g).column(c).total_compressed_size
            for g in groups
            for c in range(meta.num_columns)
        )
    return ChunkData(table, size, offset_lines(chunk.first_line))


def part_records(table: pa.Table, rejects: pa.Table | None) -> tuple[np.ndarray, pa.Table]:
    """The record indices of a staged part's rows, and its rejects with theirs in ``_record``
    (kept distinct from the rows': a part written by another build may number them oddly)."""
    if rejects is None:
        rejects = pa.table({"_record": pa.array([], pa.int64()), "_reason": pa.array(
            [], pa.string()), "_raw": pa.array([], pa.string())})  # fmt: skip
    total = table.num_rows + rejects.num_rows
    bad = np.asarray(rejects.column("_record").to_numpy(), dtype=np.int64)
    if np.unique(bad).size != rejects.num_rows or (bad >= total).any() or (bad < 0).any():
        bad = np.arange(table.num_rows, total, dtype=np.int64)
        rejects = rejects.set_column(0, "_record", pa.array(bad))
    good = np.setdiff1d(np.arange(total, dtype=np.int64), bad)
    return good, rejects


def _read_parts(storage: Storage, chunk: Chunk) -> ChunkData:
    """Staged parts, each with its rejects file (see ``staging``)."""
    pairs: list[tuple[pa.Table, pa.Table | None]] = []
    size = 0
    for uri in chunk.parts:
        with storage.open_input_file(uri) as f:
            size += f.size()
            table = pq.read_table(f)
        with storage.open_input_file(uri.removesuffix(".parquet") + ".rejects.parquet") as f:
            size += f.size()
            pairs.append((table, pq.read_table(f)))
    return combine_parts(pairs, size, chunk.first_line)


def combine_parts(
    pairs: Iterable[tuple[pa.Table, pa.Table | None]], size: int, first_line: int | None
) -> ChunkData:
    """One ChunkData from consecutive staged parts (rows and rejects of each)."""
    tables: list[pa.Table] = []
    rejects: list[pa.Table] = []
    records: list[np.ndarray] = []
    offset = 0
    for table, bad in pairs:
        good, bad = part_records(table, bad)
        tables.append(table)
        records.append(good + offset)
        shifted = pa.array(bad.column("_record").to_numpy() + offset, pa.int64())
        rejects.append(bad.set_column(0, "_record", shifted))
        offset += table.num_rows + bad.num_rows
    table = concat_tables(tables)  # parts staged apart may disagree on a column's type
    all_rejects = pa.concat_tables(rejects) if rejects else None
    return ChunkData(
        table,
        size,
        offset_lines(first_line),
        records=np.concatenate(records) if records else None,
        rejects=all_rejects if all_rejects is not None and all_rejects.num_rows else None,
    )
