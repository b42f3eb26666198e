"""Per-key state kept across batches, behind one interface, loaded and saved in bulk.

A keyed processor's state for a key is a JSON-able dict. The store keeps, per key, the state
after the last batch that applied records to it, that batch's id, and the state from before
that batch (``StoredState``). Re-processing a bucket of batch B (a retry, a resume after
kill -9, a redrive) therefore starts each key from the state it had before B, never from one
B already changed: no measurement is applied twice and none is skipped (``start_for``). A
bucket's states are saved only when the whole bucket succeeded, so a failed bucket redriven
after a later batch applied to its keys starts from that later state (its records are then
late data, which the processor decides about: ``kalman`` rejects them).

A bucket's new states go through ``next_stored``, which keeps ``before`` right when a batch saves
a key it has saved already (a retried bucket): ``before`` stays the state from before the batch.
A save cut short (some calls made, then an error) is therefore safe to repeat as well.

Keys are strings of at most ``MAX_KEY_BYTES`` bytes in UTF-8, in every store alike (a key one
store takes every store takes; DynamoDB's partition key holds 2048 bytes, namespace included);
neither keys nor namespaces hold a NUL (Postgres text cannot), and a namespace is 1 to
``MAX_NAMESPACE`` characters without ``NAMESPACE_SEPARATOR``. States are kept as JSON text:
numbers round-trip exactly (floats by their shortest repr, ints of any size), tuples come back
as lists and dict keys as strings.

Stores are chosen by URL (``open_state_store`` in ``state_stores``): ``sqlite:///PATH`` (the
embedded default, beside the ledger), ``postgresql+psycopg2://...`` and ``dynamodb://TABLE``.
Each keeps a namespace per processor and key column, creates its table if missing, and counts
its calls (``operations``) for the benchmark.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from batch_pipeline.core.common.errors import ConfigError, StateStoreError

KeyState = dict[str, Any]
MAX_KEY_BYTES = 1024  # DynamoDB's partition key takes 2048 bytes, the namespace included
MAX_NAMESPACE = 255  # characters: with a key, within DynamoDB's 2048 bytes
NAMESPACE_SEPARATOR = "\x1f"  # between namespace and key in a DynamoDB item's ``pk``


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
    kind: str  # "state" (bp_key_states) or "leads" (the lead store): KeyedProcessor.store_kind
    operations: int  # calls made to the database or service, for the benchmark

    def load(self, namespace: str, keys: Sequence[str]) -> dict[str, StoredState]:
        """The stored state of each of ``keys`` that has one (in bulk: few calls)."""

    def save(self, namespace: str, states: Mapping[str, StoredState]) -> None:
        """Store ``states`` (in bulk), replacing what the keys had; all or raise."""

    def close(self) -> None:
        """Release connections."""


def next_stored(stored: StoredState | None, batch_id: str, new_state: KeyState) -> StoredState:
    """What to save for a key that batch ``batch_id`` left in ``new_state``, given what the
    store held (``stored``, None: nothing): ``before`` is the state the batch started from, also
    when the batch saved this key already (a retried or resumed bucket), never the batch's own
    earlier result."""
    before = stored.start_for(batch_id) if stored is not None else None
    return StoredState(new_state, batch_id, before)


def check_namespace(namespace: str) -> str:
    """``namespace`` if a store can keep it apart from every other one, else a ConfigError."""
    if (
        not isinstance(namespace, str)
        or not 0 < len(namespace) <= MAX_NAMESPACE
        or {NAMESPACE_SEPARATOR, "\0"} & set(namespace)
    ):
        raise ConfigError(
            f"state namespace {namespace!r} must be 1 to {MAX_NAMESPACE} characters without "
            f"{NAMESPACE_SEPARATOR!r} or NUL"
        )
    return namespace


def check_key(key: str, store: str) -> str:
    """``key`` if every store can keep it (text without NUL, at most ``MAX_KEY_BYTES`` bytes),
    else a permanent StateStoreError naming it (shortened)."""
    try:
        size = len(key.encode("utf-8"))
    except (AttributeError, UnicodeEncodeError):
        raise StateStoreError(f"{store}: state key {key!r} is not a string of text") from None
    if "\0" in key:
        raise StateStoreError(f"{store}: state key {key!r} holds a NUL, which Postgres cannot keep")
    if size > MAX_KEY_BYTES:
        raise StateStoreError(
            f"{store}: state key {key[:60]!r}... is {size} bytes in UTF-8, more than the "
            f"{MAX_KEY_BYTES} a state store keeps"
        )
    return key


def state_text(state: KeyState | None, key: str, store: str) -> str | None:
    """A state as the JSON text a store keeps (ASCII: any string survives any database), or a
    permanent StateStoreError naming the key when it is not JSON-able."""
    if state is None:
        return None
    if not isinstance(state, dict):
        raise StateStoreError(f"{store}: the state of key {key!r} is not a dict: {state!r:.80}")
    try:
        return json.dumps(state, separators=(",", ":"))
    except (TypeError, ValueError) as exc:
        raise StateStoreError(f"{store}: the state of key {key!r} is not JSON: {exc}") from exc


def parse_state(text: str | None) -> KeyState | None:
    """The state a store's JSON text holds."""
    return None if text is None else json.loads(text)
