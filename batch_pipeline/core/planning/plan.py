"""Cut a source into chunk descriptors, with fan-out bounded by ``max_chunks``.

- CSV and JSONL: byte ranges cut at record boundaries. By default the object is streamed once
  (``ChunkingSettings.scan``): cuts fall after exactly ``chunk_records`` records, never inside a
  quoted field, and each chunk knows the line it starts on. With ``scan`` off, cuts are placed
  at byte targets estimated from a sample and moved past the next line break with small range
  reads
  (only safe for CSV without line breaks inside quoted fields).
- Parquet: consecutive row groups.
- Excel: row ranges of worksheets; small sheets share a chunk; empty sheets are skipped.
- JSON and gzip text: staged into Parquet parts first (see ``staging``), then grouped.
- File sets (a folder of many small files, see ``filesets``): whole files grouped per chunk.

``max_chunks`` wins over ``chunk_records``: when the target would give more chunks, chunks grow.
An input with no records still gets one chunk, so that the run reports zero records.
"""

from __future__ import annotations

import csv
import itertools
import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from batch_pipeline.core.columns.types import (
    schema_from_json,
    schema_to_json,
    string_schema,
)
from batch_pipeline.core.common.errors import SourceError
from batch_pipeline.core.common.models import (
    BatchSpec,
    Chunk,
    ChunkingSettings,
    Plan,
    SheetRange,
    SourceSpec,
    join_uri,
)
from batch_pipeline.core.inputs.boundaries import (
    LINE_BREAK,
    AmbiguousQuotes,
    RecordScanner,
    UnclosedQuote,
    count_line_breaks,
    exact_csv_record_ends,
)
from batch_pipeline.core.inputs.staging import stage_source, staged_schema
from batch_pipeline.core.ledger import parse_settings
from batch_pipeline.core.stores.storage import Storage

STAGING_PART_RECORDS = 100_000
MAX_FILES_PER_CHUNK = 1000
DEFAULT_RECORD_BYTES = 100
BLOCK_BYTES = 8 << 20


@dataclass
class Segment:
    """A run of whole records in a text object: bytes ``start``..``end``."""

    start: int
    end: int
    records: int
    first_line: int | None


def plan_to_json(spec: BatchSpec, plan: Plan) -> dict[str, Any]:
    return {
        "source_fingerprint": spec.source.info.fingerprint,
        "parse": _parse_key(spec),
        "chunking": asdict(spec.chunking),
        "chunks": len(plan.chunks),
        "chunk_records": plan.chunk_records,
        "reason": plan.reason,
        "total_records": plan.total_records,
        "exact_records": plan.exact_records,
        "descriptors": [asdict(c) for c in plan.chunks],
        "schema": schema_to_json(plan.schema) if plan.schema is not None else None,
    }


def write_plan(storage: Storage, spec: BatchSpec, plan: Plan) -> None:
    storage.write_bytes(spec.plan_uri, json.dumps(plan_to_json(spec, plan), indent=1).encode())


def _parse_key(spec: BatchSpec) -> dict[str, Any]:
    """How the source is read, as JSON (what plan.json must match to be reused)."""
    return json.loads(json.dumps(parse_settings(spec), default=str))


def plan_or_reuse(storage: Storage, spec: BatchSpec) -> Plan:
    """The batch's ``plan.json`` when it was made for the same source content, parse settings
    and chunk settings (so a resumed run does not scan the source again), else a new plan,
    written."""
    if storage.exists(spec.plan_uri):
        try:
            data = json.loads(storage.read_bytes(spec.plan_uri))
        except ValueError:
            data = {}
        if (
            data.get("source_fingerprint") == spec.source.info.fingerprint
            and data.get("parse") == _parse_key(spec)
            and data.get("chunking") == asdict(spec.chunking)
            and data.get("descriptors")
        ):
            chunks = tuple(Chunk.from_dict(d) for d in data["descriptors"])
            reason = data["reason"] + " (plan reused from plan.json)"
            total, exact = data["total_records"], data["exact_records"]
            schema = schema_from_json(data.get("schema"))  # None: a plan from before schemas
            return Plan(chunks, data["chunk_records"], reason, total, exact, schema)
    plan = plan_batch(storage, spec)
    write_plan(storage, spec, plan)
    return plan


def plan_batch(storage: Storage, spec: BatchSpec) -> Plan:
    """Plan the chunks of ``spec``'s source (staging it first if it cannot be cut by bytes)
    and learn the batch's schema."""
    plan = _plan_chunks(storage, spec)
    return replace(plan, schema=batch_schema(storage, spec, plan))


def _plan_chunks(storage: Storage, spec: BatchSpec) -> Plan:
    source, settings = spec.source, spec.chunking
    if settings.chunk_records < 1 or settings.max_chunks < 1:
        raise SourceError("chunk_records and max_chunks must be at least 1")
    if source.is_file_set:
        return plan_file_set(source, settings)
    if source.needs_staging:
        part_records = min(settings.chunk_records, STAGING_PART_RECORDS)
        parts = stage_source(
            storage,
            source,
            join_uri(spec.output, "_staging"),
            part_records,
            grow_every=2 * settings.max_chunks,  # parts stay about as many as chunks may be
            max_part_records=STAGING_PART_RECORDS,
        )
        sizes = [p.records for p in parts]
        groups, size, reason = group_units(sizes, settings.chunk_records, settings.max_chunks)
        chunks = []
        for i, (a, b) in enumerate(groups):
            chunks.append(
                Chunk(
                    index=i,
                    count=len(groups),
                    kind="parts",
                    uri=source.uri,
                    start=a,
                    end=b,
                    first_line=1 + sum(sizes[:a]),
                    records=sum(sizes[a:b]),
                    parts=tuple(p.uri for p in parts[a:b]),
                )
            )
        staged = (
            f"staged into {len(parts)} Parquet parts of {part_records:,} to "
            f"{max(sizes, default=0):,} records; "
        )
        return Plan(tuple(chunks), size, staged + reason, sum(sizes), True)
    if source.format in ("csv", "jsonl"):
        return _plan_text(storage, source, settings)
    if source.format == "parquet":
        return _plan_row_groups(source, settings)
    return plan_sheets(source, settings)


def group_units(
    sizes: Sequence[int], target: int, max_chunks: int
) -> tuple[list[tuple[int, int]], int, str]:
    """Group consecutive units (row groups, parts, segments) into chunks of about ``target``
    records, growing the target until there are at most ``max_chunks``.

    Returns (unit ranges, the records per chunk used, why)."""
    total = sum(sizes)
    if not sizes:
        return [], target, "no records"
    size = target
    groups = _greedy(sizes, size)
    reason = f"{len(groups)} chunk(s) of up to {size:,} records (chunk_records={target:,})"
    if len(groups) > max_chunks:
        size = max(size, math.ceil(total / max_chunks))
        groups = _greedy(sizes, size)
        while len(groups) > max_chunks:
            size = math.ceil(size * 1.1) + 1
            groups = _greedy(sizes, size)
        reason = (
            f"{total:,} records at {target:,} per chunk would need more than "
            f"max_chunks={max_chunks} steps; chunks grown to {size:,} records: "
            f"{len(groups)} chunk(s)"
        )
    return groups, size, reason


def _greedy(sizes: Sequence[int], target: int) -> list[tuple[int, int]]:
    groups: list[tuple[int, int]] = []
    start, acc = 0, 0
    for i, n in enumerate(sizes):
        acc += n
        if acc >= target:
            groups.append((start, i + 1))
            start, acc = i + 1, 0
    if start < len(sizes):
        if groups and acc == 0:
            groups[-1] = (groups[-1][0], len(sizes))  # trailing empty units join the last chunk
        else:
            groups.append((start, len(sizes)))
    return groups


# Text ------------------------------------------------------------------------------------------


def _plan_text(storage: Storage, source: SourceSpec, settings: ChunkingSettings) -> Plan:
    if settings.scan:
        segments = _scan_segments(storage, source, settings)
        exact = True
        sizes = [s.records for s in segments]
        if settings.chunk_bytes and len(segments) <= settings.max_chunks:
            # Segments end at chunk_records or chunk_bytes, whichever comes first: each is a
            # chunk (grouping by records alone would merge the ones cut for their bytes).
            groups, size = [(i, i + 1) for i in range(len(segments))], settings.chunk_records
            reason = (
                f"{len(groups)} chunk(s) of up to {size:,} records or about "
                f"{settings.chunk_bytes:,} bytes"
            )
        else:
            groups, size, reason = group_units(sizes, settings.chunk_records, settings.max_chunks)
    else:
        # Estimated segments are chunks already (at most max_chunks of them); grouping them
        # again would merge neighbours whose estimate falls a record short of the target.
        segments = _estimate_segments(storage, source, settings)
        exact = False
        sizes = [s.records for s in segments]
        groups = [(i, i + 1) for i in range(len(segments))]
        size = max(settings.chunk_records, math.ceil(sum(sizes) / len(segments)))
        reason = f"{len(groups)} chunk(s) of about {size:,} records"
    chunks = []
    for i, (a, b) in enumerate(groups):
        chunks.append(
            Chunk(
                index=i,
                count=len(groups),
                kind="bytes",
                uri=source.uri,
                start=segments[a].start,
                end=segments[b - 1].end,
                first_line=segments[a].first_line,
                records=sum(sizes[a:b]),
            )
        )
    if not exact:
        reason += " (sizes estimated from a sample; planned without scanning)"
    return Plan(tuple(chunks), size, reason, sum(sizes), exact)


def header_lines_of(storage: Storage, source: SourceSpec) -> int:
    if not source.data_start:
        return 0
    return count_line_breaks(storage.read_range(source.uri, 0, source.data_start))


def _scan_segments(
    storage: Storage, source: SourceSpec, settings: ChunkingSettings
) -> list[Segment]:
    quote = source.csv.quote_char if source.csv else None
    delimiter = source.csv.delimiter if source.csv else None
    try:
        return _numpy_scan(storage, source, settings, quote, delimiter)
    except AmbiguousQuotes:
        # A quote inside an unquoted field: parity counting cannot be trusted; scan exactly.
        return _exact_scan(storage, source, settings, quote, delimiter or ",")


def _cut_builder(source: SourceSpec, settings: ChunkingSettings, header_lines: int):
    """Accumulates record ends into segments of ``chunk_records`` (or ``chunk_bytes``)."""
    segments: list[Segment] = []
    state = {"start": source.data_start, "records": 0, "line": header_lines + 1}

    def cut(end: int, records: int, line_breaks_before_end: int) -> None:
        segments.append(Segment(state["start"], end, records, state["line"]))
        state.update(start=end, records=0, line=line_breaks_before_end + 1)

    return segments, state, cut


def _numpy_scan(
    storage: Storage,
    source: SourceSpec,
    settings: ChunkingSettings,
    quote: str | None,
    delimiter: str | None,
) -> list[Segment]:
    header_lines = header_lines_of(storage, source)
    segments, state, cut = _cut_builder(source, settings, header_lines)
    target, max_bytes = settings.chunk_records, settings.chunk_bytes
    scanner = RecordScanner(source.data_start, quote, delimiter)
    open_record_line = state["line"]  # the line where the record being scanned starts
    for _, block in storage.iter_blocks(source.uri, source.data_start, BLOCK_BYTES):
        lines_before_block = header_lines + scanner.state.newlines
        record_start = scanner.state.record_start
        ends = scanner.feed(block)
        if scanner.state.record_start != record_start:
            at = np.array([scanner.state.record_start])
            open_record_line = int(scanner.newlines_before(at, lines_before_block)[0]) + 1
        i, n = 0, ends.size
        while i < n:
            idx = i + target - state["records"] - 1
            if max_bytes:
                by_bytes = int(np.searchsorted(ends, state["start"] + max_bytes, side="left"))
                idx = min(idx, max(by_bytes, i))
            if idx >= n:
                state["records"] += n - i
                break
            end = int(ends[idx])
            breaks = int(scanner.newlines_before(np.array([end]), lines_before_block)[0])
            cut(end, state["records"] + idx - i + 1, breaks)
            i = idx + 1
    if scanner.inside_quotes:
        raise _unclosed(source, open_record_line, scanner.state.record_start)
    state["records"] += int(scanner.finish().size)
    return _close(segments, state, source.info.size)


def _exact_scan(
    storage: Storage,
    source: SourceSpec,
    settings: ChunkingSettings,
    quote: str | None,
    delimiter: str,
) -> list[Segment]:
    header_lines = header_lines_of(storage, source)
    segments, state, cut = _cut_builder(source, settings, header_lines)
    target, max_bytes = settings.chunk_records, settings.chunk_bytes
    try:
        with storage.open_lines(source.uri, source.data_start) as lines:
            found = exact_csv_record_ends(
                lines, source.data_start, delimiter, quote, check_closed=True
            )
            for end, breaks in found:
                state["records"] += 1
                if state["records"] >= target or (max_bytes and end - state["start"] >= max_bytes):
                    cut(end, state["records"], header_lines + breaks)
    except UnclosedQuote as exc:
        raise _unclosed(source, header_lines + exc.line_breaks + 1, exc.offset) from exc
    except csv.Error as exc:
        raise SourceError(
            f"{source.uri}: CSV cannot be parsed after line {state['line']}: {exc}"
        ) from exc
    return _close(segments, state, source.info.size)


def _unclosed(source: SourceSpec, line: int, offset: int) -> SourceError:
    return SourceError(
        f"{source.uri}: a quoted field in the record starting on line {line} (byte {offset}) "
        "is never closed; the file is truncated or a quote is unbalanced"
    )


def _close(segments: list[Segment], state: dict, size: int) -> list[Segment]:
    if state["records"] or not segments:
        segments.append(Segment(state["start"], size, state["records"], state["line"]))
    elif state["start"] < size:
        last = segments[-1]  # only empty lines follow: they join the last segment
        segments[-1] = Segment(last.start, size, last.records, last.first_line)
    return segments


def _estimate_segments(
    storage: Storage, source: SourceSpec, settings: ChunkingSettings
) -> list[Segment]:
    size, start = source.info.size, source.data_start
    per_record = float(source.layout.get("bytes_per_record") or 100.0)
    target_bytes = settings.chunk_records * per_record
    if settings.chunk_bytes:
        target_bytes = min(target_bytes, settings.chunk_bytes)
    body = size - start
    n = max(1, min(settings.max_chunks, math.ceil(body / max(target_bytes, 1.0))))
    cuts = [start]
    for k in range(1, n):
        cut = _next_newline(storage, source.uri, start + int(k * body / n), size)
        if cuts[-1] < cut < size:
            cuts.append(cut)
    cuts.append(size)
    return [
        Segment(a, b, max(1, round((b - a) / per_record)) if b > a else 0, None)
        for a, b in itertools.pairwise(cuts)
    ]


def _next_newline(storage: Storage, uri: str, offset: int, size: int) -> int:
    """The offset just past the first line break (``\\n``, ``\\r\\n`` or a lone ``\\r``) at or
    after ``offset`` (small range reads)."""
    window = 64 << 10
    while offset < size:
        # One byte more than the window: a \r at its end shows whether \n follows it.
        data = storage.read_range(uri, offset, min(offset + window + 1, size))
        found = LINE_BREAK.search(data, 0, max(len(data) - 1, 1))
        if found:
            end = found.end()
            if data[end - 1 : end + 1] == b"\r\n":
                end += 1
            return offset + end
        offset += max(len(data) - 1, 1)
        window *= 4
    return size


# File sets --------------------------------------------------------------------------------------


def plan_file_set(source: SourceSpec, settings: ChunkingSettings) -> Plan:
    """Group a file set's whole files into ``objects`` chunks, in key order (see
    ``filesets``): by records estimated from bytes, up to ``chunk_records`` (or
    ``chunk_bytes``), at most ``MAX_FILES_PER_CHUNK`` files, ``max_chunks`` winning."""
    members = source.members
    per_record = float(source.layout.get("record_bytes_estimate") or DEFAULT_RECORD_BYTES)
    estimates = [math.ceil(m.size / per_record) if m.size else 0 for m in members]
    target = settings.chunk_records
    if settings.chunk_bytes:
        target = max(1, min(target, math.floor(settings.chunk_bytes / per_record)))
    groups, size, reason = group_units(estimates, target, settings.max_chunks)
    files_cap = max(MAX_FILES_PER_CHUNK, math.ceil(len(members) / settings.max_chunks))
    split = [(a, min(a + files_cap, b)) for s, b in groups for a in range(s, b, files_cap)]
    if len(split) <= settings.max_chunks:  # else max_chunks wins over the files cap
        groups = split
    chunks = tuple(
        Chunk(
            index=i,
            count=len(groups),
            kind="objects",
            uri=source.uri,
            start=a,
            end=b,
            first_line=None,
            records=sum(estimates[a:b]),
            members=tuple(m.uri for m in members[a:b]),
            fingerprints=tuple(m.fingerprint for m in members[a:b]),
        )
        for i, (a, b) in enumerate(groups)
    )
    total = sum(estimates)
    reason = (
        f"{len(members):,} files grouped into {len(chunks)} chunk(s) of whole files (about "
        f"{per_record:,.0f} bytes per record, at most {files_cap:,} files per chunk); {reason}"
    )
    return Plan(chunks, size, reason, total, False)


# Parquet and Excel -----------------------------------------------------------------------------


def _plan_row_groups(source: SourceSpec, settings: ChunkingSettings) -> Plan:
    sizes: list[int] = list(source.layout.get("row_groups", []))
    if not sizes:
        chunk = Chunk(0, 1, "row_groups", source.uri, 0, 0, first_line=1, records=0)
        return Plan((chunk,), settings.chunk_records, "no row groups", 0, True)
    groups, size, reason = group_units(sizes, settings.chunk_records, settings.max_chunks)
    offsets = np.concatenate([[0], np.cumsum(sizes)])
    chunks = tuple(
        Chunk(
            index=i,
            count=len(groups),
            kind="row_groups",
            uri=source.uri,
            start=a,
            end=b,
            first_line=int(offsets[a]) + 1,
            records=int(offsets[b] - offsets[a]),
        )
        for i, (a, b) in enumerate(groups)
    )
    return Plan(chunks, size, f"{len(sizes)} row groups; " + reason, int(offsets[-1]), True)


def plan_sheets(source: SourceSpec, settings: ChunkingSettings) -> Plan:
    sheets = [s for s in source.layout.get("sheets", []) if not s["empty"]]
    skipped = [s["name"] for s in source.layout.get("sheets", []) if s["empty"]]
    note = f"; empty sheets skipped: {', '.join(skipped)}" if skipped else ""
    if not sheets:
        chunk = Chunk(0, 1, "empty", source.uri, records=0)
        return Plan((chunk,), settings.chunk_records, "no worksheet has records" + note, 0, True)
    total = sum(max(s["max_row"] - s["header_row"], 0) for s in sheets)
    size = max(settings.chunk_records, math.ceil(total / settings.max_chunks))
    while True:
        packed = _pack_sheets(sheets, size)
        if len(packed) <= settings.max_chunks:
            break
        size = math.ceil(size * 1.1) + 1
    chunks = tuple(
        Chunk(
            index=i,
            count=len(packed),
            kind="sheets",
            uri=source.uri,
            records=sum(r for _, r in ranges),
            sheets=tuple(rng for rng, _ in ranges),
        )
        for i, ranges in enumerate(packed)
    )
    reason = f"{len(chunks)} chunk(s) of up to {size:,} rows over {len(sheets)} sheet(s)" + note
    return Plan(chunks, size, reason, total, False)


def _pack_sheets(sheets: list[dict], size: int) -> list[list[tuple[SheetRange, int]]]:
    """Split sheets into ranges of ``size`` rows; pack small ranges together up to ``size``."""
    ranges: list[tuple[SheetRange, int]] = []
    for s in sheets:
        first, last = s["header_row"] + 1, s["max_row"]
        row = first
        while True:
            end = row + size - 1
            if end >= last:  # the sheet's last range is open-ended: rows past max_row are kept
                ranges.append((SheetRange(s["name"], s["header_row"], row, None), last - row + 1))
                break
            ranges.append((SheetRange(s["name"], s["header_row"], row, end), size))
            row = end + 1
    packed: list[list[tuple[SheetRange, int]]] = []
    acc = size
    for rng, rows in ranges:
        if acc + rows > size:
            packed.append([])
            acc = 0
        packed[-1].append((rng, rows))
        acc += rows
    return packed


# The batch schema -------------------------------------------------------------------------------

SCHEMA_SAMPLE_BYTES = 1 << 20  # JSON lines read from the start of the source
SCHEMA_SAMPLE_ROWS = 1000  # rows read from the start of each worksheet
_SCHEMAS: dict[tuple, pa.Schema | None] = {}  # plan_schema's, per plan (see there)


def batch_schema(storage: Storage, spec: BatchSpec, plan: Plan) -> pa.Schema | None:
    """The column types every chunk of the batch conforms to (``types.conform``), learned from
    a sample: CSV, every column text (values are read as text); Parquet, the file's schema;
    JSON lines, the first MiB of lines, read as a chunk reads them; JSON documents and gzip
    files, the join of the staged parts' schemas (exact); Excel, the first 1,000 rows of each
    sheet; a file set, its first file with records. A chunk meeting a wider type keeps it, and
    ``results.aggregate`` brings every file to the join."""
    source = spec.source
    if source.is_file_set:
        return _file_set_schema(storage, spec)
    if source.needs_staging:
        parts = [uri for chunk in plan.chunks for uri in chunk.parts]
        return staged_schema(storage, join_uri(spec.output, "_staging"), parts)
    if source.format == "csv":
        return string_schema(source.columns or ())
    if source.format == "parquet":
        with storage.open_input_file(source.uri) as f:
            return pq.read_schema(f).remove_metadata()
    if source.format == "jsonl":
        from batch_pipeline.core.inputs.readers import _read_jsonl

        end = min(source.info.size, source.data_start + SCHEMA_SAMPLE_BYTES)
        head = storage.read_range(source.uri, source.data_start, end)
        if end < source.info.size:
            head = head[: head.rfind(b"\n") + 1]  # whole lines only
        sample = Chunk(0, 1, "bytes", source.uri, source.data_start, source.data_start + len(head))
        return _read_jsonl(head, sample).table.schema
    return _sheets_schema(storage, source)


def _sheets_schema(storage: Storage, source: SourceSpec) -> pa.Schema | None:
    from batch_pipeline.core.inputs.excel import read_sheet_ranges

    rows = SCHEMA_SAMPLE_ROWS
    ranges = [
        SheetRange(s["name"], s["header_row"], s["header_row"] + 1, s["header_row"] + rows)
        for s in source.layout.get("sheets", [])
        if not s["empty"]
    ]
    if not ranges:
        return None
    return read_sheet_ranges(storage, source.uri, ranges)[0].schema


def _file_set_schema(storage: Storage, spec: BatchSpec) -> pa.Schema | None:
    """The schema of the set's first file with records, read as its chunk reads it (a CSV
    set: every column text, each file naming its own columns)."""
    from batch_pipeline.core.inputs.filesets import read_file_set_chunk

    source = spec.source
    first = next((m for m in source.members if m.size), None)
    if first is None or source.format == "csv":
        return None
    chunk = Chunk(
        0, 1, "objects", source.uri, members=(first.uri,), fingerprints=(first.fingerprint,)
    )
    return read_file_set_chunk(storage, source, chunk).table.schema


def plan_schema(storage: Storage, spec: BatchSpec) -> pa.Schema | None:
    """The batch schema in ``plan.json`` when the plan there was made for this source content
    and these settings (as ``plan_or_reuse`` decides), else None. Read once per plan and
    process: such a plan is never rewritten with other contents."""
    key = (
        spec.plan_uri,
        spec.source.info.fingerprint,
        json.dumps(_parse_key(spec), sort_keys=True),
        json.dumps(asdict(spec.chunking), sort_keys=True),
    )
    if key not in _SCHEMAS:
        try:
            data = json.loads(storage.read_bytes(spec.plan_uri))
        except (OSError, ValueError):
            return None  # no plan (a chunk run on its own): nothing to conform to
        if (
            data.get("source_fingerprint") != spec.source.info.fingerprint
            or data.get("parse") != _parse_key(spec)
            or data.get("chunking") != asdict(spec.chunking)
        ):
            return None
        if len(_SCHEMAS) > 64:
            _SCHEMAS.clear()
        _SCHEMAS[key] = schema_from_json(data.get("schema"))
    return _SCHEMAS[key]
