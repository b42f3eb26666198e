"""The declared schema of ``validate``: a ``ColumnRule`` per column, checked when it is parsed.

A rule that cannot work (a bad pattern, ``min`` on text, an allowed value that is not of the
column's type) is refused when the options are read, before any record.
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from typing import Literal

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import BaseModel, ConfigDict, PrivateAttr, model_validator

from batch_pipeline.core.processing.processors.base import ProcessorOptions
from batch_pipeline.core.processing.processors.validate.conversion import (
    TIME_TYPES,
    ColumnType,
    _convert,
)


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
