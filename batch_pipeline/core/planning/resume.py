"""Which chunks a run must process: resume, redrive and force, decided from the ledger.

- ``run`` (resume): every chunk except those the ledger says succeeded with the same input
  fingerprint and whose outputs still exist. An interrupted run thus continues where it
  stopped, and a finished one does nothing again.
- ``redrive``: only the chunks that failed or were dead-lettered.
- ``force``: every chunk.

A batch force-completed by an operator processes nothing in ``run`` mode.

A keyed batch's chunk is done when its shuffle parts are all there; its buckets are chosen by
``core.shuffle.plan_buckets`` once every chunk succeeded.

Chosen chunks go back to ``pending``; delivery progress is kept (nothing already delivered is
delivered again) unless the ledger starts it again for a new destination or ``redeliver``
(``Ledger.register_batch``). A batch the ledger does not know, whose ``delivery.json`` says it
went to this run's external sink, is refused first (the ledger was lost). Once the plan is
registered, ``prune_outputs`` removes the batch's files that the current plan does not have.

The caller holds the batch's lease (``core.ledger.lease``): nothing else writes to the batch
meanwhile.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from batch_pipeline.core.common.models import BatchSpec, Chunk, Plan
from batch_pipeline.core.delivery.record import refuse_if_delivered
from batch_pipeline.core.ledger import (
    COMPLETED_FORCED,
    DEAD_LETTERED,
    FAILED,
    SUCCEEDED,
    ChunkState,
    Ledger,
    chunk_fingerprint,
)
from batch_pipeline.core.stores.storage import Storage

# The names this pipeline writes under {output}/{batch_id}/ that belong to one chunk or part,
# and temp files of local writes that never completed. Nothing else there is ever removed.
RESULT_FILE = re.compile(
    r"(?:valid|rejected)/(?:chunk|bucket)-\d{5,}\.parquet"
    r"|dead_letters/(?:chunk|bucket)-\d{5,}\.json"
    r"|shuffle/bucket-\d{5,}/chunk-\d{5,}\.parquet"
)
OUTBOX_FILE = re.compile(r"outbox/(chunk|bucket)-(\d{5,})\.jsonl")
STAGED_PART = re.compile(r"(_staging/part-\d{5,})(?:\.rejects)?\.parquet")
TEMP_FILE = re.compile(r".*\.tmp-[0-9a-f]{8}")


def select_chunks(
    ledger: Ledger, storage: Storage, spec: BatchSpec, plan: Plan, run_id: str | None = None
) -> tuple[list[Chunk], str]:
    """Register the plan in the ledger, remove the batch's files the plan does not have, and
    return the chunks to process, and why."""
    if ledger.batch(spec.batch_id) is None:
        refuse_if_delivered(storage, ledger, spec)
    registered = ledger.register_batch(spec, plan, run_id)
    prune_outputs(storage, spec, plan, registered, ledger.buckets.chunk_states(spec.batch_id))
    states = {s.chunk: s for s in registered}
    batch = ledger.batch(spec.batch_id)
    if batch is not None and batch.status == COMPLETED_FORCED:
        return [], (
            f"batch was force-completed ({batch.reason}); nothing to process: run it with "
            "force to process it again"
        )
    if spec.mode == "force":
        todo = list(plan.chunks)
        why = f"force: all {len(todo)} chunk(s)"
    elif spec.mode == "redrive":
        todo = [c for c in plan.chunks if states[c.index].status in (FAILED, DEAD_LETTERED)]
        left = [c.index for c in plan.chunks if states[c.index].status not in
                (FAILED, DEAD_LETTERED, SUCCEEDED)]  # fmt: skip
        why = f"redrive: {len(todo)} failed or dead-lettered chunk(s)"
        if left:
            why += f"; {len(left)} chunk(s) never finished: run the batch again to resume them"
    else:
        todo = [c for c in plan.chunks if not is_done(states[c.index], spec, c, storage)]
        done = len(plan.chunks) - len(todo)
        why = f"{len(todo)} chunk(s) to process" + (f", {done} already done" if done else "")
    ledger.reset(spec.batch_id, [c.index for c in todo])
    return todo, why


def is_done(state: ChunkState, spec: BatchSpec, chunk: Chunk, storage: Storage) -> bool:
    """Succeeded with the same input, and its outputs are where the ledger says (a keyed
    batch's chunk: its shuffle parts)."""
    if state.status != SUCCEEDED or state.fingerprint != chunk_fingerprint(spec, chunk):
        return False
    summary = state.chunk_summary()
    if summary is None:
        return False
    if summary.shuffled:  # a keyed batch's chunk: a count per bucket, zeros too
        outputs = [_parts(spec, summary.index, summary.shuffled)]
    elif summary.valid_uri:
        outputs = [[summary.valid_uri]]
    else:
        return False
    if summary.rejected_uri:
        outputs.append([summary.rejected_uri])
    return all(storage.exists(uri) for uris in outputs for uri in uris)


def _parts(spec: BatchSpec, chunk: int, shuffled: list[int]) -> list[str]:
    """The shuffle parts a keyed batch's chunk wrote (``shuffled``: records per bucket)."""
    return [spec.shuffle_part_uri(b, chunk) for b, records in enumerate(shuffled) if records]


def prune_outputs(
    storage: Storage,
    spec: BatchSpec,
    plan: Plan,
    states: list[ChunkState],
    buckets: Sequence[ChunkState] = (),
) -> list[str]:
    """Delete the files under the batch's output that its current plan and ledger rows
    (``states``, and a keyed batch's ``buckets``) do not have: valid and rejected files of
    chunks and buckets the ledger has not as succeeded with that file, shuffle parts of chunks
    it has not as succeeded with that part, dead letters no row names, staged parts no chunk
    reads, local temp files of writes that never completed, and (local delivery) outbox files
    of chunks or buckets whose messages are not numbered (beyond the plan, or their delivery
    starts again). Only names this pipeline writes; returns the URIs removed."""
    keep: set[str] = set()
    numbered: set[tuple[str, int]] = set()
    for unit, rows in (("chunk", states), ("bucket", buckets)):
        for state in rows:
            summary = state.chunk_summary() if state.status == SUCCEEDED else None
            if summary is not None:
                keep.update(u for u in (summary.valid_uri, summary.rejected_uri) if u)
                keep.update(_parts(spec, summary.index, summary.shuffled))
            if state.dead_letter:
                keep.add(state.dead_letter)
            if state.first_message is not None:
                numbered.add((unit, state.chunk))
    parts = {p for chunk in plan.chunks for p in chunk.parts}
    base = spec.output.rstrip("/") + "/"
    removed = []
    for uri in storage.list(spec.output):
        if not uri.startswith(base):
            continue
        name = uri[len(base) :]
        outbox = OUTBOX_FILE.fullmatch(name)
        staged = STAGED_PART.fullmatch(name)
        if TEMP_FILE.fullmatch(name):
            stale = not uri.startswith("s3://")
        elif RESULT_FILE.fullmatch(name):
            stale = uri not in keep
        elif outbox:
            unit, index = outbox.group(1), int(outbox.group(2))
            stale = spec.delivery.target == "local" and (unit, index) not in numbered
        elif staged:
            stale = base + staged.group(1) + ".parquet" not in parts
        else:
            stale = False
        if stale:
            storage.delete(uri)
            removed.append(uri)
    return removed
