"""Schemas as ``plan.json`` stores them (exact and readable), and the schema of text columns.

The plan learns the batch's column types once (``planning``); each chunk reads them back from
``plan.json`` to conform its table. A CSV source's columns are all text (``string_schema``).
"""

from __future__ import annotations

import base64
from collections.abc import Iterable
from typing import Any

import pyarrow as pa


def schema_to_json(schema: pa.Schema) -> dict[str, Any]:
    """A schema for plan.json: exact (Arrow IPC, base64) and readable (type per column)."""
    data = schema.serialize().to_pybytes()
    return {
        "arrow": base64.b64encode(data).decode("ascii"),
        "columns": {f.name: str(f.type) for f in schema},
    }


def schema_from_json(data: Any) -> pa.Schema | None:
    """The schema ``schema_to_json`` wrote, or None (absent or unreadable: a plan from before
    schemas were planned, which then conforms nothing)."""
    if not isinstance(data, dict) or not isinstance(data.get("arrow"), str):
        return None
    try:
        import pyarrow.ipc as ipc

        return ipc.read_schema(pa.py_buffer(base64.b64decode(data["arrow"])))
    except (ValueError, pa.ArrowException):
        return None


def string_schema(names: Iterable[str]) -> pa.Schema:
    return pa.schema([(n, pa.string()) for n in names])
