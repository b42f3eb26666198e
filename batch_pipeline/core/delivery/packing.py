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

import numpy as np
import polars as pl
import pyarrow as pa

from batch_pipeline.core.errors import DeliveryError


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
    """One JSON object per record, in order: times ISO 8601, NaN and nulls as null."""
    if table.num_rows == 0:
        return SerializedRecords(b"", np.zeros(1, dtype=np.int64))
    buffer = io.BytesIO()
    pl.from_arrow(table).write_ndjson(buffer)
    data = buffer.getvalue()
    if not data.endswith(b"\n"):
        data += b"\n"
    ends = np.flatnonzero(np.frombuffer(data, dtype=np.uint8) == 10) + 1
    if ends.size != table.num_rows:
        raise DeliveryError(
            f"serialised {ends.size} JSON lines for {table.num_rows} records", permanent=True
        )
    return SerializedRecords(data, np.concatenate([[0], ends]).astype(np.int64))


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


def pack(lengths: np.ndarray, max_records: int, max_bytes: int) -> list[tuple[int, int]]:
    """Greedy ranges [a, b) of records: at most ``max_records`` each, and their JSON joined by
    commas at most ``max_bytes``. Raises DeliveryError (permanent) naming a record that cannot
    fit in any message."""
    n = int(lengths.size)
    cumulative = np.concatenate([[0], np.cumsum(lengths.astype(np.int64) + 1)])
    ranges: list[tuple[int, int]] = []
    a = 0
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
