"""Which chunks a run must process: resume, redrive and force, decided from the ledger.

- ``run`` (resume): every chunk except those the ledger says succeeded with the same input
  fingerprint and whose outputs still exist. An interrupted run thus continues where it
  stopped, and a finished one does nothing again.
- ``redrive``: only the chunks that failed or were dead-lettered.
- ``force``: every chunk.

A batch force-completed by an operator processes nothing in ``run`` mode.

Chosen chunks go back to ``pending``; delivery progress is never reset, so nothing already
delivered is delivered again.
"""

from __future__ import annotations

from batch_pipeline.core.ledger import (
    COMPLETED_FORCED,
    DEAD_LETTERED,
    FAILED,
    SUCCEEDED,
    ChunkState,
    Ledger,
    chunk_fingerprint,
)
from batch_pipeline.core.models import BatchSpec, Chunk, Plan
from batch_pipeline.core.storage import Storage


def select_chunks(
    ledger: Ledger, storage: Storage, spec: BatchSpec, plan: Plan, run_id: str | None = None
) -> tuple[list[Chunk], str]:
    """Register the plan in the ledger and return the chunks to process, and why."""
    states = {s.chunk: s for s in ledger.register_batch(spec, plan, run_id)}
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
    """Succeeded with the same input, and its outputs are where the ledger says."""
    if state.status != SUCCEEDED or state.fingerprint != chunk_fingerprint(spec, chunk):
        return False
    summary = state.chunk_summary()
    if summary is None or not summary.valid_uri or not storage.exists(summary.valid_uri):
        return False
    return not summary.rejected_uri or storage.exists(summary.rejected_uri)
