"""Rules 2, 3 and 6 of ``tuning.rules``: the bounds the measured rate sets (a step long enough
for the executor's per-step overhead, short enough for cheap retries) and the throughput
plateau (grow while bigger chunks are faster per record)."""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence

from batch_pipeline.core.tuning.decision import Figure, _pct, _rate, _secs
from batch_pipeline.core.tuning.history import ChunkObservation
from batch_pipeline.core.tuning.limits import Rounding
from batch_pipeline.core.tuning.settings import TuningSettings


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
