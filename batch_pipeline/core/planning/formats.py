"""The planners of the inputs cut at whole units rather than bytes: Parquet row groups, the
Parquet parts a JSON document or gzip text is staged into, row ranges of Excel worksheets (small
sheets share a chunk, empty sheets are skipped) and the whole files of a file set."""

from __future__ import annotations

import math

import numpy as np

from batch_pipeline.core.common.models import (
    BatchSpec,
    Chunk,
    ChunkingSettings,
    Plan,
    SheetRange,
    SourceSpec,
    join_uri,
)
from batch_pipeline.core.inputs.staging import stage_source
from batch_pipeline.core.planning.units import group_units
from batch_pipeline.core.stores.storage import Storage

STAGING_PART_RECORDS = 100_000
MAX_FILES_PER_CHUNK = 1000
DEFAULT_RECORD_BYTES = 100


def _plan_parts(storage: Storage, spec: BatchSpec) -> Plan:
    """A source that cannot be cut by bytes (JSON documents, gzip text): staged into Parquet
    parts first (see ``staging``), then the parts grouped into chunks."""
    source, settings = spec.source, spec.chunking
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
                chunks_in_plan=len(groups),
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
            chunks_in_plan=len(groups),
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
            chunks_in_plan=len(groups),
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
            chunks_in_plan=len(packed),
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
