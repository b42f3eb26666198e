"""The rules of ``validate`` checked on converted columns, and each rejected record's reasons.

Bounds (``min``/``max``, a whole bound for int64), ``pattern``, ``allowed``, ``min_length`` and
``max_length`` give one mask per rule; a record's reason joins every rule it fails.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from batch_pipeline.core.processing.processors.validate.conversion import (
    INT64_MAX,
    INT64_MIN,
    TIME_TYPES,
    _normalize,
    _np,
)
from batch_pipeline.core.processing.processors.validate.rules import _number

NO_REASON = np.array(None, dtype=object)  # np.where's "no reason" (a typed None)

if TYPE_CHECKING:
    from batch_pipeline.core.processing.processors.validate.rules import ColumnRule


def _bound(rule: ColumnRule, value: int | float | str, side: str) -> pa.Scalar:
    if rule.type in TIME_TYPES:
        stamp = pd.Timestamp(value)
        stamp = stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")
        scalar = pa.scalar(stamp, type=pa.timestamp("us", tz="UTC"))
        return scalar if rule.type == "timestamp" else pc.cast(scalar, pa.date32())
    number = _number(value)
    if rule.type == "float64":
        return pa.scalar(float(number))
    # int64: the nearest whole bound that keeps the same records (x >= 1.5 <=> x >= 2).
    whole = math.ceil(number) if side == "min" else math.floor(number)
    return pa.scalar(min(max(whole, INT64_MIN), INT64_MAX), type=pa.int64())


def _below(typed: pa.Array, rule: ColumnRule, value: int | float | str) -> np.ndarray:
    bound = _bound(rule, value, "min")
    if rule.type == "int64" and _number(value) > INT64_MAX:
        return np.ones(len(typed), dtype=bool)
    return _np(pc.less(typed, bound))


def _above(typed: pa.Array, rule: ColumnRule, value: int | float | str) -> np.ndarray:
    bound = _bound(rule, value, "max")
    if rule.type == "int64" and _number(value) < INT64_MIN:
        return np.ones(len(typed), dtype=bool)
    return _np(pc.greater(typed, bound))


def _text(raw: pa.Array, typed: pa.Array) -> pa.Array:
    """The text the pattern and length rules see."""
    if pa.types.is_string(typed.type):
        return typed
    raw = _normalize(raw)
    if pa.types.is_string(raw.type):
        return pc.utf8_trim_whitespace(raw)
    return pc.cast(raw, pa.string())


def _rule_checks(
    name: str, rule: ColumnRule, raw: pa.Array, typed: pa.Array, ok: np.ndarray
) -> list[tuple[np.ndarray, str]]:
    checks: list[tuple[np.ndarray, str]] = []
    if rule.min is not None:
        below = _below(typed, rule, rule.min) & ok
        checks.append((below, f"{name}: below minimum {rule.min}"))
    if rule.max is not None:
        above = _above(typed, rule, rule.max) & ok
        checks.append((above, f"{name}: above maximum {rule.max}"))
    if rule.pattern is None and rule.min_length is None and rule.max_length is None:
        text = None
    else:
        text = _text(raw, typed)
    if rule.pattern is not None and text is not None:
        no_match = ~_np(pc.match_substring_regex(text, rule.pattern)) & ok
        checks.append((no_match, f"{name}: does not match pattern {rule.pattern}"))
    if rule._allowed is not None:
        not_allowed = ~_np(pc.is_in(typed, value_set=rule._allowed)) & ok
        checks.append((not_allowed, f"{name}: not one of the allowed values"))
    if text is not None and (rule.min_length is not None or rule.max_length is not None):
        length = pc.utf8_length(text)
        if rule.min_length is not None:
            short = _np(pc.less(length, rule.min_length)) & ok
            checks.append((short, f"{name}: shorter than {rule.min_length} characters"))
        if rule.max_length is not None:
            long = _np(pc.greater(length, rule.max_length)) & ok
            checks.append((long, f"{name}: longer than {rule.max_length} characters"))
    return checks


def joined_reasons(
    checks: Sequence[tuple[np.ndarray, str | np.ndarray]], rejected: np.ndarray
) -> pa.Array:
    """One reason string per rejected row: every check it fails (a mask and its reason, one
    text or one per row), joined with '; '."""
    if not rejected.size:
        return pa.array([], type=pa.string())
    parts = [
        pa.array(np.where(mask[rejected], reason, NO_REASON), type=pa.string())
        for mask, reason in checks
        if mask[rejected].any()
    ]
    if len(parts) == 1:
        return parts[0]
    return pc.binary_join_element_wise(*parts, "; ", null_handling="skip")
