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

import math
from collections import Counter
from collections.abc import Iterable, Sequence

from batch_pipeline.core.tuning.decision import Decision, Figure
from batch_pipeline.core.tuning.history import ChunkObservation
from batch_pipeline.core.tuning.limits import Rounding, _clamp, _round, _spread
from batch_pipeline.core.tuning.memory import _memory_cap
from batch_pipeline.core.tuning.settings import TuningSettings
from batch_pipeline.core.tuning.throughput import _rate_rules

# Failures that another chunk size would not avoid: they say nothing about the size.
SIZE_INDEPENDENT_ERRORS = frozenset({"config", "access_denied", "missing_object", "client_error"})
THROTTLED = "throttled"


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
