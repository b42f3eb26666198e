"""The history the tuner learns from: ``ChunkObservation`` (one finished chunk of an earlier
batch), the ``WorkloadKey`` that says which earlier batches tell about this one (same processor,
format, compression, optionally processor options), and ``history_from_ledger``, which reads
the finished chunks of a workload's batches from the ledger."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from batch_pipeline.core.common.errors import ConfigError
from batch_pipeline.core.common.models import BatchSpec
from batch_pipeline.core.common.settings import Batch
from batch_pipeline.core.inputs.sources import detect_format
from batch_pipeline.core.ledger import DEAD_LETTERED, FAILED, SUCCEEDED, Ledger


@dataclass(frozen=True)
class ChunkObservation:
    """One finished chunk of an earlier batch.

    ``chunk_records``: the planned records per chunk of its batch. ``records``: what the chunk
    read (for a failed chunk, what it was planned to hold, or 0). ``seconds`` and
    ``peak_rss_bytes``: of its successful attempt (0 when it failed). ``attempts``: all of its
    attempts, failed ones included. ``tuned_records``: the size the tuner chose for its batch
    before the per-input spread (None: not recorded)."""

    chunk_records: int
    records: int
    seconds: float
    peak_rss_bytes: int
    attempts: int = 1
    failed: bool = False
    error_category: str | None = None
    finished_at: float | None = None
    batch_id: str = ""
    chunk: int = 0
    tuned_records: int | None = None

    @property
    def measured(self) -> bool:
        return not self.failed and self.records > 0 and self.seconds > 0

    @property
    def rate(self) -> float:
        """Records per second of its own processing time."""
        return self.records / self.seconds if self.measured else 0.0

    @property
    def failed_attempts(self) -> int:
        attempts = max(self.attempts, 1)
        return attempts if self.failed else attempts - 1


FILE_SET_SUFFIX = "-set"


@dataclass(frozen=True)
class WorkloadKey:
    """Which earlier batches tell about this one: same processor, format and compression, and,
    when ``options`` is set, the same processor options (``options_digest``)."""

    processor: str
    format: str
    compression: str | None = None
    options: str | None = None

    def matches(self, other: WorkloadKey) -> bool:
        same = (self.processor, self.format, self.compression) == (
            other.processor,
            other.format,
            other.compression,
        )
        return same and (self.options is None or self.options == other.options)


def options_digest(options: dict[str, Any] | None) -> str:
    payload = json.dumps(options or {}, sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def workload_key(spec: BatchSpec, *, match_options: bool = False) -> WorkloadKey:
    """The workload of a prepared batch (format and compression as initialize resolved them;
    a file set is a workload of its own, ``csv-set``: its rate includes a cost per file)."""
    return WorkloadKey(
        spec.processor,
        spec.source.format + (FILE_SET_SUFFIX if spec.source.is_file_set else ""),
        spec.source.compression,
        options_digest(spec.processor_options) if match_options else None,
    )


def workload_key_from_config(config: dict[str, Any], source_uri: str) -> WorkloadKey | None:
    """The workload of a batch from the run config the ledger kept (``bp_batches.config``) and
    its source; None when the config does not say (no processor, a format it cannot tell)."""
    processor = config.get("processor")
    if not isinstance(processor, str):
        return None
    members = config.get("members")
    if members and isinstance(members, list):  # a file set: its files' format
        uri = source_uri.rstrip("/") + "/" + str(members[0]).lstrip("/")
    else:
        uri = source_uri
    try:
        fmt, compression = detect_format(
            uri,
            str(config.get("format") or Batch.format.default),
            str(config.get("compression") or Batch.compression.default),
        )
    except ConfigError:
        return None
    if members:
        fmt, compression = fmt + FILE_SET_SUFFIX, None
    options = config.get("processor_options")
    return WorkloadKey(
        processor, fmt, compression, options_digest(options if isinstance(options, dict) else {})
    )


def history_from_ledger(
    ledger: Ledger,
    key: WorkloadKey,
    limit: int = 500,
    *,
    scan_batches: int = 500,
    exclude_batch_id: str | None = None,
) -> list[ChunkObservation]:
    """The most recent ``limit`` finished chunks (succeeded, failed, dead-lettered) of batches of
    workload ``key``, oldest first. Read-only.

    The ``scan_batches`` most recently updated batches are matched on their stored config
    (``workload_key_from_config``); ``exclude_batch_id`` leaves one out (the batch being planned,
    when it ran before). A batch's planned size is the larger of its config's
    ``chunking.chunk_records`` and its largest chunk descriptor (``max_chunks`` or coarse row
    groups may have grown it); its tuned size, of ``config["tuning"]["workload_chunk_records"]``
    when present. A failed chunk's records and seconds in the row may be those of an earlier
    success (a forced re-run keeps them): they are not used."""
    b, c = ledger.batches.c, ledger.chunks.c
    matching: dict[str, dict[str, Any]] = {}
    rows: list[Any] = []
    with ledger.engine.connect() as conn:
        batches = conn.execute(
            sa.select(b.batch_id, b.source_uri, b.config)
            .order_by(b.updated_at.desc())
            .limit(scan_batches)
        ).all()
        for row in batches:
            if row.batch_id == exclude_batch_id:
                continue
            try:
                config = json.loads(row.config) if row.config else {}
            except ValueError:
                continue
            found = workload_key_from_config(config, row.source_uri) if config else None
            if found is not None and key.matches(found):
                matching[row.batch_id] = config
        ids = list(matching)
        for i in range(0, len(ids), 500):
            query = (
                sa.select(
                    c.batch_id,
                    c.chunk,
                    c.status,
                    c.attempts,
                    c.error_category,
                    c.records_in,
                    c.seconds,
                    c.peak_rss_bytes,
                    c.finished_at,
                    c.descriptor,
                )
                .where(
                    c.batch_id.in_(ids[i : i + 500]),
                    c.status.in_((SUCCEEDED, FAILED, DEAD_LETTERED)),
                    c.finished_at.is_not(None),
                )
                .order_by(c.finished_at.desc())
                .limit(limit)
            )
            rows.extend(conn.execute(query).all())
    rows.sort(key=lambda r: (float(r.finished_at), r.batch_id, r.chunk), reverse=True)
    rows = rows[:limit]
    planned: dict[str, int] = {}
    descriptor_records: dict[tuple[str, int], int | None] = {}
    for row in rows:
        records = _descriptor_records(row.descriptor)
        descriptor_records[(row.batch_id, row.chunk)] = records
        target = (matching[row.batch_id].get("chunking") or {}).get("chunk_records")
        size = max(records or 0, target if isinstance(target, int) else 0)
        planned[row.batch_id] = max(planned.get(row.batch_id, 0), size)
    observations = []
    for row in reversed(rows):
        failed = row.status != SUCCEEDED
        tuned = (matching[row.batch_id].get("tuning") or {}).get("workload_chunk_records")
        planned_records = descriptor_records[(row.batch_id, row.chunk)]
        observations.append(
            ChunkObservation(
                chunk_records=planned[row.batch_id] or int(row.records_in or 0),
                records=int(planned_records or 0) if failed else int(row.records_in or 0),
                seconds=0.0 if failed else float(row.seconds or 0.0),
                peak_rss_bytes=0 if failed else int(row.peak_rss_bytes or 0),
                attempts=int(row.attempts or 0),
                failed=failed,
                error_category=row.error_category,
                finished_at=float(row.finished_at),
                batch_id=row.batch_id,
                chunk=int(row.chunk),
                tuned_records=tuned if isinstance(tuned, int) else None,
            )
        )
    return observations


def _descriptor_records(descriptor: str | None) -> int | None:
    if not descriptor:
        return None
    try:
        records = json.loads(descriptor).get("records")
    except (ValueError, AttributeError):
        return None
    return int(records) if isinstance(records, int) else None
