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
An input with no records still gets one chunk, so that the run reports zero records. A batch
whose processor is keyed also gets its buckets (``buckets.plan_buckets_for``).
"""

from __future__ import annotations

from dataclasses import replace

from batch_pipeline.core.common.errors import SourceError
from batch_pipeline.core.common.models import BatchSpec, Plan
from batch_pipeline.core.planning.buckets import plan_buckets_for
from batch_pipeline.core.planning.byte_ranges import _plan_text
from batch_pipeline.core.planning.formats import (
    _plan_parts,
    _plan_row_groups,
    plan_file_set,
    plan_sheets,
)
from batch_pipeline.core.planning.schema import batch_schema
from batch_pipeline.core.stores.storage import Storage


def plan_batch(storage: Storage, spec: BatchSpec) -> Plan:
    """Plan the chunks of ``spec``'s source (staging it first if it cannot be cut by bytes),
    learn the batch's schema, and choose a keyed batch's buckets."""
    plan = _plan_chunks(storage, spec)
    buckets = plan_buckets_for(spec, len(plan.chunks))
    return replace(plan, schema=batch_schema(storage, spec, plan), buckets=buckets)


def _plan_chunks(storage: Storage, spec: BatchSpec) -> Plan:
    source, settings = spec.source, spec.chunking
    if settings.chunk_records < 1 or settings.max_chunks < 1:
        raise SourceError("chunk_records and max_chunks must be at least 1")
    if source.is_file_set:
        return plan_file_set(source, settings)
    if source.needs_staging:
        return _plan_parts(storage, spec)
    if source.format in ("csv", "jsonl"):
        return _plan_text(storage, source, settings)
    if source.format == "parquet":
        return _plan_row_groups(source, settings)
    return plan_sheets(source, settings)
