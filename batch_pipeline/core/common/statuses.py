"""The statuses the ledger records, as ``StrEnum`` members (each equal to its text, which is what
the ``status`` columns hold).

A chunk (``ChunkStatus``) is ``pending`` (planned, or waiting for a retry), ``running`` (an
attempt started; stays so if its process died), ``succeeded``, ``failed`` (the last attempt
failed; a retry, redrive or resume will take it) or ``dead_lettered`` (gave up; in the
dead-letter store). A batch (``BatchStatus``) is ``running`` from its registration until the
aggregate step records its outcome, ``succeeded``, ``partial`` (some chunks failed, within the
run's tolerance) or ``failed``, or ``completed_forced`` (an operator force-completed it).

The module-level names (``PENDING``, ``SUCCEEDED``, ``COMPLETED_FORCED``, ...) are the members
under their earlier names. They live in ``core.common`` so that the models (``ChunkSummary``) can
use them too; ``batch_pipeline.core.ledger`` re-exports every name here.
"""

from __future__ import annotations

from enum import StrEnum


class ChunkStatus(StrEnum):
    """Where a chunk is (``bp_chunks.status``)."""

    PENDING = "pending"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    DEAD_LETTERED = "dead_lettered"


class BatchStatus(StrEnum):
    """Where a batch is (``bp_batches.status``)."""

    RUNNING = "running"
    SUCCEEDED = "succeeded"
    PARTIAL = "partial"
    FAILED = "failed"
    COMPLETED_FORCED = "completed_forced"


PENDING = ChunkStatus.PENDING
RUNNING = ChunkStatus.RUNNING
SUCCEEDED = ChunkStatus.SUCCEEDED
FAILED = ChunkStatus.FAILED
DEAD_LETTERED = ChunkStatus.DEAD_LETTERED
CHUNK_STATUSES = tuple(ChunkStatus)
COMPLETED_FORCED = BatchStatus.COMPLETED_FORCED
