"""Byte ranges of CSV and JSON Lines objects, cut at record boundaries.

By default the object is streamed once (``ChunkingSettings.scan``): cuts fall after exactly
``chunk_records`` records (or ``chunk_bytes``), never inside a quoted field, and each chunk
knows the line it starts on (numpy parity counting, or an exact CSV scan when quotes are
ambiguous). With ``scan`` off, cuts are placed at byte targets estimated from a sample and moved
past the next line break with small range reads (only safe for CSV without line breaks inside
quoted fields)."""

from __future__ import annotations

import csv
import itertools
import math
from dataclasses import dataclass

import numpy as np

from batch_pipeline.core.common.errors import SourceError
from batch_pipeline.core.common.models import Chunk, ChunkingSettings, Plan, SourceSpec
from batch_pipeline.core.inputs.boundaries import (
    LINE_BREAK,
    AmbiguousQuotes,
    RecordScanner,
    UnclosedQuote,
    count_line_breaks,
    exact_csv_record_ends,
)
from batch_pipeline.core.planning.units import group_units
from batch_pipeline.core.stores.storage import Storage

BLOCK_BYTES = 8 << 20


@dataclass
class Segment:
    """A run of whole records in a text object: bytes ``start``..``end``."""

    start: int
    end: int
    records: int
    first_line: int | None


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
                chunks_in_plan=len(groups),
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
