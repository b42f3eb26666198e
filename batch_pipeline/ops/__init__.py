"""The stages of ``batch_job`` and ``redrive_job``, one module each. Thin: each hands its config
to the core."""

from batch_pipeline.ops.aggregate import aggregate
from batch_pipeline.ops.buckets import plan_buckets, process_bucket
from batch_pipeline.ops.deliver import deliver
from batch_pipeline.ops.initialize import initialize, load_batch
from batch_pipeline.ops.plan import plan_chunks
from batch_pipeline.ops.process import process_chunk, process_heavy_chunk

__all__ = [
    "aggregate",
    "deliver",
    "initialize",
    "load_batch",
    "plan_buckets",
    "plan_chunks",
    "process_bucket",
    "process_chunk",
    "process_heavy_chunk",
]
