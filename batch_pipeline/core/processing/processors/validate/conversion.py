"""Convert a column to its declared type, vectorized: typed values, which are present, which fail.

Text is trimmed first; empty text, null and NaN are missing. int64 takes an optional sign and
any value in the int64 range (digits compared when Arrow's cast overflows); float64 must be
finite; bool takes true/false, t/f, yes/no, y/n, 1/0; timestamps and dates are ISO 8601 (Arrow's
own cast for the one shape it reads as pandas does, pandas for the rest) or ``format``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

if TYPE_CHECKING:
    from batch_pipeline.core.processing.processors.validate.rules import ColumnRule

ColumnType = Literal["string", "int64", "float64", "bool", "timestamp", "date"]
INT_PATTERN = r"^[+-]?[0-9]+$"
INT64_MAX_DIGITS = "9223372036854775807"
INT64_MIN_DIGITS = "9223372036854775808"  # the magnitude of the smallest int64
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
# The ISO 8601 timestamps Arrow's cast reads as pandas does: a 'T', seconds, up to 6 decimals,
# and Z or a +hh:mm offset, every field in its range (the day is checked against its month).
ISO_SHAPE = (
    r"^[0-9]{4}-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])T([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9]"
    r"(\.[0-9]{1,6})?(Z|[+-]([01][0-9]|2[0-3]):[0-5][0-9])$"
)
DAYS_IN_MONTH = np.array([0, 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31])
FLOAT_PATTERN = r"^[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?$"
TRUE_WORDS = ["true", "t", "yes", "y", "1"]
FALSE_WORDS = ["false", "f", "no", "n", "0"]
TIME_TYPES = ("timestamp", "date")
ARROW_TYPES: dict[str, pa.DataType] = {
    "string": pa.string(),
    "int64": pa.int64(),
    "float64": pa.float64(),
    "bool": pa.bool_(),
    "timestamp": pa.timestamp("us", tz="UTC"),
    "date": pa.date32(),
}


def _np(mask: pa.Array) -> np.ndarray:
    return np.asarray(pc.fill_null(mask, False).to_numpy(zero_copy_only=False), dtype=bool)


def _normalize(raw: pa.Array) -> pa.Array:
    """Dictionary columns decoded, large strings as strings, NaN as null."""
    if pa.types.is_dictionary(raw.type):
        raw = pc.cast(raw, raw.type.value_type)
    if pa.types.is_large_string(raw.type):
        raw = pc.cast(raw, pa.string())
    if pa.types.is_floating(raw.type):
        raw = pc.if_else(pc.is_nan(raw), pa.scalar(None, raw.type), raw)
    return raw


def _convert(raw: pa.Array, rule: ColumnRule) -> tuple[pa.Array, np.ndarray, np.ndarray]:
    """(typed values, value present, present but not convertible)."""
    raw = _normalize(raw)
    target = ARROW_TYPES[rule.type]
    is_text = pa.types.is_string(raw.type)
    trimmed = pc.utf8_trim_whitespace(raw) if is_text else raw
    if is_text:
        present = _np(pc.and_(pc.is_valid(raw), pc.greater(pc.utf8_length(trimmed), 0)))
    else:
        present = _np(pc.is_valid(raw))
    try:
        typed = _typed(raw, trimmed, is_text, rule, target)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError):
        typed = pa.nulls(len(raw), type=target)  # a column of another kind: nothing converts
    if rule.type == "float64":  # inf (1e400 overflows to it) is no float64 value: not valid
        typed = pc.if_else(pc.is_finite(typed), typed, pa.scalar(None, target))
    if rule.type != "string" and not present.any():
        typed = pa.nulls(len(raw), type=target)
    bad_type = present & ~_np(pc.is_valid(typed))
    return typed, present, bad_type


def _typed(
    raw: pa.Array, trimmed: pa.Array, is_text: bool, rule: ColumnRule, target: pa.DataType
) -> pa.Array:
    if rule.type == "string" or raw.type == target:
        return raw if raw.type == target else pc.cast(raw, target)
    if is_text:
        return _parse_text(trimmed, rule, target)
    if rule.type in TIME_TYPES and pa.types.is_timestamp(raw.type):
        aware = raw if raw.type.tz else pc.assume_timezone(raw, "UTC")
        return pc.cast(aware, target, safe=False)  # finer units are truncated to microseconds
    if rule.type == "int64" and pa.types.is_floating(raw.type):
        whole = pc.and_(
            pc.equal(raw, pc.floor(raw)),
            pc.and_(pc.greater_equal(raw, float(INT64_MIN)), pc.less(raw, 2.0**63)),
        )
        return pc.cast(pc.if_else(whole, raw, None), target)
    if rule.type == "bool" or (rule.type == "int64" and pa.types.is_unsigned_integer(raw.type)):
        return _parse_text(pc.cast(raw, pa.string()), rule, target)
    try:
        return pc.cast(raw, target)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return _parse_text(pc.cast(raw, pa.string()), rule, target)


def _parse_text(text: pa.Array, rule: ColumnRule, target: pa.DataType) -> pa.Array:
    if rule.type == "int64":
        return _parse_int(text)
    if rule.type == "float64":
        ok = pc.match_substring_regex(text, FLOAT_PATTERN)
        return pc.cast(pc.if_else(ok, text, None), target)
    if rule.type == "bool":
        lower = pc.utf8_lower(text)
        is_true = pc.is_in(lower, value_set=pa.array(TRUE_WORDS))
        is_false = pc.is_in(lower, value_set=pa.array(FALSE_WORDS))
        return pc.if_else(is_true, True, pc.if_else(is_false, False, None))
    # timestamp / date: pandas parses ISO 8601 (with offsets) or the given format, vectorized.
    stamps = _parse_iso_fast(text) if rule.format is None else None
    if stamps is None:
        stamps = _parse_times(text.to_numpy(zero_copy_only=False), rule.format)
    failed = np.flatnonzero(~_np(pc.is_valid(stamps)) & _np(pc.is_valid(text)))
    if failed.size:
        # pandas picks one unit per call: a nanosecond value makes far dates (year 9999) fail.
        again = _parse_times(
            text.take(pa.array(failed)).to_numpy(zero_copy_only=False), rule.format
        )
        if again.null_count < len(again):
            values = stamps.to_numpy(zero_copy_only=False).astype("datetime64[us]")
            values[failed] = again.to_numpy(zero_copy_only=False).astype("datetime64[us]")
            stamps = pa.array(values, type=pa.timestamp("us")).cast(stamps.type)
    return stamps if rule.type == "timestamp" else pc.cast(stamps, target)


def _parse_iso_fast(text: pa.Array) -> pa.Array | None:
    """Arrow's own cast for values of the one ISO 8601 shape it reads exactly as pandas does
    (``2024-01-31T12:00:00[.ffffff](Z|+01:00)``), pandas for the rest; None when Arrow refuses
    one of them (a 30th of February): then pandas parses the whole column."""
    plain = _np(pc.match_substring_regex(text, ISO_SHAPE))
    if not plain.any():
        return None
    plain &= _real_days(text, plain)
    target = pa.timestamp("us", tz="UTC")
    try:
        fast = pc.cast(pc.if_else(pa.array(plain), text, None), target)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return None
    rest = ~plain & _np(pc.is_valid(text))
    if not rest.any():
        return fast
    mask = pa.array(rest)
    others = _parse_times(text.filter(mask).to_numpy(zero_copy_only=False), None)
    return pc.replace_with_mask(fast, mask, others.cast(target))


def _real_days(text: pa.Array, shaped: np.ndarray) -> np.ndarray:
    """Whether each ``YYYY-MM-DD...`` value (where ``shaped``) names a day its month has (not
    the 30th of February): such values are left to pandas, which rejects them. Reads the
    digits straight from the string buffer, at their fixed places, and the month and year only
    of days 29 to 31."""
    offsets = np.frombuffer(text.buffers()[1], dtype=np.int32)[
        text.offset : text.offset + len(text)
    ]
    data = np.frombuffer(text.buffers()[2], dtype=np.uint8)
    rows = np.flatnonzero(shaped)
    start = offsets[rows].astype(np.int64)

    def number(at: np.ndarray, first: int, digits: int) -> np.ndarray:
        value = np.zeros(at.size, dtype=np.int64)
        for k in range(first, first + digits):
            value = value * 10 + (data[at + k].astype(np.int64) - 48)
        return value

    day = number(start, 8, 2)
    late = day >= 29
    at = start[late]
    year, month = number(at, 0, 4), number(at, 5, 2)
    leap = (year % 4 == 0) & ((year % 100 != 0) | (year % 400 == 0))
    real = np.ones(len(text), dtype=bool)
    real[rows[late]] = day[late] <= DAYS_IN_MONTH[month] + ((month == 2) & leap)
    return real


def _parse_times(values: np.ndarray, fmt: str | None) -> pa.Array:
    series = pd.Series(values, dtype=object)
    parsed = pd.to_datetime(series, errors="coerce", utc=True, format=fmt or "ISO8601")
    stamps = pa.Array.from_pandas(parsed)
    return pc.cast(stamps, pa.timestamp("us", tz="UTC"), safe=False)


def _parse_int(text: pa.Array) -> pa.Array:
    """Signed decimal integers; values outside the int64 range are null (invalid)."""
    ok = pc.match_substring_regex(text, INT_PATTERN)
    text = pc.if_else(ok, text, None)
    try:  # Arrow's cast, once the pattern holds: all it cannot take is a '+' and overflow
        return pc.cast(pc.utf8_ltrim(text, characters="+"), pa.int64())
    except pa.ArrowInvalid:  # a value outside the int64 range: compare digits instead
        pass
    negative = pc.starts_with(text, "-")
    digits = pc.utf8_ltrim(pc.utf8_ltrim(text, characters="+-"), characters="0")
    digits = pc.if_else(pc.equal(digits, ""), "0", digits)
    length = pc.utf8_length(digits)
    limit = pc.if_else(negative, INT64_MIN_DIGITS, INT64_MAX_DIGITS)
    fits = pc.or_(pc.less(length, 19), pc.and_(pc.equal(length, 19), pc.less_equal(digits, limit)))
    signed = pc.if_else(negative, pc.binary_join_element_wise("-", digits, ""), digits)
    return pc.cast(pc.if_else(fits, signed, None), pa.int64())
