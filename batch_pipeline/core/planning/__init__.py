"""Planning: a source cut into chunk descriptors, and which of them a run must process.

``plan`` is the entry (``plan_batch``), dispatching to the planners: ``byte_ranges`` (CSV and
JSON Lines), ``formats`` (Parquet row groups, staged parts, Excel sheets, file sets), all
grouping their units with ``units``; ``schema`` learns the batch schema; ``buckets`` a keyed
batch's bucket count and the hash that sends each key to its bucket; ``plan_file`` writes and
reuses ``plan.json``; ``resume`` chooses the chunks to run (resume, redrive, force)."""

from batch_pipeline.core.planning.buckets import (
    HASH_SCHEME,
    batch_key_column,
    bucket_of,
    hash_text,
    plan_buckets_for,
)
from batch_pipeline.core.planning.formats import plan_file_set, plan_sheets
from batch_pipeline.core.planning.plan import plan_batch
from batch_pipeline.core.planning.plan_file import (
    plan_or_reuse,
    plan_schema,
    plan_to_json,
    planned_buckets,
    write_plan,
)
from batch_pipeline.core.planning.resume import is_done, prune_outputs, select_chunks
from batch_pipeline.core.planning.schema import batch_schema
from batch_pipeline.core.planning.units import group_units

__all__ = [
    "HASH_SCHEME",
    "batch_key_column",
    "batch_schema",
    "bucket_of",
    "group_units",
    "hash_text",
    "is_done",
    "plan_batch",
    "plan_buckets_for",
    "plan_file_set",
    "plan_or_reuse",
    "plan_schema",
    "plan_sheets",
    "plan_to_json",
    "planned_buckets",
    "prune_outputs",
    "select_chunks",
    "write_plan",
]
