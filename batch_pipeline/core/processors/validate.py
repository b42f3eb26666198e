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
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import BaseModel, ConfigDict, model_validator

from batch_pipeline.core.processors.base import Processor, ProcessorOptions, ProcessResult, register

ColumnType = Literal["string", "int64", "float64", "bool", "timestamp", "date"]
INT_PATTERN = r"^[+-]?[0-9]{1,18}$"
FLOAT_PATTERN = r"^[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?$"
TRUE_WORDS = ["true", "t", "yes", "y", "1"]
FALSE_WORDS = ["false", "f", "no", "n", "0"]
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

    @model_validator(mode="after")
    def _check(self) -> ColumnRule:
        if self.pattern is not None:
            try:
                pc.match_substring_regex(pa.array([""]), self.pattern)
            except pa.ArrowInvalid as exc:
                raise ValueError(f"invalid pattern {self.pattern!r}: {exc}") from exc
        for bound in (self.min, self.max):
            if bound is None:
                continue
            if self.type in ("timestamp", "date"):
                pd.Timestamp(bound)  # raises ValueError for a bad bound
            elif self.type in ("int64", "float64"):
                float(bound)
            else:
                raise ValueError(f"min/max apply to numbers and times, not {self.type}")
        return self


class ValidateOptions(ProcessorOptions):
    columns: dict[str, ColumnRule]
    extra_columns: Literal["keep", "drop"] = "keep"


@register
class Validate(Processor):
    """Rejects records that break the declared schema, each with its reasons."""

    name = "validate"
    Options = ValidateOptions
    options: ValidateOptions

    def check_columns(self, columns: Sequence[str]) -> list[str]:
        present = set(columns)
        return [
            f"required column {name!r} is missing (columns: {', '.join(columns)})"
            for name, rule in self.options.columns.items()
            if rule.required and name not in present
        ]

    def process(self, table: pa.Table) -> ProcessResult:
        n = table.num_rows
        reject = np.zeros(n, dtype=bool)
        checks: list[tuple[np.ndarray, str]] = []
        typed_columns: dict[str, pa.Array] = {}
        for name, rule in self.options.columns.items():
            if name in table.column_names:
                raw = table.column(name).combine_chunks()
            else:
                raw = pa.nulls(n, type=pa.string())
            typed, present, bad_type = _convert(raw, rule)
            typed_columns[name] = typed
            if rule.required:
                checks.append((~present, f"{name}: required value missing"))
            checks.append((bad_type, f"{name}: not a valid {rule.type}"))
            checks.extend(_rule_checks(name, rule, raw, typed, present & ~bad_type))
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


def _convert(raw: pa.Array, rule: ColumnRule) -> tuple[pa.Array, np.ndarray, np.ndarray]:
    """(typed values, value present, present but not convertible)."""
    target = ARROW_TYPES[rule.type]
    is_text = pa.types.is_string(raw.type) or pa.types.is_large_string(raw.type)
    trimmed = pc.utf8_trim_whitespace(raw) if is_text else raw
    if is_text:
        present = _np(pc.and_(pc.is_valid(raw), pc.greater(pc.utf8_length(trimmed), 0)))
    else:
        present = _np(pc.is_valid(raw))
    if rule.type == "string":
        typed = raw if is_text else pc.cast(raw, pa.string())
    elif raw.type == target:
        typed = raw
    elif is_text:
        typed = _parse_text(trimmed, rule, target)
    elif rule.type in ("timestamp", "date") and pa.types.is_timestamp(raw.type):
        typed = pc.cast(raw if raw.type.tz else pc.assume_timezone(raw, "UTC"), target)
    elif rule.type == "int64" and pa.types.is_floating(raw.type):
        whole = pc.equal(raw, pc.floor(raw))
        typed = pc.cast(pc.if_else(whole, raw, None), target)
    else:
        try:
            typed = pc.cast(raw, target)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            typed = _parse_text(pc.cast(raw, pa.string()), rule, target)
    if not present.any():
        typed = pa.nulls(len(raw), type=typed.type)
    bad_type = present & ~_np(pc.is_valid(typed))
    return typed, present, bad_type


def _parse_text(text: pa.Array, rule: ColumnRule, target: pa.DataType) -> pa.Array:
    if rule.type in ("int64", "float64"):
        pattern = INT_PATTERN if rule.type == "int64" else FLOAT_PATTERN
        ok = pc.match_substring_regex(text, pattern)
        return pc.cast(pc.if_else(ok, text, None), target)
    if rule.type == "bool":
        lower = pc.utf8_lower(text)
        is_true = pc.is_in(lower, value_set=pa.array(TRUE_WORDS))
        is_false = pc.is_in(lower, value_set=pa.array(FALSE_WORDS))
        return pc.if_else(is_true, True, pc.if_else(is_false, False, None))
    # timestamp / date: pandas parses ISO 8601 (with offsets) or the given format, vectorized.
    series = pd.Series(text.to_numpy(zero_copy_only=False), dtype=object)
    parsed = pd.to_datetime(series, errors="coerce", utc=True, format=rule.format or "ISO8601")
    stamps = pa.array(parsed, type=pa.timestamp("us", tz="UTC"), from_pandas=True)
    return stamps if rule.type == "timestamp" else pc.cast(stamps, target)


def _bound(rule: ColumnRule, value: int | float | str, typed: pa.Array) -> pa.Scalar:
    if rule.type in ("timestamp", "date"):
        stamp = pd.Timestamp(value)
        stamp = stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")
        scalar = pa.scalar(stamp, type=pa.timestamp("us", tz="UTC"))
        return scalar if rule.type == "timestamp" else pc.cast(scalar, pa.date32())
    return (
        pa.scalar(float(value)).cast(typed.type)
        if rule.type == "int64"
        else pa.scalar(float(value))
    )


def _rule_checks(
    name: str, rule: ColumnRule, raw: pa.Array, typed: pa.Array, ok: np.ndarray
) -> list[tuple[np.ndarray, str]]:
    checks: list[tuple[np.ndarray, str]] = []
    if rule.min is not None:
        below = _np(pc.less(typed, _bound(rule, rule.min, typed))) & ok
        checks.append((below, f"{name}: below minimum {rule.min}"))
    if rule.max is not None:
        above = _np(pc.greater(typed, _bound(rule, rule.max, typed))) & ok
        checks.append((above, f"{name}: above maximum {rule.max}"))
    text = typed if pa.types.is_string(typed.type) else pc.cast(raw, pa.string())
    if rule.pattern is not None:
        no_match = ~_np(pc.match_substring_regex(text, rule.pattern)) & ok
        checks.append((no_match, f"{name}: does not match pattern {rule.pattern}"))
    if rule.allowed is not None:
        allowed = pa.array(rule.allowed).cast(typed.type)
        not_allowed = ~_np(pc.is_in(typed, value_set=allowed)) & ok
        checks.append((not_allowed, f"{name}: not one of the allowed values"))
    if rule.min_length is not None or rule.max_length is not None:
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
