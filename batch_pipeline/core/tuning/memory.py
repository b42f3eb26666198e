"""Rule 5 of ``tuning.rules``: the most records a step's memory allows, from a fit of peak RSS
as a baseline plus bytes per record (``fit_memory``) and from chunks that ran out of memory."""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence

from batch_pipeline.core.tuning.decision import Figure, _mib
from batch_pipeline.core.tuning.history import ChunkObservation
from batch_pipeline.core.tuning.settings import TuningSettings

OUT_OF_MEMORY = "out_of_memory"


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
