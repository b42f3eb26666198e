"""Adaptive chunk size: the next batch's ``chunk_records`` from the chunks of earlier batches.

The history is a list of ``ChunkObservation`` (one finished chunk each: its batch's planned
records per chunk, the records it read, its seconds, its peak RSS, its attempts and whether it
failed), read from the ledger by ``history_from_ledger`` for batches of the same workload
(``WorkloadKey``: processor, format, compression, optionally the processor's options).
``choose_chunk_records`` turns it into a ``Decision``: the size, every reason with the figures
behind it, the figures themselves, and ``to_metadata()`` for the run's metadata.

"The last size" below is the planned size of the most recent batch in the history (its
``tuned_records`` when recorded: the size chosen before the per-input spread of rule 4). A
*measured* chunk is one that succeeded with records and seconds; its *rate* is records per
second of its own processing time (``ChunkSummary.seconds``: read, process, write; the
orchestrator's per-step cost is not in it and comes from ``TuningSettings``). The rules are
applied in the order 1, 2, 3, 6, the deadband and per-run factor of 8, 7, 5, the clamp and
rounding of 8, and 4 last:

1. **Cold start.** With fewer than ``min_samples`` (3) measured chunks, the documented default,
   ``default_chunk_records`` (500,000, ``ChunkingSettings``' default). Rules 2-4 and 6 need
   measurements and are skipped; the error and memory rules (5, 7) still apply to what the
   history shows (a batch that ran out of memory must not get the same size again).
2. **Orchestration (lower bound).** A step costs ``step_overhead_seconds`` (0.11 s in process,
   0.35 s forkserver, 1.9 s spawn: ``STEP_OVERHEAD_SECONDS``) besides its work. For that to be
   at most ``max_overhead_share`` (5%) of the step, the work must last at least
   ``overhead * (1 - share) / share`` seconds (2.09 s in process), so chunks need at least
   ``rate * that`` records, the rate being the median rate at the last size (else at the
   nearest size measured). Below it, grow to it.
3. **Retries (upper bound).** A step should last at most ``max_step_seconds`` (60 s), so that a
   retry or a dead letter costs little: at most ``rate * max_step_seconds`` records. Above it,
   shrink to it. Retries win when the two bounds cross.
4. **Spread (per input).** With ``total_records`` known (and no cold start), the input is cut
   into at least ``workers * chunks_per_worker`` chunks (``default_concurrency()`` x 2), unless
   that would make steps shorter than the lower bound of rule 2, which then wins. This adjusts
   one input only: ``Decision.workload_chunk_records`` is the size before it, and what the next
   decision should start from. Pass ``workers=1`` for the in-process executor (one step at a
   time).
5. **Memory.** A step's peak RSS grows about linearly with its records: ``baseline + b *
   records``. Per planned size, the highest peak of its full chunks (at least half the planned
   size) is one point; with two or more sizes at least 25% apart, a least-squares line through
   the points gives ``b`` and the baseline. With one size, or a line that does not rise or
   starts below zero, ``b`` is ``(peak - baseline) / records`` at the largest size seen (the
   highest per-record cost when memory grows faster than records, the lowest when it does not
   grow), with the baseline ``baseline_rss_bytes`` if given, else 0 (blaming the whole process
   on the records: cautious). Then records <= ``memory_budget_bytes * memory_safety / b``
   (1 GiB x 0.8 of working memory above the baseline), and, with ``memory_limit_bytes`` (the
   whole process' RSS), records <= ``(limit * safety - baseline) / b``. A chunk that failed
   with ``out_of_memory`` caps the size at half the planned size it had. Memory is a hard cap:
   it may shrink by more than the per-run factor of rule 8, and wins over
   ``min_chunk_records``.
6. **Throughput plateau.** With two or more sizes of at least ``min_samples_per_size`` (3)
   measured chunks, the median rate per size shows whether bigger chunks are faster per record
   (fixed costs inside a step: opening, range requests, writing files). The plateau starts at
   the smallest size within ``plateau_tolerance`` (15%, the machine's drift between runs) of
   the best rate. While the largest size measured is faster than every smaller one by more
   than the tolerance, and it is the last size, grow x2 to look for the plateau. Once a
   plateau is seen, there is no growth for speed. Rule 2 still applies (the per-step overhead
   is outside the measured seconds, so a plateau of per-chunk speed says nothing about it),
   and speed alone never shrinks the size: across runs the machine drifts as much as the
   tolerance, and shrinking on it would oscillate.
7. **Errors.** Over the last ``error_window`` (50) chunks: failed attempts / attempts (a
   succeeded chunk with n attempts had n - 1 failed ones; a failed or dead-lettered one failed
   every attempt). Failures that no chunk size avoids (``config``, ``access_denied``,
   ``missing_object``, ``client_error``) are left out. At ``error_rate_shrink`` (10%) or more,
   halve the last size; above ``error_rate_hold`` (2%), do not grow. When most failures whose
   category is known are throttling, hold instead of halving: smaller chunks make more
   requests, not fewer (lower the concurrency instead). Only failed and dead-lettered chunks
   have a known category: the ledger clears it when a retry succeeds (and only transient
   failures are retried).
8. **Limits.** Changes of less than ``deadband`` (10%) of the last size are not made (the
   measurements drift more than that), then the size stays within x``max_step_factor`` (2) and
   /2 of the last size (no oscillation from one noisy run), memory excepted, and within
   ``[min_chunk_records, max_chunk_records]`` (10,000 and 20,000,000). It is rounded to
   ``significant_digits`` (2) significant digits: up when it was grown to a lower bound, down
   when an upper bound set it, else to the nearest.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import statistics
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import sqlalchemy as sa

from batch_pipeline.core.common.errors import ConfigError
from batch_pipeline.core.common.models import BatchSpec, ChunkingSettings, SourceSpec
from batch_pipeline.core.inputs.sources import detect_format
from batch_pipeline.core.ledger import DEAD_LETTERED, FAILED, SUCCEEDED, Ledger

# Per mapped step, measured on this project's 2-core machine (README, Executor).
STEP_OVERHEAD_SECONDS: dict[str, float] = {"in_process": 0.11, "forkserver": 0.35, "spawn": 1.9}
GIB = 1 << 30
DEFAULT_CHUNK_RECORDS = ChunkingSettings().chunk_records
# Failures that another chunk size would not avoid: they say nothing about the size.
SIZE_INDEPENDENT_ERRORS = frozenset({"config", "access_denied", "missing_object", "client_error"})
THROTTLED = "throttled"
OUT_OF_MEMORY = "out_of_memory"
METADATA_PREFIX = "tuning_"

Rounding = Literal["up", "down", "nearest"]
Figure = int | float | str | None


def default_concurrency() -> int:
    """How many steps may run at once by default: ``os.cpu_count()`` (1 when unknown). It counts
    the machine's CPUs, not a container's CPU quota; set ``max_concurrent`` where they differ."""
    return os.cpu_count() or 1


@dataclass(frozen=True)
class TuningSettings:
    """What ``choose_chunk_records`` aims for; see the module's docstring for the rules."""

    step_overhead_seconds: float = STEP_OVERHEAD_SECONDS["in_process"]
    max_overhead_share: float = 0.05
    max_step_seconds: float = 60.0
    memory_budget_bytes: int = GIB
    memory_safety: float = 0.8
    memory_limit_bytes: int | None = None
    baseline_rss_bytes: int | None = None
    workers: int = field(default_factory=default_concurrency)
    chunks_per_worker: int = 2
    min_chunk_records: int = 10_000
    max_chunk_records: int = 20_000_000
    default_chunk_records: int = DEFAULT_CHUNK_RECORDS
    min_samples: int = 3
    min_samples_per_size: int = 3
    plateau_tolerance: float = 0.15
    max_step_factor: float = 2.0
    deadband: float = 0.1
    error_window: int = 50
    error_rate_hold: float = 0.02
    error_rate_shrink: float = 0.1
    significant_digits: int = 2

    def __post_init__(self) -> None:
        problems = []
        if self.step_overhead_seconds < 0:
            problems.append("step_overhead_seconds must be >= 0")
        if not 0 < self.max_overhead_share < 1:
            problems.append("max_overhead_share must be between 0 and 1")
        if self.max_step_seconds <= 0:
            problems.append("max_step_seconds must be > 0")
        if self.memory_budget_bytes <= 0 or not 0 < self.memory_safety <= 1:
            problems.append("memory_budget_bytes must be > 0 and memory_safety in (0, 1]")
        if self.workers < 1 or self.chunks_per_worker < 1:
            problems.append("workers and chunks_per_worker must be >= 1")
        if not 1 <= self.min_chunk_records <= self.max_chunk_records:
            problems.append("need 1 <= min_chunk_records <= max_chunk_records")
        if self.default_chunk_records < 1 or self.min_samples < 1 or self.error_window < 1:
            problems.append("default_chunk_records, min_samples and error_window must be >= 1")
        if self.max_step_factor <= 1 or self.plateau_tolerance < 0 or self.deadband < 0:
            problems.append("max_step_factor must be > 1, plateau_tolerance and deadband >= 0")
        if not 0 <= self.error_rate_hold <= self.error_rate_shrink <= 1:
            problems.append("need 0 <= error_rate_hold <= error_rate_shrink <= 1")
        if self.significant_digits < 1:
            problems.append("significant_digits must be >= 1")
        if problems:
            raise ConfigError("tuning settings: " + "; ".join(problems))

    @property
    def min_step_seconds(self) -> float:
        """The shortest step whose overhead is at most ``max_overhead_share`` of it."""
        share = self.max_overhead_share
        return self.step_overhead_seconds * (1 - share) / share


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


@dataclass
class Decision:
    """The next chunk size, why, and the figures it came from."""

    chunk_records: int
    reasons: list[str]
    inputs: dict[str, Figure]
    cold_start: bool
    workload_chunk_records: int

    @property
    def reason(self) -> str:
        return "; ".join(self.reasons)

    def to_metadata(self) -> dict[str, str | int | float]:
        """Flat ``tuning_``-prefixed figures for Dagster metadata (figures that are unknown in
        this decision are left out)."""
        meta: dict[str, str | int | float] = {
            "tuning_chunk_records": self.chunk_records,
            "tuning_workload_chunk_records": self.workload_chunk_records,
            "tuning_cold_start": int(self.cold_start),
            "tuning_reasons": "\n".join(self.reasons),
        }
        for key, value in self.inputs.items():
            if value is not None:
                meta[METADATA_PREFIX + key] = value
        return meta


# Workloads -------------------------------------------------------------------------------------


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
            str(config.get("format") or "auto"),
            str(config.get("compression") or "auto"),
        )
    except ConfigError:
        return None
    if members:
        fmt, compression = fmt + FILE_SET_SUFFIX, None
    options = config.get("processor_options")
    return WorkloadKey(
        processor, fmt, compression, options_digest(options if isinstance(options, dict) else {})
    )


def estimate_total_records(source: SourceSpec) -> int | None:
    """Records of a source before planning, from what initialize learned: exact for Parquet,
    sheet rows for Excel, size / sampled bytes per record for uncompressed CSV and JSON Lines
    and for file sets (the first file's); None for JSON documents and compressed text (known
    only once staged)."""
    layout = source.layout
    if source.is_file_set:  # its size over the first file's bytes per record
        per_file_set_record = layout.get("record_bytes_estimate")
        return round(source.info.size / float(per_file_set_record)) if per_file_set_record else None
    if source.needs_staging:
        return None
    if source.format == "parquet":
        return int(layout.get("num_rows") or sum(layout.get("row_groups", [])))
    if source.format == "excel":
        sheets = [s for s in layout.get("sheets", []) if not s.get("empty")]
        return sum(max(int(s["max_row"] or 0) - int(s["header_row"] or 0), 0) for s in sheets)
    per_record = layout.get("bytes_per_record")
    if not per_record:
        return None
    return max(0, round((source.info.size - source.data_start) / float(per_record)))


# History from the ledger -------------------------------------------------------------------------


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


# The decision ------------------------------------------------------------------------------------


def choose_chunk_records(
    history: Iterable[ChunkObservation],
    settings: TuningSettings | None = None,
    total_records: int | None = None,
) -> Decision:
    """The records per chunk of the next batch of a workload, from its ``history`` (in
    chronological order; ``finished_at``, where given, orders it). See the module's docstring
    for the rules."""
    s = settings or TuningSettings()
    obs = sorted(history, key=lambda o: -math.inf if o.finished_at is None else o.finished_at)
    measured = [o for o in obs if o.measured]
    cold = len(measured) < s.min_samples
    last = obs[-1] if obs else None
    anchor = (last.tuned_records or last.chunk_records) if last else s.default_chunk_records
    anchor = max(anchor, 1)
    inputs: dict[str, Figure] = {
        "previous_chunk_records": anchor if last else None,
        "chunks_seen": len(obs),
        "samples": len(measured),
        "sizes_seen": len({o.chunk_records for o in measured}),
        "step_overhead_seconds": s.step_overhead_seconds,
        "workers": s.workers,
        "total_records": total_records,
    }
    reasons: list[str] = []
    rounding: Rounding = "nearest"
    lower: int | None = None
    upper: int | None = None

    if cold:
        value = s.default_chunk_records
        seen = (
            "no history for this workload"
            if not obs
            else f"{len(measured)} measured chunk(s) in the history, fewer than {s.min_samples}"
        )
        reasons.append(f"cold start: {seen}: the default {value:,} records per chunk")
    else:
        value, rounding, lower, upper = _rate_rules(measured, anchor, s, inputs, reasons)

    high_step = s.max_chunk_records
    if not cold:
        if value != anchor and abs(value - anchor) < s.deadband * anchor:
            reasons.append(
                f"{value:,} is within {s.deadband:.0%} of the last size {anchor:,}: keep it"
            )
            value, rounding = anchor, "nearest"
        low_step, high_step = math.ceil(anchor / s.max_step_factor), int(anchor * s.max_step_factor)
        if value > high_step:
            reasons.append(
                f"growth capped at x{s.max_step_factor:g} of the last size per run: "
                f"{high_step:,} instead of {value:,}"
            )
            value, rounding = high_step, "down"
        elif value < low_step:
            reasons.append(
                f"shrinking capped at /{s.max_step_factor:g} of the last size per run: "
                f"{low_step:,} instead of {value:,}"
            )
            value, rounding = low_step, "up"

    memory_cap: int | None = None
    if obs:
        value, rounding = _error_rule(obs, anchor, value, rounding, s, inputs, reasons)
        memory_cap = _memory_cap(obs, measured, s, inputs, reasons)
        if memory_cap is not None and value > memory_cap:
            beyond = (
                f", more than /{s.max_step_factor:g} of {anchor:,} per run: memory comes first"
                if not cold and memory_cap < anchor / s.max_step_factor
                else ""
            )
            reasons.append(f"memory caps the size at {memory_cap:,} records{beyond}")
            value, rounding = memory_cap, "down"

    value = _clamp(value, s, memory_cap, reasons)
    cap = min(s.max_chunk_records, memory_cap or s.max_chunk_records)
    if high_step >= s.min_chunk_records:
        cap = min(cap, high_step)
    workload = _round(value, s, rounding, cap)
    final = workload
    if not cold and total_records is not None:
        final = _spread(workload, total_records, lower, s, inputs, reasons)
    if final != anchor or not last:
        reasons.append(f"chunk_records {anchor:,} -> {final:,}" if last else f"-> {final:,}")
    else:
        reasons.append(f"chunk_records stays {final:,}")
    inputs["lower_bound_records"] = lower
    inputs["upper_bound_records"] = upper
    return Decision(final, reasons, inputs, cold, workload)


def _rate_rules(
    measured: Sequence[ChunkObservation],
    anchor: int,
    s: TuningSettings,
    inputs: dict[str, Figure],
    reasons: list[str],
) -> tuple[int, Rounding, int, int]:
    """Rules 2, 3 and 6: (the size they ask for, how to round it, lower bound, upper bound)."""
    by_size: dict[int, list[float]] = {}
    for o in measured:
        by_size.setdefault(o.chunk_records, []).append(o.rate)
    at = min(by_size, key=lambda size: (abs(math.log(size / anchor)), -size))
    rate = statistics.median(by_size[at])
    step = anchor / rate
    overhead = s.step_overhead_seconds
    share = overhead / (overhead + step) if overhead + step > 0 else 0.0
    lower = max(1, math.ceil(rate * s.min_step_seconds))
    upper = max(1, math.floor(rate * s.max_step_seconds))
    inputs.update(
        rate_records_per_second=round(rate, 1),
        rate_at_chunk_records=at,
        rate_samples=len(by_size[at]),
        step_seconds=round(step, 3),
        overhead_share=round(share, 4),
    )
    where = "" if at == anchor else f" (nearest size measured to the last, {anchor:,})"
    seen = (
        f"median {_rate(rate)} records/s per chunk at {at:,} records/chunk{where} "
        f"({len(by_size[at])} chunks): a step of {_secs(step)} for {anchor:,} records"
    )
    value = anchor
    rounding: Rounding = "nearest"
    if lower > upper:
        reasons.append(
            f"{seen}; steps of at least {_secs(s.min_step_seconds)} ({lower:,} records) to keep "
            f"the {_secs(overhead)} per-step overhead under {_pct(s.max_overhead_share)} would be "
            f"longer than {_secs(s.max_step_seconds)} ({upper:,} records): retries win, "
            f"{upper:,}"
        )
        value, rounding = upper, "down"
    elif anchor < lower:
        reasons.append(
            f"{seen}; {_secs(overhead)} per-step overhead is {_pct(share)} > "
            f"{_pct(s.max_overhead_share)} target: steps need at least "
            f"{_secs(s.min_step_seconds)}, {lower:,} records -> grow"
        )
        value, rounding = lower, "up"
    elif anchor > upper:
        reasons.append(
            f"{seen} > {_secs(s.max_step_seconds)} for cheap retries: at most {upper:,} records "
            "-> shrink"
        )
        value, rounding = upper, "down"
    else:
        reasons.append(
            f"{seen}; {_secs(overhead)} per-step overhead is {_pct(share)} <= "
            f"{_pct(s.max_overhead_share)} and the step <= {_secs(s.max_step_seconds)}: "
            f"within {lower:,}-{upper:,} records"
        )

    rates = {
        size: statistics.median(r)
        for size, r in by_size.items()
        if len(r) >= s.min_samples_per_size
    }
    if len(rates) < 2:
        return value, rounding, lower, upper
    tol = s.plateau_tolerance
    best = max(rates.values())
    plateau = min(size for size, r in rates.items() if r * (1 + tol) >= best)
    largest = max(rates)
    listed = ", ".join(f"{_rate(rates[size])}/s at {size:,}" for size in sorted(rates))
    inputs["plateau_chunk_records"] = plateau if plateau < largest else None
    if plateau == largest:
        if anchor >= largest and value < min(2 * anchor, upper):
            reasons.append(
                f"records/s per chunk still rising with size ({listed}): more than "
                f"{tol:.0%} faster at {largest:,} than below -> try {min(2 * anchor, upper):,}"
            )
            value, rounding = min(2 * anchor, upper), "down"
        return value, rounding, lower, upper
    reasons.append(
        f"throughput plateau from {plateau:,} records ({listed}): larger chunks are not more "
        f"than {tol:.0%} faster per record -> no growth for speed (the per-step overhead of "
        "rule 2 still counts)"
    )
    return value, rounding, lower, upper


def _error_rule(
    obs: Sequence[ChunkObservation],
    anchor: int,
    value: int,
    rounding: Rounding,
    s: TuningSettings,
    inputs: dict[str, Figure],
    reasons: list[str],
) -> tuple[int, Rounding]:
    """Rule 7: shrink or hold after errors."""
    window = obs[-s.error_window :]
    counted = [o for o in window if o.error_category not in SIZE_INDEPENDENT_ERRORS]
    ignored = len(window) - len(counted)
    attempts = sum(max(o.attempts, 1) for o in counted)
    failed = sum(o.failed_attempts for o in counted)
    rate = failed / attempts if attempts else 0.0
    known = Counter(o.error_category for o in counted if o.failed and o.error_category)
    throttled = known[THROTTLED] / sum(known.values()) if known else 0.0
    dead = sum(1 for o in window if o.failed)
    inputs.update(
        error_rate=round(rate, 4),
        failed_attempts=failed,
        attempts=attempts,
        failed_chunks=dead,
        error_window_chunks=len(window),
    )
    if ignored:
        causes = sorted({str(o.error_category) for o in window} & SIZE_INDEPENDENT_ERRORS)
        reasons.append(
            f"{ignored} chunk(s) failed for reasons no chunk size avoids ({', '.join(causes)}): "
            "not counted as errors"
        )
    seen = f"{failed} failed of {attempts} attempts ({rate:.1%}) in the last {len(window)} chunks"
    if rate >= s.error_rate_shrink and throttled > 0.5:
        if value > anchor:
            reasons.append(
                f"{seen}, mostly throttling ({throttled:.0%} of known causes): hold at "
                f"{anchor:,} (smaller chunks would make more requests; lower the concurrency)"
            )
            return anchor, "nearest"
        reasons.append(f"{seen}, mostly throttling: not shrinking for it")
    elif rate >= s.error_rate_shrink:
        half = max(1, anchor // 2)
        if value > half:
            reasons.append(f"{seen} >= {s.error_rate_shrink:.0%}: halve to {half:,}")
            return half, "down"
    elif rate > s.error_rate_hold and value > anchor:
        reasons.append(f"{seen} > {s.error_rate_hold:.0%}: no growth, keep {anchor:,}")
        return anchor, "nearest"
    return value, rounding


def _memory_cap(
    obs: Sequence[ChunkObservation],
    measured: Sequence[ChunkObservation],
    s: TuningSettings,
    inputs: dict[str, Figure],
    reasons: list[str],
) -> int | None:
    """Rule 5: the most records a step's memory allows, or None when nothing says."""
    caps: list[int] = []
    fit = fit_memory(measured, s.baseline_rss_bytes)
    if fit is not None:
        baseline, per_record, how = fit
        inputs.update(
            bytes_per_record=round(per_record, 1),
            baseline_rss_bytes=round(baseline),
            memory_fit=how,
        )
        if per_record > 0:
            budget = s.memory_budget_bytes * s.memory_safety
            cap = max(1, math.floor(budget / per_record))
            text = (
                f"peak RSS ~ {_mib(baseline)} + {per_record:,.0f} bytes/record ({how}): "
                f"{_mib(s.memory_budget_bytes)} budget x {s.memory_safety:g} allows {cap:,} records"
            )
            if s.memory_limit_bytes:
                by_limit = math.floor(
                    (s.memory_limit_bytes * s.memory_safety - baseline) / per_record
                )
                text += (
                    f"; the {_mib(s.memory_limit_bytes)} process limit x {s.memory_safety:g} "
                    f"allows {max(by_limit, 0):,}"
                )
                cap = min(cap, max(by_limit, 1))
            inputs["memory_cap_records"] = cap
            reasons.append(text)
            caps.append(cap)
    oom = [o.chunk_records for o in obs if o.failed and o.error_category == OUT_OF_MEMORY]
    if oom:
        cap = max(1, min(oom) // 2)
        inputs["out_of_memory_cap_records"] = cap
        reasons.append(f"a chunk of {min(oom):,} records ran out of memory: at most {cap:,}")
        caps.append(cap)
    return min(caps) if caps else None


def fit_memory(
    measured: Sequence[ChunkObservation], baseline_rss_bytes: int | None = None
) -> tuple[float, float, str] | None:
    """(baseline bytes, bytes per record, how) of peak RSS ~ baseline + bytes * records, from
    measured chunks with a peak RSS; None without any. One point per planned size: the median
    records and the highest peak of its chunks of at least half the planned size. A line by
    least squares when there are sizes 25% apart and it rises from a baseline >= 0; else the
    per-record cost at the largest size, above ``baseline_rss_bytes`` (else 0)."""
    groups: dict[int, list[ChunkObservation]] = {}
    for o in measured:
        if o.peak_rss_bytes > 0 and o.records * 2 >= o.chunk_records:
            groups.setdefault(o.chunk_records, []).append(o)
    if not groups:
        return None
    points = [
        (float(statistics.median(o.records for o in g)), float(max(o.peak_rss_bytes for o in g)))
        for g in groups.values()
    ]
    xs = [x for x, _ in points]
    if len(points) >= 2 and max(xs) >= 1.25 * min(xs):
        mx, my = statistics.fmean(xs), statistics.fmean(y for _, y in points)
        sxx = sum((x - mx) ** 2 for x in xs)
        slope = sum((x - mx) * (y - my) for x, y in points) / sxx
        intercept = my - slope * mx
        if slope > 0 and intercept >= 0:
            return intercept, slope, f"least squares over {len(points)} sizes"
    baseline = float(baseline_rss_bytes or 0)
    x, y = max(points)
    per_record = (y - baseline) / x
    how = f"per-record cost at {x:,.0f} records" + (
        f", above a {_mib(baseline)} baseline" if baseline else ", baseline unknown"
    )
    return baseline, max(per_record, 0.0), how


def _spread(
    size: int,
    total: int,
    lower: int | None,
    s: TuningSettings,
    inputs: dict[str, Figure],
    reasons: list[str],
) -> int:
    """Rule 4: enough chunks for every worker, unless steps would get too short."""
    if total <= 0:
        return size
    want = s.workers * s.chunks_per_worker
    spread = max(1, math.ceil(total / want))
    inputs["spread_chunk_records"] = spread
    if size <= spread:
        return size
    floor = lower or 1
    if spread >= floor:
        value = max(_round(spread, s, "down", spread), s.min_chunk_records)
        reasons.append(
            f"{total:,} records over {s.workers} worker(s) x {s.chunks_per_worker}: at least "
            f"{want} chunks -> {value:,} records per chunk for this input"
        )
        return min(value, size)
    value = min(max(_round(floor, s, "up", size), s.min_chunk_records), size)
    if value < size:
        reasons.append(
            f"{total:,} records over {s.workers} worker(s) x {s.chunks_per_worker} would be "
            f"{spread:,} records per chunk, shorter steps than the lower bound {floor:,}: "
            f"{value:,} for this input"
        )
    else:
        reasons.append(
            f"{total:,} records: {want} chunks for {s.workers} worker(s) would make steps "
            f"shorter than the lower bound {floor:,}: fewer chunks"
        )
    return value


def _clamp(value: int, s: TuningSettings, memory_cap: int | None, reasons: list[str]) -> int:
    """Rule 8's [min_chunk_records, max_chunk_records]; memory wins over the minimum."""
    if value < s.min_chunk_records:
        if memory_cap is not None and memory_cap < s.min_chunk_records:
            reasons.append(
                f"{value:,} is below min_chunk_records {s.min_chunk_records:,}, but memory "
                "allows no more"
            )
            return value
        reasons.append(f"{value:,} is below min_chunk_records: {s.min_chunk_records:,}")
        return s.min_chunk_records
    if value > s.max_chunk_records:
        reasons.append(f"{value:,} is above max_chunk_records: {s.max_chunk_records:,}")
        return s.max_chunk_records
    return value


def _round(value: int, s: TuningSettings, how: Rounding, cap: int) -> int:
    """``value`` to ``significant_digits`` digits, within [min_chunk_records, cap]."""
    if value <= 0:
        return s.min_chunk_records
    unit = int(10 ** max(len(str(int(value))) - s.significant_digits, 0))
    if how == "up":
        rounded = math.ceil(value / unit) * unit
    elif how == "down":
        rounded = math.floor(value / unit) * unit
    else:
        rounded = round(value / unit) * unit
    if rounded > cap:
        rounded = math.floor(value / unit) * unit
        if rounded > cap:
            rounded = cap
    return max(rounded, min(s.min_chunk_records, cap), 1)


def _rate(rate: float) -> str:
    if rate >= 1e6:
        return f"{rate / 1e6:.2g}M"
    if rate >= 1e3:
        return f"{rate / 1e3:.3g}k"
    return f"{rate:.3g}"


def _pct(share: float) -> str:
    """21%, 4.8%, 5%."""
    return f"{share:.0%}" if share >= 0.1 else f"{share:.1%}".replace(".0%", "%")


def _secs(seconds: float) -> str:
    return f"{seconds:.2f} s" if seconds < 10 else f"{seconds:.0f} s"


def _mib(n: float) -> str:
    return f"{n / (1 << 20):,.0f} MiB"


# The batch ------------------------------------------------------------------------------------


def tune_batch(
    ledger: Ledger, spec: BatchSpec, settings: TuningSettings | None = None
) -> tuple[BatchSpec, Decision | None]:
    """``spec`` with the chunk size the history of its workload calls for, and the decision.

    A batch the ledger knows already keeps the size it was planned with (resume and redrive
    must cut the same chunks): the spec comes back with that size and no decision. The
    decision goes into the spec's stored config (``config["tuning"]``, with
    ``workload_chunk_records`` for the next decision to start from)."""
    state = ledger.batch(spec.batch_id)
    if state is not None:
        stored = state.config_dict().get("chunking", {}).get("chunk_records")
        if isinstance(stored, int) and stored > 0:
            return _with_size(spec, stored, state.config_dict().get("tuning")), None
    history = history_from_ledger(ledger, workload_key(spec), exclude_batch_id=spec.batch_id)
    decision = choose_chunk_records(history, settings, estimate_total_records(spec.source))
    tuning = {"workload_chunk_records": decision.workload_chunk_records, **decision.to_metadata()}
    return _with_size(spec, decision.chunk_records, tuning), decision


def _with_size(spec: BatchSpec, records: int, tuning: Any) -> BatchSpec:
    config = dict(spec.config)
    config["chunking"] = {**dict(config.get("chunking") or {}), "chunk_records": records}
    if tuning is not None:
        config["tuning"] = tuning
    return replace(spec, chunking=replace(spec.chunking, chunk_records=records), config=config)
