"""Inspect a source before any work: it exists, its format is known, its options make sense.

``inspect_source`` returns a SourceSpec (size, ETag or mtime, header, row groups, sheets, a
record-size sample) or raises SourceError/ConfigError with a message that names the source.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import re
from typing import Any

import numpy as np

from batch_pipeline.core.columns import unique_names
from batch_pipeline.core.common.errors import ConfigError, EmptySourceError, SourceError
from batch_pipeline.core.common.models import FORMATS, CsvOptions, ObjectInfo, SourceSpec
from batch_pipeline.core.common.settings import Batch
from batch_pipeline.core.inputs.boundaries import (
    LINE_BREAK,
    AmbiguousQuotes,
    RecordScanner,
    UnclosedQuote,
    exact_csv_record_ends,
)
from batch_pipeline.core.stores.storage import Storage

BOM = b"\xef\xbb\xbf"
HEAD_BYTES = 1 << 20
MAX_HEADER_BYTES = 64 << 20

EXTENSIONS = {
    ".csv": "csv",
    ".tsv": "csv",
    ".txt": "csv",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "json",
    ".parquet": "parquet",
    ".pq": "parquet",
    ".xlsx": "excel",
    ".xlsm": "excel",
}
COMPRESSIONS = {".gz": "gzip", ".gzip": "gzip"}
DELIMITERS = {
    ",": ",",
    "comma": ",",
    ";": ";",
    "semicolon": ";",
    "|": "|",
    "pipe": "|",
    "\t": "\t",
    "\\t": "\t",
    "tab": "\t",
    " ": " ",
    "space": " ",
}


def detect_format(
    uri: str, fmt: str = Batch.format.default, compression: str = Batch.compression.default
) -> tuple[str, str | None]:
    """The format and compression of ``uri``: given explicitly, or from its extension."""
    name = uri.rsplit("/", 1)[-1].lower()
    detected_compression: str | None = None
    for ext, comp in COMPRESSIONS.items():
        if name.endswith(ext):
            detected_compression = comp
            name = name[: -len(ext)]
    if compression == "auto":
        comp_out = detected_compression
    elif compression in ("none", "", None):
        comp_out = None
    elif compression == "gzip":
        comp_out = "gzip"
    else:
        raise ConfigError(f"Unknown compression {compression!r} for {uri}: use auto, none or gzip")
    if fmt == "auto":
        ext = "." + name.rsplit(".", 1)[-1] if "." in name else ""
        if ext not in EXTENSIONS:
            raise ConfigError(
                f"Cannot tell the format of {uri} from its extension {ext or '(none)'!r}: "
                f"set format to one of {', '.join(FORMATS)}"
            )
        fmt_out = EXTENSIONS[ext]
    elif fmt in FORMATS:
        fmt_out = fmt
    else:
        raise ConfigError(
            f"Unknown format {fmt!r} for {uri}: use one of auto, {', '.join(FORMATS)}"
        )
    if comp_out and fmt_out in ("parquet", "excel"):
        raise ConfigError(f"{uri}: {fmt_out} files carry their own compression; gzip is not read")
    return fmt_out, comp_out


def resolve_csv_options(uri: str, options: CsvOptions, is_tsv: bool = False) -> CsvOptions:
    """Check CSV options and normalise delimiter names ('tab', 'pipe'...) to characters."""
    delimiter = options.delimiter
    if is_tsv and delimiter == ",":
        delimiter = "\t"
    if delimiter not in DELIMITERS:
        raise ConfigError(
            f"CSV delimiter {delimiter!r} for {uri} is not supported: use comma, semicolon, "
            "pipe, tab or space"
        )
    delimiter = DELIMITERS[delimiter]
    quote = options.quote_char or None
    if quote is not None and len(quote) != 1:
        raise ConfigError(f"CSV quote_char for {uri} must be one character, got {quote!r}")
    if quote == delimiter:
        raise ConfigError(f"CSV quote_char and delimiter for {uri} are both {quote!r}")
    if quote in ("\n", "\r"):
        raise ConfigError(f"CSV quote_char for {uri} cannot be a line break")
    names = options.column_names
    if names is not None:
        names = tuple(names)
        if not names or any(not n for n in names):
            raise ConfigError(f"CSV column_names for {uri} must be non-empty names")
        if len(set(names)) != len(names):
            raise ConfigError(f"CSV column_names for {uri} has duplicates: {list(names)}")
    if not options.has_header and names is None:
        names = None  # generated from the first record's width
    return CsvOptions(
        delimiter=delimiter, quote_char=quote, has_header=options.has_header, column_names=names
    )


def derive_batch_id(info: ObjectInfo) -> str:
    """A deterministic batch id: the same object content gets the same id, a changed one not."""
    stem = info.uri.rstrip("/").rsplit("/", 1)[-1].split(".", 1)[0]
    slug = re.sub(r"[^a-z0-9]+", "-", stem.lower()).strip("-")[:40] or "batch"
    digest = hashlib.sha256(f"{info.uri}\n{info.fingerprint}".encode()).hexdigest()[:12]
    return f"{slug}-{digest}"


def inspect_source(
    storage: Storage,
    uri: str,
    fmt: str = Batch.format.default,
    compression: str = Batch.compression.default,
    csv_options: CsvOptions | None = None,
    json_records_path: str = Batch.json_records_path.default,
    excel_sheets: tuple[str, ...] | None = None,
    info: ObjectInfo | None = None,
) -> SourceSpec:
    """Everything later stages need to know about a source, checked once. ``info``: what
    storage said of it a moment ago (else it is asked)."""
    fmt_out, comp = detect_format(uri, fmt, compression)
    info = info or storage.stat(uri)
    uri = info.uri
    if info.size == 0:
        raise EmptySourceError(f"{uri} is empty (0 bytes): there is nothing to process")
    spec = SourceSpec(uri=uri, format=fmt_out, compression=comp, info=info)  # type: ignore[arg-type]
    if fmt_out == "csv":
        is_tsv = uri.lower().removesuffix(".gz").endswith(".tsv")
        options = resolve_csv_options(uri, csv_options or CsvOptions(), is_tsv)
        return _inspect_csv(storage, spec, options)
    if fmt_out == "jsonl":
        return _inspect_jsonl(storage, spec)
    if fmt_out == "json":
        return _inspect_json(storage, spec, json_records_path)
    if fmt_out == "parquet":
        return _inspect_parquet(storage, spec)
    return _inspect_excel(storage, spec, excel_sheets)


def _head(storage: Storage, spec: SourceSpec, nbytes: int) -> bytes:
    if spec.compression:
        try:
            with storage.open_input_stream(spec.uri, compression=spec.compression) as f:
                return f.read(nbytes)
        except OSError as exc:
            raise SourceError(f"{spec.uri} is not a valid {spec.compression} file: {exc}") from exc
    return storage.read_range(spec.uri, 0, min(nbytes, spec.info.size))


def _replace(spec: SourceSpec, **changes: Any) -> SourceSpec:
    from dataclasses import replace

    return replace(spec, **changes)


def _inspect_csv(storage: Storage, spec: SourceSpec, options: CsvOptions) -> SourceSpec:
    head = _head(storage, spec, HEAD_BYTES)
    start = len(BOM) if head.startswith(BOM) else 0
    if not head[start:].strip():
        raise EmptySourceError(
            f"{spec.uri} holds no CSV data (only whitespace or a byte-order mark)"
        )
    # Find where the first record (the header, or the first data record) ends.
    first_end = _first_record_end(storage, spec, head, start, options)
    first_record = (head if first_end <= len(head) else _head(storage, spec, first_end))[
        start:first_end
    ]
    try:
        text = first_record.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SourceError(
            f"{spec.uri}: the first line is not valid UTF-8 (byte {start + exc.start})"
        ) from exc
    rows = csv.reader(
        io.StringIO(text, newline=""),  # the record may hold quoted line breaks
        delimiter=options.delimiter,
        quotechar=options.quote_char or '"',
        quoting=csv.QUOTE_MINIMAL if options.quote_char else csv.QUOTE_NONE,
    )
    fields = next((row for row in rows if row), [])  # empty lines before it are not records
    if options.has_header:
        _check_delimiter(spec.uri, text, fields, options.delimiter)
        names = options.column_names or _unique_names(fields)
        data_start = first_end
    else:
        names = options.column_names or tuple(f"column_{i + 1}" for i in range(len(fields)))
        data_start = start
    sample = _record_size_sample(head, data_start, options, spec.compression is not None)
    layout = {"header_bytes": data_start, "bom": start > 0, **sample}
    return _replace(
        spec,
        csv=CsvOptions(options.delimiter, options.quote_char, options.has_header, tuple(names)),
        columns=tuple(names),
        data_start=data_start if not spec.compression else 0,
        layout=layout,
    )


def _first_record_end(
    storage: Storage, spec: SourceSpec, head: bytes, start: int, options: CsvOptions
) -> int:
    data, asked = head, HEAD_BYTES
    while True:
        # All there is has been read when the object (or its decompressed stream) gave less
        # than was asked for.
        complete = len(data) < asked or (not spec.compression and len(data) >= spec.info.size)
        first = _first_end(spec.uri, data, start, options, complete)
        if first is not None:
            return first
        if complete:
            return len(data)  # a single record without a trailing newline
        if len(data) >= MAX_HEADER_BYTES:
            return len(data)  # a header longer than we care to read
        asked = min(len(data) * 4, MAX_HEADER_BYTES)
        data = _head(storage, spec, asked)


def _first_end(
    uri: str, data: bytes, start: int, options: CsvOptions, complete: bool
) -> int | None:
    """Where the first record of ``data`` ends, None if not within ``data``. Raises
    SourceError when ``data`` is all there is and the first record's quote never closes."""
    unclosed = SourceError(
        f"{uri}: the first record opens a quoted field that is never closed; the file is truncated "
        "or a quote is unbalanced"
    )
    scanner = RecordScanner(start, options.quote_char, options.delimiter)
    try:
        ends = scanner.feed(data[start:])
    except AmbiguousQuotes:
        found = exact_csv_record_ends(
            [data[start:]], start, options.delimiter, options.quote_char, complete
        )
        try:
            end = next((e for e, _ in found), None)
        except UnclosedQuote:
            raise unclosed from None
        if end is None or (end == len(data) and not complete):
            return None  # the record may go on past what was read
        return end
    if ends.size:
        return int(ends[0])
    if complete and scanner.inside_quotes:
        raise unclosed
    return None


def _check_delimiter(uri: str, text: str, fields: list[str], delimiter: str) -> None:
    if len(fields) != 1:
        return
    for other in (",", ";", "|", "\t"):
        if other != delimiter and len(text.split(other)) > 1:
            raise ConfigError(
                f"The CSV header of {uri} is a single column {fields[0][:80]!r} with delimiter "
                f"{delimiter!r}, but it splits on {other!r}: set csv.delimiter to {other!r}"
            )


def _unique_names(fields: list[str]) -> tuple[str, ...]:
    return tuple(unique_names(fields))


def _record_size_sample(
    head: bytes, data_start: int, options: CsvOptions | None, compressed: bool
) -> dict[str, Any]:
    body = head[data_start:]
    if not body:
        return {"sample_records": 0, "bytes_per_record": None}
    quote = options.quote_char if options else None
    delimiter = options.delimiter if options else None
    scanner = RecordScanner(0, quote, delimiter)
    try:
        ends = scanner.feed(body)
    except AmbiguousQuotes:
        found = exact_csv_record_ends([body], 0, delimiter or ",", quote)
        ends = np.fromiter((e for e, _ in found), dtype=np.int64)
    if not ends.size:
        return {"sample_records": 0, "bytes_per_record": float(len(body))}
    return {
        "sample_records": int(ends.size),
        "bytes_per_record": float(ends[-1]) / float(ends.size),
    }


def _inspect_jsonl(storage: Storage, spec: SourceSpec) -> SourceSpec:
    head = _head(storage, spec, HEAD_BYTES)
    start = len(BOM) if head.startswith(BOM) else 0
    lines = LINE_BREAK.split(head[start:])
    complete = lines[:-1] if len(head) < spec.info.size or spec.compression else lines
    first = next((ln for ln in complete if ln.strip()), None)
    if first is None:
        if not head[start:].strip():
            raise EmptySourceError(f"{spec.uri} holds no JSON lines (only whitespace)")
        first = head[start:]  # one line longer than the sample: checked when read
    else:
        try:
            value = json.loads(first)
        except ValueError as exc:
            raise SourceError(
                f"{spec.uri}: the first line is not JSON ({exc}); is this JSON Lines?"
            ) from exc
        if not isinstance(value, dict):
            raise SourceError(
                f"{spec.uri}: JSON lines must be objects, the first line is a "
                f"{type(value).__name__}"
            )
    sample = _record_size_sample(head, start, None, spec.compression is not None)
    return _replace(spec, data_start=start if not spec.compression else 0, layout=sample)


def _inspect_json(storage: Storage, spec: SourceSpec, records_path: str) -> SourceSpec:
    head = _head(storage, spec, 4096)
    stripped = head.removeprefix(BOM).lstrip()
    if not stripped:
        raise EmptySourceError(f"{spec.uri} holds no JSON (only whitespace)")
    if stripped[:1] not in (b"[", b"{"):
        raise SourceError(
            f"{spec.uri} does not start with a JSON array or object (found {stripped[:20]!r})"
        )
    if stripped[:1] == b"[" and records_path != "item":
        raise SourceError(
            f"{spec.uri} is a JSON array but json_records_path is {records_path!r}: use 'item'"
        )
    if stripped[:1] == b"{" and records_path == "item":
        raise SourceError(
            f"{spec.uri} is a JSON object, not an array: set json_records_path to where its "
            "records are, e.g. 'records.item' for {\"records\": [...]}"
        )
    return _replace(
        spec, json_records_path=records_path, layout={"starts_with": stripped[:1].decode()}
    )


def _inspect_parquet(storage: Storage, spec: SourceSpec) -> SourceSpec:
    import pyarrow.parquet as pq

    try:
        with storage.open_input_file(spec.uri) as f:
            meta = pq.ParquetFile(f).metadata
            schema = meta.schema.to_arrow_schema()
    except Exception as exc:  # pyarrow raises ArrowInvalid/OSError for a bad footer
        raise SourceError(f"{spec.uri} is not a readable Parquet file: {exc}") from exc
    row_groups = [meta.row_group(i).num_rows for i in range(meta.num_row_groups)]
    return _replace(
        spec,
        columns=tuple(schema.names),
        layout={"row_groups": row_groups, "num_rows": meta.num_rows},
    )


def _inspect_excel(
    storage: Storage, spec: SourceSpec, sheets: tuple[str, ...] | None
) -> SourceSpec:
    from batch_pipeline.core.inputs.excel import open_workbook, sheet_layout

    workbook = open_workbook(storage, spec.uri)
    try:
        names = list(workbook.sheetnames)
        if sheets:
            missing = [s for s in sheets if s not in names]
            if missing:
                raise ConfigError(
                    f"{spec.uri} has no worksheet {', '.join(map(repr, missing))}; "
                    f"it has {', '.join(map(repr, names))}"
                )
            names = [n for n in names if n in sheets]
        layout = [sheet_layout(workbook[name]) for name in names]
    finally:
        workbook.close()
    columns = sorted({c for s in layout for c in s["columns"]})
    return _replace(
        spec,
        columns=tuple(columns),
        layout={"sheets": layout},
        excel_sheets=tuple(names),
    )
