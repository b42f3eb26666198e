"""Keyed processors: all of a key's records at once, in order, with the key's stored state.

A ``KeyedProcessor`` declares a key column (``key_column``). The job then shuffles: every
chunk's records are hash-partitioned by key into buckets, and one step per bucket calls
``process_keys`` with the bucket's records (in input order: chunk by chunk, row by row) and
the state each of its keys had before this batch. The processor orders each key's records
itself (``key_order`` does the usual: key, then an order column, ties in input order), since
only it knows how to read its order column, and returns the records kept (in that order), the
rejected ones with a reason each, and the new state of every key it applied records to.
States are JSON-able dicts; the stage loads and saves them in bulk through a state store
(``core.stores.state``) and makes re-processing a bucket exactly-once.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from batch_pipeline.core.common.errors import ConfigError
from batch_pipeline.core.processing.processors.base import Processor, ProcessResult

KeyState = dict[str, Any]


@dataclass
class KeyedResult:
    """``valid``: the records kept, each key's in its order. ``rejected``: indices into the
    input table, ascending, with one reason each. ``states``: the new state of each key the
    processor applied records to (a key left out keeps the state it had)."""

    valid: pa.Table
    rejected: np.ndarray
    reasons: pa.Array
    states: dict[str, KeyState] = field(default_factory=dict)


class KeyedProcessor(Processor):
    """Base class of processors that run in the keyed stage."""

    @abstractmethod
    def key_column(self) -> str:
        """The column whose value makes a record's key."""

    def state_namespace(self) -> str:
        """Where its states are kept in a store, apart from other processors' and other
        settings' states of the same keys: ``{name}/{key column}`` unless a processor says
        more (``kalman`` adds its value column: weights and heights of one user are two
        states)."""
        return f"{self.name}/{self.key_column()}"

    def process(self, table: pa.Table) -> ProcessResult:
        raise ConfigError(
            f"processor {self.name!r} is keyed: it runs in the keyed stage (one bucket of "
            "whole keys at a time), not on a chunk"
        )

    @abstractmethod
    def process_keys(self, table: pa.Table, states: Mapping[str, KeyState]) -> KeyedResult:
        """Process a bucket: ``table`` holds every record of its keys, in input order;
        ``states`` the state of each key that has one, by the key's text (``key_text``)."""


def key_text(column: pa.ChunkedArray | pa.Array) -> pa.Array:
    """A key column's values as text (the form states are stored under); null stays null."""
    array = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    if pa.types.is_dictionary(array.type):
        array = array.dictionary_decode()
    return array if pa.types.is_string(array.type) else pc.cast(array, pa.string())


def key_order(keys: pa.Array, order: np.ndarray | None = None) -> np.ndarray:
    """Indices that put records in key order (keys by first appearance), then by ``order``
    (numbers, e.g. times as floats) within a key, ties in input order. Null keys come last."""
    encoded = pc.dictionary_encode(keys)
    if isinstance(encoded, pa.ChunkedArray):
        encoded = encoded.combine_chunks()
    codes = encoded.indices.fill_null(-1).to_numpy(zero_copy_only=False).astype(np.int64)
    codes[codes < 0] = np.iinfo(np.int64).max
    if order is None:
        return np.argsort(codes, kind="stable")
    return np.lexsort((np.arange(codes.size), order, codes))
