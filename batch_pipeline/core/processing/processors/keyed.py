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

Two optional hooks, for processors that need more than that (``leads``):

- ``prepare`` runs in stage 1 on each chunk, before its records are sent to their buckets: it
  may reject records (with reasons) and rewrite the kept ones, for instance to derive the key
  column that the hash then reads (a normalized e-mail), so that records whose keys are
  written differently still meet in one bucket. The default keeps every record as it is.
- ``process_bucket`` is what the bucket step calls, with a ``KeyedContext`` (the batch's id
  and time); by default it calls ``process_keys``.

``store_kind`` names the store that keeps the states: ``state`` (a state store's
``bp_key_states``) or ``leads`` (the lead store's ``leads`` table, ``core.stores.leads``).
Either result may carry ``counts``: named totals (``leads_inserted``...) that the batch sums
into its summary, manifest and asset metadata.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

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
    counts: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class KeyedContext:
    """What a keyed processor may know of its batch besides the records: the batch's id, its
    source (a file, or a file set's prefix or pattern) and, in stage 2, its time: when it was
    first registered, in seconds since the epoch, the same in every run of the batch (so that
    a resumed batch writes what a clean run would). None in stage 1."""

    batch_id: str
    source_uri: str
    batch_time: float | None = None
    # The values of the environment variables the processor named (``secret_names``), which
    # the edge (the op) read: the core reads no environment. Never shown.
    secrets: Mapping[str, str] = field(default_factory=dict, repr=False)


class KeyedProcessor(Processor):
    """Base class of processors that run in the keyed stage."""

    store_kind: ClassVar[str] = "state"

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

    def secret_names(self) -> tuple[str, ...]:
        """Environment variables whose values the processor needs (an API key's), read by the
        step that runs ``prepare`` and given in ``KeyedContext.secrets``."""
        return ()

    def prepare(self, table: pa.Table, context: KeyedContext) -> ProcessResult:
        """Stage 1, on a chunk before the shuffle: the records to send to their buckets (in
        input order, with the key column) and those rejected, with reasons. Keeps all."""
        return ProcessResult.keep_all(table)

    def process_bucket(
        self, table: pa.Table, states: Mapping[str, KeyState], context: KeyedContext
    ) -> KeyedResult:
        """Stage 2, what the bucket step calls: ``process_keys`` unless a processor needs the
        batch's ``context``."""
        return self.process_keys(table, states)

    def process_keys(self, table: pa.Table, states: Mapping[str, KeyState]) -> KeyedResult:
        """Process a bucket: ``table`` holds every record of its keys, in input order;
        ``states`` the state of each key that has one, by the key's text (``key_text``)."""
        raise NotImplementedError(
            f"keyed processor {self.name!r} implements neither process_keys nor process_bucket"
        )


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
