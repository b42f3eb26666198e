"""The bucket descriptor (``Bucket``), made from what the chunks wrote (``buckets_from_chunks``),
and what tells that a bucket's outputs are current (``bucket_fingerprint``, ``bucket_done``).

A bucket says where its records are, never carries them: the shuffle parts the chunks wrote
for it (``{batch}/shuffle/bucket-00003/chunk-00012.parquet``), in chunk order, each with the
records its chunk counted, so that the bucket's step reads its keys' records in input order and
checks that none was lost on the way. Like ``Chunk``, it travels between steps (``to_dict`` /
``from_dict``: the ledger's ``descriptor``, dead letters, Dagster's IO manager).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from typing import Any

from batch_pipeline.core.common.errors import ConservationError
from batch_pipeline.core.common.models import BatchSpec, BucketPlan, ChunkSummary
from batch_pipeline.core.ledger import SUCCEEDED, ChunkState, output_digest
from batch_pipeline.core.stores.storage import Storage


@dataclass(frozen=True)
class Bucket:
    """Bucket ``index`` of ``buckets_in_plan``: every record whose key hashes to it
    (``key_column``, hash ``scheme``), in the parts ``parts`` (URIs, in chunk order) that the
    chunks ``chunks`` wrote, holding ``records`` records each."""

    index: int
    buckets_in_plan: int
    key_column: str
    scheme: str
    chunks: tuple[int, ...] = ()
    parts: tuple[str, ...] = ()
    records: tuple[int, ...] = ()

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Bucket:
        """The inverse of ``to_dict``."""
        values = dict(data)
        values["buckets_in_plan"] = values.pop("count")
        for name in ("chunks", "parts", "records"):
            values[name] = tuple(values.get(name, ()))
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        """As stored and sent: ``buckets_in_plan`` under ``count``, as a chunk's."""
        return {("count" if k == "buckets_in_plan" else k): v for k, v in asdict(self).items()}

    @property
    def total_records(self) -> int:
        return sum(self.records)

    @property
    def key(self) -> str:
        """Deterministic mapping key, valid for Dagster: ``bucket_00003``."""
        return f"bucket_{self.index:05d}"

    def describe(self) -> str:
        """``bucket_00003 of 8 (1,234 records of key 'device' from 5 chunk(s))``."""
        return (
            f"{self.key} of {self.buckets_in_plan} ({self.total_records:,} records of key "
            f"{self.key_column!r} from {len(self.parts)} chunk(s))"
        )


def buckets_from_chunks(
    spec: BatchSpec, plan: BucketPlan, summaries: list[ChunkSummary]
) -> list[Bucket]:
    """Every bucket of the plan, with the parts the chunks (``summaries``: each of the batch's
    chunks, succeeded) wrote for it, in chunk order. Raises ConservationError when a chunk
    sent its records to another number of buckets (a summary of another plan)."""
    ordered = sorted(summaries, key=lambda s: s.index)
    wrong = [s.key for s in ordered if len(s.shuffled) != plan.count and s.records_out]
    if wrong:
        raise ConservationError(
            f"batch {spec.batch_id}: {', '.join(wrong[:5])} sent records to other buckets than "
            f"the plan's {plan.count}; run the batch with force to shuffle it again"
        )
    found: list[list[tuple[int, str, int]]] = [[] for _ in range(plan.count)]
    for summary in ordered:
        for bucket, records in enumerate(summary.shuffled):
            if records:
                uri = spec.shuffle_part_uri(bucket, summary.index)
                found[bucket].append((summary.index, uri, records))
    return [
        Bucket(
            index=index,
            buckets_in_plan=plan.count,
            key_column=plan.key_column,
            scheme=plan.scheme,
            chunks=tuple(c for c, _, _ in parts),
            parts=tuple(u for _, u, _ in parts),
            records=tuple(n for _, _, n in parts),
        )
        for index, parts in enumerate(found)
    ]


def bucket_fingerprint(spec: BatchSpec, bucket: Bucket) -> str:
    """Changes whenever the bucket's output could: another source content, other parts or
    counts, other parse, processor, chunking or output settings."""
    payload = {
        "source": spec.source.info.fingerprint,
        "bucket": bucket.to_dict(),
        "out": output_digest(spec),
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


def bucket_done(
    state: ChunkState | None, spec: BatchSpec, bucket: Bucket, storage: Storage
) -> bool:
    """Succeeded with the same parts and settings, and its outputs are where the ledger says."""
    if state is None or state.status != SUCCEEDED:
        return False
    if state.fingerprint != bucket_fingerprint(spec, bucket):
        return False
    summary = state.chunk_summary()
    if summary is None or not summary.valid_uri or not storage.exists(summary.valid_uri):
        return False
    return not summary.rejected_uri or storage.exists(summary.rejected_uri)
