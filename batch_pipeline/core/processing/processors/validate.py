"""``validate``: check records against a declared schema; keep the good, reject the bad.

Options (JSON or YAML shape)::

    {"columns": {
        "id":         {"type": "int64", "required": true, "min": 1},
        "email":      {"type": "string", "required": true, "pattern": "^[^@ ]+@[^@ ]+\\\\.[^@ ]+$"},
        "amount":     {"type": "float64", "min": 0, "max": 100000},
        "status":     {"type": "string", "allowed": ["new", "active", "closed"]},
        "created_at": {"type": "timestamp"}},
     "extra_columns": "keep"}

Types: string, int64, float64, bool, timestamp (ISO 8601, or ``format``; naive times are UTC),
date. Valid records come out with the declared types. A record is rejected when any rule fails;
its reason lists every failed rule (``email: required value missing; amount: below minimum 0``).
Reasons name the rule, not the value, so that counting reasons groups like with like. Patterns
are RE2 regular expressions searched in the value: anchor them with ^ and $ for a full match.
All checks are vectorized with pyarrow.compute (timestamps are parsed by pandas).

Text is trimmed before it is converted; empty text, null and NaN count as missing. A float64
value must be finite: text that overflows (``1e400``) and infinities in typed columns (JSON's
``1e400`` is read as one) are not valid, as the text ``inf`` and ``nan`` are not. int64
accepts an optional sign and any value in the int64 range; bool accepts true/false, t/f,
yes/no, y/n, 1/0 (any case). Pattern and length rules apply to the stored text of string
columns and to the trimmed text of the others.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal, InvalidOperation
from typing import Literal

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import BaseModel, ConfigDict, PrivateAttr, model_validator

from batch_pipeline.core.common.errors import ConfigError
from batch_pipeline.core.processing.processors.base import (
    ADDED_COLUMNS,
    Processor,
    ProcessorOptions,
    ProcessResult,
    register,
)

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
MAX_CHECK_THREADS = 4  # columns checked at once (at most the CPU count)
ARROW_TYPES: dict[str, pa.DataType] = {
    "string": pa.string(),
    "int64": pa.int64(),
    "float64": pa.float64(),
    "bool": pa.bool_(),
    "timestamp": pa.timestamp("us", tz="UTC"),
    "date": pa.date32(),
}


class ColumnRule(BaseModel):
    """The rules for one column."""

    model_config = ConfigDict(extra="forbid")

    type: ColumnType = "string"
    required: bool = False
    min: int | float | str | None = None
    max: int | float | str | None = None
    pattern: str | None = None
    allowed: list[str | int | float | bool] | None = None
    min_length: int | None = None
    max_length: int | None = None
    format: str | None = None

    _allowed: pa.Array | None = PrivateAttr(default=None)

    @model_validator(mode="after")
    def _check(self) -> ColumnRule:
        if self.pattern is not None:
            try:
                pc.match_substring_regex(pa.array([""]), self.pattern)
            except pa.ArrowInvalid as exc:
                raise ValueError(f"invalid pattern {self.pattern!r}: {exc}") from exc
        if self.format is not None and self.type not in TIME_TYPES:
            raise ValueError(f"format applies to timestamp and date, not {self.type}")
        for bound in (self.min, self.max):
            if bound is None:
                continue
            if isinstance(bound, bool) or self.type not in (*TIME_TYPES, "int64", "float64"):
                raise ValueError(f"min/max apply to numbers and times, not {self.type}")
            if self.type in TIME_TYPES:
                pd.Timestamp(bound)  # raises ValueError for a bad bound
            else:
                _number(bound)
        for name in ("min_length", "max_length"):
            if (getattr(self, name) or 0) < 0:
                raise ValueError(f"{name} must not be negative")
        if self.allowed is not None:
            self._allowed = self._allowed_values(self.allowed)
        return self

    def _allowed_values(self, values: list[str | int | float | bool]) -> pa.Array:
        """The allowed values converted like the column's values; ValueError if one does not."""
        try:
            raw = pa.array(values)
        except (pa.ArrowInvalid, pa.ArrowTypeError):
            raw = pa.array([str(v) for v in values])  # mixed kinds: parse them as text
        typed, present, bad = _convert(raw, self)
        if bad.any() or not present.all():
            wrong = [v for v, b, p in zip(values, bad, present, strict=True) if b or not p]
            raise ValueError(f"allowed values {wrong} are not valid {self.type} values")
        return typed


def _number(value: int | float | str) -> Decimal:
    """A numeric bound, exactly; ValueError if it is not a finite number."""
    try:
        number = Decimal(value) if isinstance(value, int | str) else Decimal(repr(value))
    except InvalidOperation:
        raise ValueError(f"bound {value!r} is not a number") from None
    if not number.is_finite():
        raise ValueError(f"bound {value!r} is not a finite number")
    return number


class ValidateOptions(ProcessorOptions):
    columns: dict[str, ColumnRule]
    # keep: undeclared columns pass through unchanged; drop: removed from the valid records;
    # error: a column the schema does not declare refuses the batch (a single file, before any
    # work) or fails the chunk holding it (a file set's file), naming it.
    extra_columns: Literal["keep", "drop", "error"] = "keep"


@register
class Validate(Processor):
    """Rejects records that break the declared schema, each with its reasons."""

    name = "validate"
    Options = ValidateOptions
    options: ValidateOptions

    def check_columns(self, columns: Sequence[str]) -> list[str]:
        present = set(columns)
        problems = [
            f"required column {name!r} is missing (columns: {', '.join(columns)})"
            for name, rule in self.options.columns.items()
            if rule.required and name not in present
        ]
        extra = self.extra_columns(columns)
        if extra:
            problems.append(extra)
        return problems

    def column_warnings(self, columns: Sequence[str]) -> list[str]:
        present = set(columns)
        return [
            f"column {name!r} is declared but not in the file (columns: {', '.join(columns)})"
            for name, rule in self.options.columns.items()
            if not rule.required and name not in present
        ]

    def extra_columns(self, columns: Sequence[str]) -> str | None:
        """With ``extra_columns: error``, what is wrong with the columns the schema does not
        declare (the pipeline's own added columns aside); else None."""
        if self.options.extra_columns != "error":
            return None
        extra = [c for c in columns if c not in self.options.columns and c not in ADDED_COLUMNS]
        if not extra:
            return None
        names = ", ".join(repr(c) for c in extra)
        head = f"column {names} is" if len(extra) == 1 else f"columns {names} are"
        return (
            f"{head} not declared in the schema (extra_columns: error; declared: "
            f"{', '.join(self.options.columns)})"
        )

    def process(self, table: pa.Table) -> ProcessResult:
        extra = self.extra_columns(table.column_names)
        if extra:  # a chunk whose columns the batch's checks could not see (a file set's file)
            raise ConfigError(extra)
        n = table.num_rows

        def check(name: str, rule: ColumnRule) -> tuple[pa.Array, list[tuple[np.ndarray, str]]]:
            if name in table.column_names:
                raw = table.column(name).combine_chunks()
            else:
                raw = pa.nulls(n, type=pa.string())
            typed, present, bad_type = _convert(raw, rule)
            found = [(~present, f"{name}: required value missing")] if rule.required else []
            found.append((bad_type, f"{name}: not a valid {rule.type}"))
            found.extend(_rule_checks(name, rule, raw, typed, present & ~bad_type))
            return typed, found

        # Columns are checked in threads: Arrow's kernels release the GIL, so the columns of a
        # chunk use every core. map keeps the columns' order, so reasons come out the same.
        rules = list(self.options.columns.items())
        workers = min(len(rules), os.cpu_count() or 1, MAX_CHECK_THREADS)
        if workers > 1:
            with ThreadPoolExecutor(workers, thread_name_prefix="validate") as pool:
                results = list(pool.map(lambda item: check(*item), rules))
        else:
            results = [check(name, rule) for name, rule in rules]
        reject = np.zeros(n, dtype=bool)
        checks: list[tuple[np.ndarray, str]] = []
        typed_columns: dict[str, pa.Array] = {}
        for (name, _), (typed, found) in zip(rules, results, strict=True):
            typed_columns[name] = typed
            checks.extend(found)
        for mask, _ in checks:
            reject |= mask
        valid = self._typed_table(table, typed_columns)
        rejected = np.flatnonzero(reject)
        reasons = _reasons(checks, rejected)
        keep = pa.array(~reject)
        return ProcessResult(valid.filter(keep), rejected, reasons)

    def _typed_table(self, table: pa.Table, typed: dict[str, pa.Array]) -> pa.Table:
        names = list(table.column_names)
        if self.options.extra_columns == "drop":
            names = [n for n in names if n in typed]
        arrays = [typed[n] if n in typed else table.column(n) for n in names]
        for name, array in typed.items():
            if name not in names:
                names.append(name)
                arrays.append(array)
        return pa.Table.from_arrays(arrays, names=names)


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


def _reasons(checks: list[tuple[np.ndarray, str]], rejected: np.ndarray) -> pa.Array:
    """One reason string per rejected row: every failed rule, joined with '; '."""
    if not rejected.size:
        return pa.array([], type=pa.string())
    parts = [
        pa.array(np.where(mask[rejected], reason, None), type=pa.string())
        for mask, reason in checks
        if mask[rejected].any()
    ]
    if len(parts) == 1:
        return parts[0]
    return pc.binary_join_element_wise(*parts, "; ", null_handling="skip")
