"""The keyed stage: a batch whose processor is a ``KeyedProcessor`` runs in two stages.

1. Each chunk is read and conformed as in any batch, and its records are hash-partitioned by
   key into the plan's buckets (``partition``: ``partition_chunk``, ``attempt_partition``).
2. Once every chunk is shuffled, one step per bucket processes whole keys, in input order,
   with their states from a state store (``process``: ``run_bucket``; ``stage``:
   ``plan_buckets``, ``attempt_bucket``), each bucket recorded in the ledger as a chunk is.

``buckets`` holds the bucket descriptor (``Bucket``) and when a bucket is done. The bucket
count and the hash are the planner's (``planning.buckets``); aggregation and delivery take a
keyed batch's results from its buckets. A processor without a key keeps the one stage.
"""

from batch_pipeline.core.shuffle.buckets import (
    Bucket,
    bucket_done,
    bucket_fingerprint,
    buckets_from_chunks,
)
from batch_pipeline.core.shuffle.partition import PROVENANCE, attempt_partition, partition_chunk
from batch_pipeline.core.shuffle.process import run_bucket, state_namespace
from batch_pipeline.core.shuffle.stage import attempt_bucket, keyed_processor, plan_buckets

__all__ = [
    "PROVENANCE",
    "Bucket",
    "attempt_bucket",
    "attempt_partition",
    "bucket_done",
    "bucket_fingerprint",
    "buckets_from_chunks",
    "keyed_processor",
    "partition_chunk",
    "plan_buckets",
    "run_bucket",
    "state_namespace",
]
