"""Pack records into messages of the seed's format, within count and size limits.

A message body is ``{"batch_id", "file_key", "batch_data": [records], "batch_number",
"total_batches"}``. A chunk's records are serialised once, by polars, into one NDJSON buffer;
numpy finds where each record starts, packing is greedy on cumulative sizes, and a message's
``batch_data`` is a slice of the buffer with its line breaks turned into commas (JSON strings
never hold a raw line break). No Python object is made per record.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeAlias

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from batch_pipeline.core.common.errors import DeliveryError

if TYPE_CHECKING:  # polars is imported when records are serialized, not with the module
    import polars as pl
    from polars.datatypes import DataTypeClass

    PolarsType: TypeAlias = pl.DataType | DataTypeClass  # a dtype, or an inner one as a class
ISO_NAIVE = "%Y-%m-%dT%H:%M:%S%.f"  # chrono: %.f prints 0, 3, 6 or 9 fraction digits


@dataclass(frozen=True)
class SerializedRecords:
    """NDJSON bytes with the offset of each record; ``offsets[-1] == len(data)``."""

    data: bytes
    offsets: np.ndarray

    def __len__(self) -> int:
        return int(self.offsets.size) - 1

    @property
    def lengths(self) -> np.ndarray:
        """Bytes of each record's JSON (without its line break)."""
        return np.diff(self.offsets) - 1

    def joined(self, a: int, b: int) -> bytes:
        """Records ``a``..``b`` as the inside of a JSON array: ``{...},{...}``."""
        if b <= a:
            return b""
        return self.data[self.offsets[a] : self.offsets[b] - 1].replace(b"\n", b",")


def serialize_records(table: pa.Table) -> SerializedRecords:
    """One JSON object per record, in order: times ISO 8601 (``T`` between date and time; an
    offset only when the column has a time zone), dates ``YYYY-MM-DD``, NaN and nulls as null,
    binary as base64."""
    import polars as pl

    if table.num_rows == 0:
        return SerializedRecords(b"", np.zeros(1, dtype=np.int64))
    frame = pl.from_arrow(_json_ready(table))
    assert isinstance(frame, pl.DataFrame)
    fixes = {
        name: _json_expr(pl.col(name), dtype)
        for name, dtype in frame.schema.items()
        if _needs_fix(dtype)
    }
    if fixes:
        frame = frame.with_columns(**fixes)
    buffer = io.BytesIO()
    frame.write_ndjson(buffer)
    data = buffer.getvalue()
    if not data.endswith(b"\n"):
        data += b"\n"
    ends = np.flatnonzero(np.frombuffer(data, dtype=np.uint8) == 10) + 1
    if ends.size != table.num_rows:
        raise DeliveryError(
            f"serialised {ends.size} JSON lines for {table.num_rows} records", permanent=True
        )
    return SerializedRecords(data, np.concatenate([[0], ends]).astype(np.int64))


def _json_ready(table: pa.Table) -> pa.Table:
    """Arrow types polars would misrepresent: date64 (a date, not a datetime)."""
    for i, column in enumerate(table.columns):
        if pa.types.is_date64(column.type):
            table = table.set_column(i, table.field(i).name, pc.cast(column, pa.date32()))
    return table


def _needs_fix(dtype: PolarsType) -> bool:
    import polars as pl

    if isinstance(dtype, pl.Datetime):
        return dtype.time_zone is None
    if isinstance(dtype, pl.Binary):
        return True
    if isinstance(dtype, pl.List | pl.Array):
        return _needs_fix(dtype.inner)
    if isinstance(dtype, pl.Struct):
        return any(_needs_fix(f.dtype) for f in dtype.fields)
    return False


def _json_expr(expr: pl.Expr, dtype: PolarsType) -> pl.Expr:
    """``expr`` as polars should write it to JSON: naive times as ISO text with a ``T`` (polars
    writes a space), binary as base64 (polars cannot write it); nested values too."""
    import polars as pl

    if not _needs_fix(dtype):
        return expr
    if isinstance(dtype, pl.Datetime):
        return expr.dt.to_string(ISO_NAIVE)
    if isinstance(dtype, pl.Binary):
        return expr.bin.encode("base64")
    if isinstance(dtype, pl.Array):
        return _json_expr(expr.cast(pl.List(dtype.inner)), pl.List(dtype.inner))
    if isinstance(dtype, pl.List):
        return expr.list.eval(_json_expr(pl.element(), dtype.inner))
    assert isinstance(dtype, pl.Struct)
    fields = [_json_expr(expr.struct.field(f.name), f.dtype).alias(f.name) for f in dtype.fields]
    return pl.when(expr.is_null()).then(None).otherwise(pl.struct(fields))


def envelope(
    batch_id: str, file_key: str, records: bytes, batch_number: int, total_batches: int
) -> bytes:
    return b"".join(
        [
            f'{{"batch_id": {json.dumps(batch_id)}, "file_key": {json.dumps(file_key)}, '
            '"batch_data": ['.encode(),
            records,
            f'], "batch_number": {batch_number}, "total_batches": {total_batches}}}'.encode(),
        ]
    )


def envelope_overhead(batch_id: str, file_key: str) -> int:
    """Bytes of a message body besides its records, with room for the largest numbers."""
    return len(envelope(batch_id, file_key, b"", 10**9, 10**9))


def pack(
    lengths: np.ndarray, max_records: int, max_bytes: int, groups: np.ndarray | None = None
) -> list[tuple[int, int]]:
    """Greedy ranges [a, b) of records: at most ``max_records`` each, and their JSON joined by
    commas at most ``max_bytes``. With ``groups`` (a code per record, each group's records
    next to each other) a range never holds two groups. Raises DeliveryError (permanent) naming
    a record that cannot fit in any message."""
    cumulative = np.concatenate([[0], np.cumsum(lengths.astype(np.int64) + 1)])
    if groups is None or groups.size == 0:
        return _pack_range(lengths, cumulative, 0, int(lengths.size), max_records, max_bytes)
    starts = np.concatenate([[0], np.flatnonzero(groups[1:] != groups[:-1]) + 1, [groups.size]])
    ranges: list[tuple[int, int]] = []
    for a, b in zip(starts[:-1].tolist(), starts[1:].tolist(), strict=True):
        ranges.extend(_pack_range(lengths, cumulative, a, b, max_records, max_bytes))
    return ranges


def _pack_range(
    lengths: np.ndarray, cumulative: np.ndarray, a: int, n: int, max_records: int, max_bytes: int
) -> list[tuple[int, int]]:
    """``pack`` of records ``a``..``n`` (``cumulative``: the sizes summed over all records,
    each with its comma)."""
    ranges: list[tuple[int, int]] = []
    while a < n:
        by_size = int(np.searchsorted(cumulative, cumulative[a] + max_bytes + 1, side="right")) - 1
        b = min(by_size, a + max_records, n)
        if b <= a:
            raise DeliveryError(
                f"record {a} is {int(lengths[a])} bytes of JSON; a message holds at most "
                f"{max_bytes} bytes of records",
                permanent=True,
            )
        ranges.append((a, b))
        a = b
    return ranges
