"""Rules 4 and 8 of ``tuning.rules``: the spread of one input over the workers, the clamp to
``[min_chunk_records, max_chunk_records]`` and the rounding to significant digits."""

from __future__ import annotations

import math
from typing import Literal

from batch_pipeline.core.tuning.decision import Figure
from batch_pipeline.core.tuning.settings import TuningSettings

Rounding = Literal["up", "down", "nearest"]


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
