"""The keyed benchmark's workers, each one measurement in a process of its own
(``python -m benchmarks.keyed_state --worker TASK``):

- ``core``: every combination of measurements and users through ``run_batch`` with one store,
  a first and a second batch per repetition, each repetition with users of its own;
- ``job``: one batch of the generated file through ``run_batch`` with the SQLite store.

Both run a batch as ``one_batch`` does: ``prepare_batch`` (``kalman``, delivery ``none``), then
``run_batch`` with a SQLite file ledger in the worker's temporary folder and the store wrapped
in a ``TimedStore``; its figures come from the ledger's chunk and bucket rows (each row's
``seconds`` and peak memory, as the stage measured them) and the store's counters. The counts
are returned as they are, for the driver to check.
"""

from __future__ import annotations

import math
import os
import time
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

from benchmarks.harness import Worker
from benchmarks.keyed_state import CORE_OUTLIER_EVERY, KALMAN

MODULE = "benchmarks.keyed_state"
COUNTERS = ("operations", "load_seconds", "save_seconds", "loads", "saves", "keys_asked",
            "keys_found", "keys_saved")  # fmt: skip


class TimedStore:
    """A state store that times its store's ``load`` and ``save`` and counts their keys;
    ``operations`` is the store's own count (its calls to the database or service), read after
    each call (a call that raised leaves it as it was: the run fails then anyway)."""

    def __init__(self, store: Any) -> None:
        self.store = store
        self.description = store.description
        self.load_seconds = self.save_seconds = 0.0
        self.loads = self.saves = 0
        self.keys_asked = self.keys_found = self.keys_saved = 0
        self.operations = int(store.operations)

    def load(self, namespace: str, keys: Sequence[str]) -> dict[str, Any]:
        started = time.perf_counter()
        found = self.store.load(namespace, keys)
        self.load_seconds += time.perf_counter() - started
        self.operations = int(self.store.operations)
        self.loads += 1
        self.keys_asked += len(keys)
        self.keys_found += len(found)
        return dict(found)

    def save(self, namespace: str, states: Mapping[str, Any]) -> None:
        started = time.perf_counter()
        self.store.save(namespace, states)
        self.save_seconds += time.perf_counter() - started
        self.operations = int(self.store.operations)
        self.saves += 1
        self.keys_saved += len(states)

    def close(self) -> None:
        self.store.close()

    def counters(self) -> dict[str, float]:
        return {name: getattr(self, name) for name in COUNTERS}


def open_store(task: dict[str, Any]) -> TimedStore:
    """The store of ``task["store"]``: a SQLite file in the worker's folder, the Postgres URL
    the driver made, or a new table on the driver's moto server."""
    from batch_pipeline.core.stores.state_stores import open_state_store

    kind = task["store"]
    if kind == "sqlite":
        return TimedStore(open_state_store(f"sqlite:///{task['tmp_dir']}/state.db"))
    if kind == "postgres":
        return TimedStore(open_state_store(task["url"]))
    import boto3

    client = boto3.client(
        "dynamodb",
        endpoint_url=task["endpoint"],
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    table = f"bench-keyed-{uuid.uuid4().hex[:12]}"
    return TimedStore(open_state_store(f"dynamodb://{table}", dynamodb_client=client))


def one_batch(
    storage: Any, ledger: Any, store: TimedStore, source: str, batch_id: str, output: str,
    chunk_records: int,
) -> dict[str, Any]:  # fmt: skip
    """One batch of ``source`` prepared and run; its times, counts and the store's use."""
    from batch_pipeline.core.common.models import ChunkingSettings, DeliverySettings
    from batch_pipeline.core.initialize import prepare_batch
    from batch_pipeline.core.pipeline import run_batch

    before = store.counters()
    started = time.perf_counter()
    spec = prepare_batch(
        storage,
        source,
        processor="kalman",
        processor_options=dict(KALMAN),
        chunking=ChunkingSettings(chunk_records=chunk_records),
        output=output,
        delivery=DeliverySettings(target="none"),
        batch_id=batch_id,
    )
    prepared = time.perf_counter()
    result = run_batch(storage, spec, ledger=ledger, state_store=store).result
    ran = time.perf_counter()
    used = {k: v - before[k] for k, v in store.counters().items()}
    chunks = [s.chunk_summary() for s in ledger.chunk_states(batch_id)]
    buckets = [s.chunk_summary() for s in ledger.buckets.chunk_states(batch_id)]
    return {
        "prepare_seconds": prepared - started,
        "run_seconds": ran - prepared,
        "stage1_seconds": sum(c.seconds for c in chunks if c),
        "bucket_seconds": sum(b.seconds for b in buckets if b),
        "bucket_seconds_max": max((b.seconds for b in buckets if b), default=None),
        "chunk_peak_rss_bytes": max((c.peak_rss_bytes for c in chunks if c), default=None),
        "bucket_peak_rss_bytes": max((b.peak_rss_bytes for b in buckets if b), default=None),
        **used,
        "status": str(result.status),
        "records_in": result.records_in,
        "records_out": result.records_out,
        "records_rejected": result.records_rejected,
        "rejection_reasons": result.rejection_reasons,
        "chunks": result.chunks,
        "chunks_succeeded": result.chunks_succeeded,
        "buckets": result.buckets,
        "buckets_succeeded": result.buckets_succeeded,
    }


def worker_core(task: dict[str, Any]) -> dict[str, Any]:
    """Each (records, users) of ``task["combos"]``, ``task["repeats"]`` times: a first batch of
    new users, then a second batch of the same users a few days later, one chunk and one
    bucket each."""
    from batch_pipeline.core.ledger import Ledger
    from batch_pipeline.core.stores.storage import Storage
    from benchmarks.keyed_state.data import write_measurements

    folder = task["tmp_dir"]
    storage, ledger, store = Storage(), Ledger(f"sqlite:///{folder}/ledger.db"), open_store(task)
    started = time.perf_counter()
    combos: list[dict[str, Any]] = []
    total = 0
    try:
        for records, users in task["combos"]:
            runs: dict[str, list[dict[str, Any]]] = {"first": [], "second": []}
            for rep in range(task["repeats"]):
                prefix = f"n{records}x{users}r{rep}-"
                for number, which in enumerate(runs):
                    source = os.path.join(folder, f"{prefix}{which}.csv")
                    made = write_measurements(
                        source,
                        records,
                        users,
                        prefix=prefix,
                        day0=number * (records // users + 1),
                        fresh=number == 0,
                        outlier_every=CORE_OUTLIER_EVERY,
                        seed=task["seed"],
                    )
                    figures = one_batch(
                        storage, ledger, store, source, f"{prefix}{which}",
                        os.path.join(folder, "out"), chunk_records=records,
                    )  # fmt: skip
                    figures |= {"expected_records": records, "expected_rejected": made.outliers}
                    figures["expected_found"] = 0 if number == 0 else users
                    figures["users"] = users
                    runs[which].append(figures)
                    total += records
            combos.append({"records": records, "users": users, "runs": runs})
    finally:
        store.close()
    return {
        "seconds": time.perf_counter() - started,
        "records": total,
        "store": store.description,
        "combos": combos,
    }


def worker_job(task: dict[str, Any]) -> dict[str, Any]:
    """The generated file (``task["path"]``) as one batch in ``task["chunks"]`` chunks."""
    from batch_pipeline.core.ledger import Ledger
    from batch_pipeline.core.stores.storage import Storage

    folder = task["tmp_dir"]
    storage, ledger, store = Storage(), Ledger(f"sqlite:///{folder}/ledger.db"), open_store(task)
    try:
        figures = one_batch(
            storage, ledger, store, task["path"], "keyed-job", os.path.join(folder, "out"),
            chunk_records=math.ceil(task["records"] / task["chunks"]),
        )  # fmt: skip
    finally:
        store.close()
    return figures | {
        "seconds": figures["run_seconds"],
        "records": figures["records_in"],
        "store": store.description,
        "load_average": os.getloadavg(),
    }


WORKERS: dict[str, Worker] = {"core": worker_core, "job": worker_job}
