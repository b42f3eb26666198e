"""Read a JSONL chunk's bytes into a table, with its parse rejects.

pyarrow's JSON reader reads the chunk when it keeps every value: strings it read as timestamps
are read again as strings (JSON has no timestamp type), and a chunk where it may have rounded
an int (a double of 2**53 or more), or that may be nested deep enough to crash it, is parsed
line by line instead and built with ``tables``. A malformed line, a line that is not an
object, invalid UTF-8 or a record nested deeper than Parquet reads is a parse reject with its
reason and raw text; the rest of the chunk is kept.
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pajson

from batch_pipeline.core.columns import (
    EXACT_FLOAT_INT,
    PARQUET_MAX_DEPTH,
    contains,
    record_depth,
    schema_depth,
    storable,
    table_from_records,
    text_depth,
    too_deep,
)
from batch_pipeline.core.common.models import Chunk
from batch_pipeline.core.inputs.boundaries import LINE_BREAK, line_break_positions
from batch_pipeline.core.inputs.readers.chunk_data import MIN_BLOCK, ChunkData, rejects_table


def read_jsonl(data: bytes, chunk: Chunk) -> ChunkData:
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
        rejects=rejects_table(bad, reasons, raws),
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
