"""Read a CSV chunk's bytes into a table of text columns, with its parse rejects.

CSV values are read as text, as Step Functions' CSV reader does: nothing is lost to type
guessing ("007" stays "007") and every chunk of a file has the same schema. Typing is the job of
a processor (``validate`` declares column types). A row with the wrong number of fields, or
with a value that is not UTF-8, is a parse reject with its reason and raw text; the rest of the
chunk is kept. A chunk planned without a scan must not end inside a quoted field.
"""

from __future__ import annotations

import io
import re

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv

from batch_pipeline.core.common.errors import ChunkReadError
from batch_pipeline.core.common.models import Chunk, SourceSpec
from batch_pipeline.core.inputs.boundaries import (
    AmbiguousQuotes,
    RecordScanner,
    count_line_breaks,
    record_line_offsets,
)
from batch_pipeline.core.inputs.readers.chunk_data import MIN_BLOCK, ChunkData, rejects_table

_CONTENT = re.compile(rb"[^\r\n]")


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
) -> tuple[pa.Table, list[tuple[int | None, str, str]]]:
    """The chunk's table, and each row of the wrong width: (number, reason, text)."""
    invalid: list[tuple[int | None, str, str]] = []

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


def read_csv_bytes(
    data: bytes, source: SourceSpec, chunk: Chunk, use_threads: bool = True
) -> ChunkData:
    """``data``, the bytes of ``chunk`` (whole records), as its table and parse rejects: what
    ``read_chunk`` gives for a CSV byte range, and for bytes a caller read itself (a slice of a
    chunk, see ``processing.slices``). ``use_threads``: Arrow's parser in its thread pool
    (False when the caller parses several pieces at once in threads of its own)."""
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
        table, invalid = _parse_csv(data, source, pa.string(), use_threads=use_threads)
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
    rejects = rejects_table(
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
    the rows of the wrong width, as ``read_csv_bytes`` does)."""
    assert source.csv is not None
    table, invalid = _parse_csv(data, source, pa.binary(), use_threads=False)
    width_bad = [int(number) - 1 for number, *_ in invalid]  # type: ignore[arg-type]
    total = table.num_rows + len(width_bad)
    row_records = np.setdiff1d(np.arange(total, dtype=np.int64), np.asarray(width_bad, np.int64))
    good, keep, bad, reasons, raws = split_invalid_utf8(table, source.csv.delimiter)
    rejects = rejects_table(
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
