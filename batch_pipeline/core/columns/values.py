"""The text of a value: one text per value, the same for a Python value and an Arrow column.

A string as it is; ``true``/``false``; an int in decimal; a float that
is a whole number within 2**53 as that whole number (``5.0`` as ``5``: JSON does not tell
``5`` from ``5.0``, and an int that met floats in one chunk must keep its text when a later
chunk makes the column text), other floats as Python's ``repr`` (``0.1``, ``1e+20``); a
date, time or timestamp in ISO 8601 (``isoformat()``); a duration as Python prints it
(``1 day, 2:00:00``); a decimal as it is written; an object or array as JSON (UTF-8, nested
values as JSON); bytes as UTF-8 text when they decode, else base64.

Ints and floats: ``EXACT_FLOAT_INT`` is where a float64 stops holding every int exactly.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
EXACT_FLOAT_INT = 2**53  # ints up to this magnitude are exact as a float64


def value_text(value: Any) -> str | None:
    """A value's own text (None stays None); see the module docstring."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return str(int(value)) if _whole(value) else repr(value)
    if isinstance(value, (dt.datetime, dt.date, dt.time)):
        return value.isoformat()
    if isinstance(value, (dict, list, tuple)):
        return json_text(value)
    if isinstance(value, (bytes, bytearray, memoryview)):
        raw = bytes(value)
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            return base64.b64encode(raw).decode("ascii")
    if hasattr(value, "isoformat") and not isinstance(value, dt.timedelta):
        return value.isoformat()  # pandas' Timestamp (nanoseconds)
    return str(value)  # Decimal, timedelta, anything else


def _whole(value: float) -> bool:
    """A float that is a whole number exactly representable as one (its text drops ``.0``)."""
    return value.is_integer() and abs(value) <= EXACT_FLOAT_INT


def _plain_numbers(value: Any) -> Any:
    """``value`` with its whole floats as ints, at any depth (so JSON text writes ``5``, as
    ``value_text`` does); iterative, for records nested deeper than the recursion limit."""
    if isinstance(value, float):
        return int(value) if _whole(value) else value
    if not isinstance(value, (dict, list, tuple)):
        return value
    root: list[Any] = [value]
    stack: list[tuple[Any, Any, Any]] = [(root, 0, value)]
    while stack:
        parent, key, item = stack.pop()
        if isinstance(item, dict):
            copy: Any = dict(item)
            stack.extend((copy, k, v) for k, v in copy.items())
        elif isinstance(item, (list, tuple)):
            copy = list(item)
            stack.extend((copy, i, v) for i, v in enumerate(copy))
        elif isinstance(item, float) and _whole(item):
            copy = int(item)
        else:
            continue
        parent[key] = copy
    return root[0]


def _json_default(value: Any) -> Any:
    return value_text(value)  # a value JSON has no type for (a time, bytes, a decimal)


def json_text(value: Any) -> str:
    """``value`` as JSON text (non-ASCII kept, nested non-JSON values as their text), also when
    it is nested deeper than Python's recursion limit. Whole floats are written as ints."""
    value = _plain_numbers(value)
    try:
        return json.dumps(value, ensure_ascii=False, default=_json_default)
    except RecursionError:
        return _deep_json_text(value)


def _deep_json_text(value: Any) -> str:
    """json.dumps without recursion (for records nested thousands of levels deep)."""
    out: list[str] = []
    stack: list[Any] = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, _Literal):
            out.append(item.text)
        elif isinstance(item, dict):
            out.append("{")
            stack.append(_Literal("}"))
            for i, (key, val) in reversed(list(enumerate(item.items()))):
                stack.append(val)
                head = json.dumps(str(key), ensure_ascii=False) + ": "
                stack.append(_Literal(head if i == 0 else ", " + head))
        elif isinstance(item, (list, tuple)):
            out.append("[")
            stack.append(_Literal("]"))
            for i, val in reversed(list(enumerate(item))):
                stack.append(val)
                if i:
                    stack.append(_Literal(", "))
        else:
            out.append(json.dumps(item, ensure_ascii=False, default=_json_default))
    return "".join(out)


class _Literal:
    __slots__ = ("text",)

    def __init__(self, text: str) -> None:
        self.text = text


def array_text(column: pa.Array | pa.ChunkedArray) -> pa.Array | pa.ChunkedArray:
    """A column as text, each value its own text (the same text ``value_text`` gives)."""
    if isinstance(column, pa.ChunkedArray):
        return pa.chunked_array([array_text(c) for c in column.chunks], pa.string())
    kind = column.type
    if pa.types.is_string(kind):
        return column
    if pa.types.is_large_string(kind) or pa.types.is_string_view(kind):
        return column.cast(pa.string())
    if pa.types.is_null(kind):
        return pa.nulls(len(column), pa.string())
    if pa.types.is_dictionary(kind):
        return array_text(column.dictionary_decode())
    if pa.types.is_integer(kind):
        return column.cast(pa.string())
    if pa.types.is_boolean(kind):
        return pc.if_else(column, "true", "false")
    if pa.types.is_float32(kind) or pa.types.is_float16(kind):
        # A float32's shortest text is its own (numpy's), not that of the float64 it widens to.
        numbers = column.to_numpy(zero_copy_only=False)
        valid = column.is_valid().to_numpy(zero_copy_only=False)
        texts = [str(n) if ok else None for n, ok in zip(numbers, valid, strict=True)]
        return pa.array(texts, pa.string())
    # Floats (Arrow's cast writes 1.23456789012345e+14, not repr), times, decimals, nested
    # values: the rare path, through Python.
    return pa.array([value_text(v) for v in column.to_pylist()], pa.string())
