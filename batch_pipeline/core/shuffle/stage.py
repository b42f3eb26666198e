"""Between the stages and around each bucket: which buckets a run processes (``plan_buckets``) and
one attempt at a bucket recorded in the ledger (``attempt_bucket``).

``plan_buckets`` runs once every chunk of the batch has been shuffled. A bucket needs every
record of each of its keys, so no bucket runs while a chunk has not succeeded (a chunk
dead-lettered in stage 1 fails the batch; a redrive shuffles it, then runs the buckets). It
makes the bucket descriptors from what the chunks wrote, records them in the ledger's bucket
rows (``Ledger.buckets``, ``bp_buckets``: status, attempts, errors, counts, dead letter, as
chunk rows) and picks the buckets to process:

- ``run`` (resume) and ``redrive``: every bucket not done (succeeded with the same parts and
  settings, its outputs present). A redrive takes the buckets that never ran too, since a
  bucket can only be left pending because stage 1 was incomplete or a run was stopped.
- ``force``: every bucket.

``attempt_bucket`` is ``attempt_chunk`` for a bucket: ``run_bucket`` once, then success, a
transient failure to retry (``RetryableChunkError``) or a dead letter
(``dead_letters/bucket-NNNNN.json``), which aggregation tolerates or not as it does a chunk's.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from batch_pipeline.core.common.errors import BatchBusyError, ConfigError, StateStoreError
from batch_pipeline.core.common.models import BatchSpec, ChunkSummary, Plan
from batch_pipeline.core.ledger import (
    COMPLETED_FORCED,
    SUCCEEDED,
    LeaseKeeper,
    LeaseSettings,
    Ledger,
)
from batch_pipeline.core.processing.attempts import record_attempt
from batch_pipeline.core.processing.processors import Processor, get_processor
from batch_pipeline.core.processing.processors.keyed import KeyedProcessor
from batch_pipeline.core.shuffle.buckets import (
    Bucket,
    bucket_done,
    bucket_fingerprint,
    buckets_from_chunks,
)
from batch_pipeline.core.shuffle.process import run_bucket, state_namespace
from batch_pipeline.core.stores.state import StateStore
from batch_pipeline.core.stores.storage import Storage


def is_keyed(spec: BatchSpec) -> bool:
    """Whether the batch's processor is keyed (its batch has a second stage of buckets)."""
    processor = get_processor(spec.processor, spec.processor_options, spec.processor_modules)
    return isinstance(processor, KeyedProcessor)


def keyed_processor(spec: BatchSpec, processor: Processor | None = None) -> KeyedProcessor:
    """The batch's processor, which must be keyed (else ConfigError)."""
    processor = processor or get_processor(
        spec.processor, spec.processor_options, spec.processor_modules
    )
    if not isinstance(processor, KeyedProcessor):
        raise ConfigError(
            f"processor {processor.name!r} has no key: batch {spec.batch_id} has no buckets"
        )
    return processor


def plan_buckets(
    storage: Storage, ledger: Ledger, spec: BatchSpec, plan: Plan
) -> tuple[list[Bucket], str]:
    """The buckets to process now, and why (see the module); none while a chunk of the batch
    has not succeeded. The caller holds the batch's lease."""
    if plan.buckets is None:
        raise ConfigError(
            f"batch {spec.batch_id}'s plan has no buckets: its processor is not keyed"
        )
    batch = ledger.batch(spec.batch_id)
    if batch is not None and batch.status == COMPLETED_FORCED:
        return [], f"batch was force-completed ({batch.reason}); no bucket to process"
    chunks = ledger.chunk_states(spec.batch_id)
    unfinished = [s for s in chunks if s.status != SUCCEEDED]
    if unfinished:
        first = unfinished[0]
        return [], (
            f"no bucket runs: {len(unfinished)} of {len(chunks)} chunk(s) not shuffled (first: "
            f"chunk_{first.chunk:05d}, {first.status}), and a bucket needs every record of its "
            "keys; redrive the batch, or run it again, to shuffle them first"
        )
    summaries = [s.chunk_summary() for s in chunks]
    buckets = buckets_from_chunks(spec, plan.buckets, [s for s in summaries if s is not None])
    rows = ledger.buckets
    rows.set_descriptors(spec.batch_id, {b.index: json.dumps(b.to_dict()) for b in buckets})
    states = {s.chunk: s for s in rows.chunk_states(spec.batch_id)}
    if spec.mode == "force":
        todo = buckets
        why = f"force: all {len(todo)} bucket(s)"
    else:
        todo = [b for b in buckets if not bucket_done(states.get(b.index), spec, b, storage)]
        done = len(buckets) - len(todo)
        why = f"{len(todo)} bucket(s) to process" + (f", {done} already done" if done else "")
    rows.reset(spec.batch_id, [b.index for b in todo])
    return todo, why


def check_same_store(
    ledger: Ledger, spec: BatchSpec, bucket: Bucket, state_store: StateStore
) -> None:
    """Refuse (ConfigError) to process a bucket with another state store than the one the
    batch's succeeded buckets saved their states in: a resume or a redrive with another
    ``--state-store`` (or the environment's default instead) would start the bucket's keys
    from no state and split the batch's states over two stores. ``force`` starts the batch
    over (every bucket again), so any store will do."""
    if spec.mode == "force":
        return
    for row in ledger.buckets.chunk_states(spec.batch_id):
        summary = row.chunk_summary() if row.status == SUCCEEDED else None
        used = summary.state_store if summary is not None else None
        if used is not None and used != state_store.description:
            raise ConfigError(
                f"{bucket.describe()}: batch {spec.batch_id}'s other buckets saved their "
                f"states in {used}, and this run's state store is {state_store.description}: "
                f"run it with --state-store {used} (or that store as the state_store "
                "resource), or with --force to process every bucket again in this store"
            )


def attempt_bucket(
    storage: Storage,
    ledger: Ledger,
    spec: BatchSpec,
    bucket: Bucket,
    state_store: StateStore,
    retry_number: int = 0,
    sqs_client: Callable[[], Any] | None = None,
    processor: Processor | None = None,
    lease: LeaseSettings | None = None,
) -> ChunkSummary:
    """One recorded attempt at ``run_bucket`` in the bucket's ledger row: success, a retry
    (``RetryableChunkError`` with the delay) or a dead letter. ``retry_number`` retries were
    made before this attempt."""
    keyed = keyed_processor(spec, processor)
    check_same_store(ledger, spec, bucket, state_store)

    registered = ledger.batch(spec.batch_id)
    batch_time = registered.created_at if registered is not None else None

    def run() -> ChunkSummary:
        with holding_states(ledger, spec, keyed, lease or LeaseSettings()):
            return run_bucket(storage, spec, bucket, keyed, state_store, batch_time)

    return record_attempt(
        storage,
        ledger.buckets,
        spec,
        bucket,
        bucket.buckets_in_plan,
        run,
        bucket_fingerprint(spec, bucket),
        retry_number,
        sqs_client,
    )


def states_lease(processor: KeyedProcessor) -> str:
    """The ledger lease (``bp_leases``) of a processor's states: ``state:`` and a digest of its
    namespace (a lease's name has at most 255 characters; a namespace may have as many)."""
    digest = hashlib.sha256(state_namespace(processor).encode()).hexdigest()[:40]
    return f"state:{digest}"


@contextmanager
def holding_states(
    ledger: Ledger, spec: BatchSpec, processor: KeyedProcessor, lease: LeaseSettings
) -> Iterator[None]:
    """Hold the lease of the processor's states for the batch while a bucket loads, processes
    and saves them (renewed by a heartbeat; shared by the batch's buckets, which have keys of
    their own). Another batch of the same states (two files of the same users at once) would
    load what this one is about to replace and overwrite it: its buckets wait, as a transient
    failure retried with backoff, until this batch's aggregation gives the lease back (or it
    expires after a run died). A bucket whose retries run out is dead-lettered, to redrive."""
    name = states_lease(processor)
    try:
        ledger.acquire_lease(name, spec.batch_id, lease.ttl_seconds)
    except BatchBusyError:
        current = ledger.lease(name)
        holder = current.holder if current is not None else "another batch"
        raise StateStoreError(
            f"the states of {state_namespace(processor)!r} are being updated by batch "
            f"{holder}'s buckets; batch {spec.batch_id}'s wait for them (retried with backoff; "
            "redrive it if its retries run out)",
            permanent=False,
        ) from None
    with LeaseKeeper(ledger, name, spec.batch_id, lease):
        yield


def release_states(ledger: Ledger, spec: BatchSpec) -> None:
    """The batch's buckets are done (aggregation): give the lease of its states back."""
    processor = get_processor(spec.processor, spec.processor_options, spec.processor_modules)
    if isinstance(processor, KeyedProcessor):
        ledger.release_lease(states_lease(processor), spec.batch_id)
