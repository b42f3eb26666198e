"""Per-key state kept across batches, behind one interface, loaded and saved in bulk.

A keyed processor's state for a key is a JSON-able dict. The store keeps, per key, the state
after the last batch that applied records to it, that batch's id, and the state from before
that batch (``StoredState``). Re-processing a bucket of batch B (a retry, a resume after
kill -9, a redrive) therefore starts each key from the state it had before B, never from one
B already changed: no measurement is applied twice and none is skipped (``start_for``). A
bucket's states are saved only when the whole bucket succeeded, so a failed bucket redriven
after a later batch applied to its keys starts from that later state (its records are then
late data, which the processor decides about: ``kalman`` rejects them).

Stores are chosen by URL (``open_state_store`` in ``state_stores``): ``sqlite:///PATH`` (the
embedded default, beside the ledger), ``postgresql+psycopg2://...`` and ``dynamodb://TABLE``.
Each keeps a namespace per processor and key column, creates its table if missing, and counts
its calls (``operations``) for the benchmark.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

KeyState = dict[str, Any]


@dataclass(frozen=True)
class StoredState:
    """What a store holds for a key: ``state`` after batch ``batch_id``, ``before`` it (None:
    the key had no state before that batch)."""

    state: KeyState
    batch_id: str
    before: KeyState | None

    def start_for(self, batch_id: str) -> KeyState | None:
        """The state a batch's processing of this key starts from."""
        return self.before if self.batch_id == batch_id else self.state


class StateStore(Protocol):
    description: str  # the URL without a password
    operations: int  # calls made to the database or service, for the benchmark

    def load(self, namespace: str, keys: Sequence[str]) -> dict[str, StoredState]:
        """The stored state of each of ``keys`` that has one (in bulk: few calls)."""

    def save(self, namespace: str, states: Mapping[str, StoredState]) -> None:
        """Store ``states`` (in bulk), replacing what the keys had; all or raise."""

    def close(self) -> None:
        """Release connections."""
