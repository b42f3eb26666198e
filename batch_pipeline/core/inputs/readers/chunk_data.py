"""What a reader gives back for one chunk: ``ChunkData``, and the table of its parse rejects.

Every reader of this package (CSV, JSONL, Parquet, staged parts, Excel sheets) returns a
``ChunkData``: the parsed records as one Arrow table, the bytes it read, the record index of
each row, the records that did not parse (``_record``, ``_reason``, ``_raw``) and how to map
record indices to line numbers.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

MIN_BLOCK = 1 << 20


@dataclass
class ChunkData:
    """A chunk's parsed records and what could not be parsed.

    ``records`` maps each table row to its record index in the chunk (None: row i is record i).
    ``rejects`` has ``_record``, ``_reason`` and ``_raw`` for records that did not parse.
    ``lines`` gives the 1-based line (text), sheet row (Excel) or record number (Parquet) of
    record indices, or None when the plan did not learn line numbers.
    """

    table: pa.Table
    bytes_read: int
    lines: Callable[[np.ndarray], np.ndarray | None]
    records: np.ndarray | None = None
    rejects: pa.Table | None = None

    @property
    def records_in(self) -> int:
        return self.table.num_rows + (self.rejects.num_rows if self.rejects is not None else 0)


def _no_lines(_: np.ndarray) -> None:
    return None


def offset_lines(first: int | None) -> Callable[[np.ndarray], np.ndarray | None]:
    if first is None:
        return _no_lines
    return lambda idx: np.asarray(idx, dtype=np.int64) + first


def rejects_table(
    records: Sequence[int], reasons: Sequence[str], raws: Sequence[str | None]
) -> pa.Table | None:
    """A chunk's parse rejects as a table (``_record``, ``_reason``, ``_raw``); None if none."""
    if not records:
        return None
    return pa.table(
        {
            "_record": pa.array(records, type=pa.int64()),
            "_reason": pa.array(reasons, type=pa.string()),
            "_raw": pa.array(raws, type=pa.string()),
        }
    )
