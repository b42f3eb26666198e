"""A small keyed processor (a running sum per device, in ``seq`` order), an in-memory state
store, inputs for them, and the reference computation a keyed batch must equal.

``keyed_running_sum``: each valid record gets ``running_sum`` and ``running_count``, its key's
sum and count of values up to and including it; the state of a key is ``{"sum", "count"}``.
Records without a device, or with a negative value, are rejected. ``RunningSum.failing`` makes
it raise on a bucket holding one of those keys; ``RunningSum.crash_at`` makes its n-th call
raise ``Crash`` (a BaseException: as if the process died there).
"""

from __future__ import annotations

import copy
import json
import random
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from batch_pipeline.core.common.models import BatchSpec, ChunkingSettings, DeliverySettings
from batch_pipeline.core.initialize import prepare_batch
from batch_pipeline.core.ledger import Ledger
from batch_pipeline.core.pipeline import LocalRun, run_batch
from batch_pipeline.core.processing.processors.base import REGISTRY, register
from batch_pipeline.core.processing.processors.keyed import (
    KeyedProcessor,
    KeyedResult,
    KeyState,
    key_order,
    key_text,
)
from batch_pipeline.core.stores.state import StoredState
from batch_pipeline.core.stores.storage import Storage

NAME = "keyed_running_sum"


class Crash(BaseException):
    """The process dies here (nothing catches a BaseException that is not an Exception)."""


class RunningSum(KeyedProcessor):
    name = NAME
    failing: ClassVar[set[str]] = set()  # keys whose bucket raises
    crash_at: ClassVar[int | None] = None  # the call (1-based) that crashes
    calls: ClassVar[list[pa.Table]] = []  # every table process_keys was given

    def key_column(self) -> str:
        return "device"

    def process_keys(self, table: pa.Table, states: Mapping[str, KeyState]) -> KeyedResult:
        RunningSum.calls.append(table)
        if RunningSum.crash_at is not None and len(RunningSum.calls) >= RunningSum.crash_at:
            raise Crash(f"crash at call {len(RunningSum.calls)}")
        keys = key_text(table.column("device"))
        names = keys.to_pylist()
        hit = sorted(RunningSum.failing & {k for k in names if k is not None})
        if hit:
            raise ValueError(f"injected fault on key {hit[0]}")
        seq = table.column("seq").to_numpy(zero_copy_only=False).astype(float)
        values = table.column("value").to_pylist()
        sums: dict[str, int] = {}
        counts: dict[str, int] = {}
        kept, running, running_count, rejected = [], [], [], {}
        for i in key_order(keys, seq).tolist():
            key, value = names[i], values[i]
            if key is None:
                rejected[i] = "no device"
                continue
            if value is None or value < 0:
                rejected[i] = "negative value"
                continue
            if key not in sums:
                start = states.get(key) or {"sum": 0, "count": 0}
                sums[key], counts[key] = start["sum"], start["count"]
            sums[key] += value
            counts[key] += 1
            kept.append(i)
            running.append(sums[key])
            running_count.append(counts[key])
        valid = table.take(pa.array(kept, pa.int64()))
        valid = valid.append_column("running_sum", pa.array(running, pa.int64()))
        valid = valid.append_column("running_count", pa.array(running_count, pa.int64()))
        order = sorted(rejected)
        return KeyedResult(
            valid=valid,
            rejected=np.array(order, dtype=np.int64),
            reasons=pa.array([rejected[i] for i in order], pa.string()),
            states={k: {"sum": sums[k], "count": counts[k]} for k in sums},
        )


if NAME not in REGISTRY:
    register(RunningSum)


class MemoryStore:
    """A StateStore in a dict, counting its calls (and the keys of each)."""

    description = "memory://"

    def __init__(self, crash_after_save: int | None = None) -> None:
        self.data: dict[str, dict[str, StoredState]] = {}
        self.operations = 0
        self.loads: list[int] = []
        self.saves: list[int] = []
        self.crash_after_save = crash_after_save  # the save (1-based) after which we crash

    def load(self, namespace: str, keys: Sequence[str]) -> dict[str, StoredState]:
        self.operations += 1
        self.loads.append(len(keys))
        held = self.data.get(namespace, {})
        return {k: copy.deepcopy(held[k]) for k in keys if k in held}

    def save(self, namespace: str, states: Mapping[str, StoredState]) -> None:
        self.operations += 1
        self.saves.append(len(states))
        json.dumps({k: [s.state, s.batch_id, s.before] for k, s in states.items()})
        self.data.setdefault(namespace, {}).update(copy.deepcopy(dict(states)))
        if self.crash_after_save is not None and len(self.saves) >= self.crash_after_save:
            self.crash_after_save = None
            raise Crash("crash after saving states")

    def close(self) -> None:
        pass

    def states(self) -> dict[str, KeyState]:
        """Each key's current state."""
        return {k: s.state for ns in self.data.values() for k, s in ns.items()}


def records(n: int, keys: int, seed: int = 7, start: int = 0) -> list[dict[str, Any]]:
    """``n`` records over ``keys`` devices (and a few without), ``seq`` shuffled within the
    batch (so input order is not key order), some negative values; ``n`` numbers them."""
    rng = random.Random(seed)
    seqs = list(range(start, start + n))
    rng.shuffle(seqs)
    out = []
    for i in range(n):
        device = None if i % 97 == 13 else f"d{rng.randrange(keys)}"
        value = -1 if i % 53 == 7 else rng.randrange(100)
        out.append({"n": start + i, "device": device, "seq": seqs[i], "value": value})
    return out


def write_jsonl(path: Path, rows: list[dict[str, Any]], broken: Sequence[int] = ()) -> Path:
    """The records as JSON lines, with a line that does not parse before each of ``broken``."""
    lines = []
    for i, row in enumerate(rows):
        if i in broken:
            lines.append('{"n": broken')
        lines.append(json.dumps(row))
    path.write_text("\n".join(lines) + "\n")
    return path


def keyed_spec(
    storage: Storage,
    source: Path,
    out: Path,
    chunk_records: int = 100,
    max_buckets: int | None = None,
    **prepare: Any,
) -> BatchSpec:
    chunking = ChunkingSettings(chunk_records=chunk_records)
    if max_buckets is not None:
        chunking = replace(chunking, max_buckets=max_buckets)
    prepare.setdefault("delivery", DeliverySettings(target="none"))
    return prepare_batch(
        storage, str(source), processor=NAME, chunking=chunking, output=str(out), **prepare
    )


def run_keyed(
    storage: Storage, spec: BatchSpec, store: MemoryStore, ledger: Ledger | None = None
) -> LocalRun:
    return run_batch(storage, spec, ledger=ledger, state_store=store)


def read_rows(storage: Storage, uris: list[str]) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for uri in uris:
        with storage.open_input_file(uri) as f:
            rows.extend(pq.read_table(f).to_pylist())
    return rows


def reference(
    rows: list[dict[str, Any]], start: Mapping[str, KeyState] | None = None
) -> tuple[list[tuple[Any, ...]], dict[str, KeyState]]:
    """The running sums of ``rows`` in one pass (key by key, in ``seq`` order), from ``start``:
    the valid rows as (n, device, seq, value, running_sum, running_count), sorted by n, and
    every key's final state."""
    states = {k: dict(v) for k, v in (start or {}).items()}
    valid = []
    for row in sorted(rows, key=lambda r: (r["seq"], r["n"])):
        if row["device"] is None or row["value"] < 0:
            continue
        state = states.setdefault(row["device"], {"sum": 0, "count": 0})
        state["sum"] += row["value"]
        state["count"] += 1
        valid.append((row["n"], row["device"], row["seq"], row["value"], state["sum"],
                      state["count"]))  # fmt: skip
    return sorted(valid), states


def as_tuples(rows: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    names = ("n", "device", "seq", "value", "running_sum", "running_count")
    return sorted(tuple(r[k] for k in names) for r in rows)
