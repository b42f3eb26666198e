"""Grouping consecutive units (row groups, staged parts, text segments, files) into chunks of
about ``chunk_records`` records: ``group_units``, which grows the chunks until there are at most
``max_chunks`` of them (``max_chunks`` wins over ``chunk_records``)."""

from __future__ import annotations

import math
from collections.abc import Sequence


def group_units(
    sizes: Sequence[int], target: int, max_chunks: int
) -> tuple[list[tuple[int, int]], int, str]:
    """Group consecutive units (row groups, parts, segments) into chunks of about ``target``
    records, growing the target until there are at most ``max_chunks``.

    Returns (unit ranges, the records per chunk used, why)."""
    total = sum(sizes)
    if not sizes:
        return [], target, "no records"
    size = target
    groups = _greedy(sizes, size)
    reason = f"{len(groups)} chunk(s) of up to {size:,} records (chunk_records={target:,})"
    if len(groups) > max_chunks:
        size = max(size, math.ceil(total / max_chunks))
        groups = _greedy(sizes, size)
        while len(groups) > max_chunks:
            size = math.ceil(size * 1.1) + 1
            groups = _greedy(sizes, size)
        reason = (
            f"{total:,} records at {target:,} per chunk would need more than "
            f"max_chunks={max_chunks} steps; chunks grown to {size:,} records: "
            f"{len(groups)} chunk(s)"
        )
    return groups, size, reason


def _greedy(sizes: Sequence[int], target: int) -> list[tuple[int, int]]:
    groups: list[tuple[int, int]] = []
    start, acc = 0, 0
    for i, n in enumerate(sizes):
        acc += n
        if acc >= target:
            groups.append((start, i + 1))
            start, acc = i + 1, 0
    if start < len(sizes):
        if groups and acc == 0:
            groups[-1] = (groups[-1][0], len(sizes))  # trailing empty units join the last chunk
        else:
            groups.append((start, len(sizes)))
    return groups
