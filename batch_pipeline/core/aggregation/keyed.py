"""A keyed batch's result comes from its buckets: ``keyed_stage`` reads their ledger rows,
``check_shuffle`` checks that each bucket processed exactly the records its chunks sent it,
and ``bucket_results`` is the manifest's account of them.

In a keyed batch (``core.shuffle``) a chunk's ``records_out`` counts the records it sent to
the buckets, not valid records; the batch's records out are its buckets', its rejects the
chunks' (records that did not parse) plus the buckets'. Conservation holds per chunk (in =
shuffled + rejected), per bucket (in = out + rejected), across the shuffle (each bucket's in =
what every chunk sent it) and overall (records in = out + rejected). Tolerated failures count
buckets; a chunk that did not succeed fails the batch, since no bucket may run without every
record of its keys.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from batch_pipeline.core.common.errors import ConservationError
from batch_pipeline.core.common.models import BatchSpec, ChunkSummary
from batch_pipeline.core.ledger import DEAD_LETTERED, FAILED, SUCCEEDED, ChunkState


@dataclass
class KeyedStage:
    """The buckets of a keyed batch, from the ledger: every row, the summaries of those that
    succeeded, those that failed (failed or dead-lettered) and those that never finished."""

    states: list[ChunkState]
    summaries: list[ChunkSummary]
    failed: list[ChunkState]
    pending: list[ChunkState]

    def failure(self, chunks: list[ChunkState]) -> str | None:
        """Why the batch fails whatever the tolerance: a chunk that was not shuffled."""
        unshuffled = [s for s in chunks if s.status != SUCCEEDED]
        if not unshuffled:
            return None
        first = unshuffled[0]
        return (
            f"{len(unshuffled)} of {len(chunks)} chunk(s) were not shuffled to buckets (first: "
            f"chunk_{first.chunk:05d}, {first.status}): no bucket runs without every record of "
            "its keys; redrive the batch"
        )


def succeeded_summaries(states: list[ChunkState], unit: str) -> list[ChunkSummary]:
    """The summaries of the rows that succeeded, each balanced (in = out + rejected); raises
    ConservationError naming the chunks or buckets that are not."""
    summaries: list[ChunkSummary] = []
    for state in states:
        if state.status == SUCCEEDED:
            summary = state.chunk_summary()
            if summary is None:
                raise ConservationError(f"{unit} {state.chunk} succeeded without a summary")
            summaries.append(summary)
    unbalanced = [s for s in summaries if not s.balanced]
    if unbalanced:
        detail = "; ".join(
            f"{s.key}: {s.records_in} in != {s.records_out} out + {s.records_rejected} rejected"
            for s in unbalanced
        )
        raise ConservationError(f"records not conserved in {len(unbalanced)} {unit}(s): {detail}")
    return summaries


def keyed_stage(
    spec: BatchSpec, chunks: list[ChunkSummary], buckets: list[ChunkState] | None
) -> KeyedStage | None:
    """The batch's buckets (None: a batch of one stage). Raises ConservationError when its
    chunks were shuffled but no bucket rows are given: its result would count the records
    sent to buckets as valid ones."""
    if not buckets:
        if any(s.shuffled for s in chunks):
            raise ConservationError(
                f"batch {spec.batch_id}: its chunks sent their records to buckets, but its "
                "result was asked for without them (give aggregate the bucket rows: "
                "ledger.buckets.chunk_states)"
            )
        return None
    return KeyedStage(
        states=buckets,
        summaries=succeeded_summaries(buckets, "bucket"),
        failed=[s for s in buckets if s.status in (FAILED, DEAD_LETTERED)],
        pending=[s for s in buckets if s.status not in (SUCCEEDED, FAILED, DEAD_LETTERED)],
    )


def check_shuffle(
    spec: BatchSpec, chunks: list[ChunkState], summaries: list[ChunkSummary], stage: KeyedStage
) -> None:
    """Once every chunk succeeded: each succeeded bucket took in exactly the records the chunks
    sent it (``ChunkSummary.shuffled``), else ConservationError naming the bucket."""
    if any(s.status != SUCCEEDED for s in chunks):
        return
    count = len(stage.states)
    sent = [0] * count
    for summary in summaries:
        if len(summary.shuffled) != count:
            raise ConservationError(
                f"batch {spec.batch_id}: {summary.key} sent records to "
                f"{len(summary.shuffled)} bucket(s), the batch has {count}"
            )
        sent = [a + b for a, b in zip(sent, summary.shuffled, strict=True)]
    wrong = [s for s in stage.summaries if s.records_in != sent[s.index]]
    if wrong:
        detail = "; ".join(
            f"{s.key} took {s.records_in:,}, its chunks sent {sent[s.index]:,}" for s in wrong
        )
        raise ConservationError(
            f"batch {spec.batch_id}: records lost or invented in the shuffle: {detail}"
        )


def bucket_results(stage: KeyedStage) -> dict[str, Any]:
    """The manifest's ``results.buckets``: succeeded, failed and pending buckets."""
    return {
        "succeeded": [s.manifest_entry("bucket") for s in stage.summaries],
        "failed": [failed_entry(s, "bucket") for s in stage.failed],
        "pending": [
            {"bucket": s.chunk, "status": s.status, "attempts": s.attempts} for s in stage.pending
        ],
    }


def failed_entry(state: ChunkState, unit: str = "chunk") -> dict[str, Any]:
    """A failed chunk (or bucket) as the result and the manifest list it. A bucket's entry
    says how many records the chunks sent it (``records_in``): they are in the batch's records
    in, and neither out nor rejected until a redrive processes them."""
    entry = {
        unit: state.chunk,
        "status": state.status,
        "attempts": state.attempts,
        "category": state.error_category,
        "error": state.error_message,
        "dead_letter": state.dead_letter,
    }
    if unit == "bucket" and state.descriptor:
        entry["records_in"] = sum(json.loads(state.descriptor).get("records", []))
    return entry
