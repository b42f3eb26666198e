"""The leads benchmark's workers, each one batch in a process of its own
(``python -m benchmarks.leads --worker TASK``); the lead store and the ledger are in the folder
the driver keeps for the pair of batches (``task["store_dir"]``), so batch 2 finds batch 1's.

- ``job``: ``batch-pipeline run`` in a child process, as a user runs it (``--json``), its
  figures from its summary and from the ledger's chunk and bucket rows;
- ``core``: ``prepare_batch`` + ``run_batch`` in this process, the store's load and save timed;
- ``pandas``: the baseline script.

Only the standard library is imported at module level (the driver imports this module).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from benchmarks.harness import Worker

MODULE = "benchmarks.leads"
CLI = "import sys; from batch_pipeline.cli import main; sys.exit(main())"
COUNTS = ("leads_inserted", "leads_updated", "leads_unchanged", "leads_merged_in_batch")


def _urls(task: dict[str, Any]) -> tuple[str, str]:
    """(the ledger's URL, the lead store's URL): SQLite files in the pair's folder, or the
    Postgres database the driver made."""
    folder = task["store_dir"]
    store = task.get("store_url") or f"sqlite:///{folder}/leads.db"
    return f"sqlite:///{folder}/ledger.db", store


def _stages(ledger_url: str, batch_id: str) -> dict[str, Any]:
    """The ledger's chunk and bucket rows of the batch: their seconds and peak memory."""
    from batch_pipeline.core.ledger import Ledger

    ledger = Ledger(ledger_url)
    try:
        chunks = ledger.chunk_states(batch_id)
        buckets = ledger.buckets.chunk_states(batch_id)
    finally:
        ledger.dispose()

    def peak(rows: Sequence[Any]) -> int | None:
        return max((r.peak_rss_bytes or 0 for r in rows), default=0) or None

    return {
        "chunks": len(chunks),
        "buckets": len(buckets),
        "stage1_seconds": sum(r.seconds or 0.0 for r in chunks),
        "stage2_seconds": sum(r.seconds or 0.0 for r in buckets),
        "stage1_seconds_max": max((r.seconds or 0.0 for r in chunks), default=None),
        "stage2_seconds_max": max((r.seconds or 0.0 for r in buckets), default=None),
        "chunk_peak_rss_bytes": peak(chunks),
        "bucket_peak_rss_bytes": peak(buckets),
    }


def worker_job(task: dict[str, Any]) -> dict[str, Any]:
    """``batch-pipeline run`` of the file as batch ``task["batch_id"]``, in a child process
    (its Dagster instance a temporary one in the worker's folder)."""
    ledger, store = _urls(task)
    command = [sys.executable, "-c", CLI, "run", task["path"], "--processor", "leads",
               "--lead-store", store, "--ledger", ledger, "--batch-id", task["batch_id"],
               "--output", os.path.join(task["tmp_dir"], "out"), "--deliver", "none",
               "--executor", task["executor"], "--json", "--no-progress"]  # fmt: skip
    if task.get("max_concurrent"):
        command += ["--max-concurrent", str(task["max_concurrent"])]
    drop = {"DAGSTER_HOME", "BATCH_PIPELINE_LEDGER_URL", "BATCH_PIPELINE_STATE_STORE_URL"}
    env = {k: v for k, v in os.environ.items() if k not in drop} | {"TMPDIR": task["tmp_dir"]}
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    wall = time.perf_counter() - started
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode or not lines:
        raise RuntimeError(f"batch-pipeline run exited {done.returncode}: {done.stderr[-2000:]}")
    summary = json.loads(lines[-1])
    return {
        "seconds": wall,
        "records": summary["records_in"],
        "status": summary["batch_status"],
        "records_in": summary["records_in"],
        "records_out": summary["records_out"],
        "records_rejected": summary["records_rejected"],
        "counts": summary.get("counts", {}),
        "cli_seconds": summary.get("seconds"),
        "store": store.split("://")[0],
        **_stages(ledger, task["batch_id"]),
        "load_average": os.getloadavg(),
    }


class TimedLeadStore:
    """The lead store, its ``load`` and ``save`` timed (``kind`` passed on: the bucket step
    checks that the store is a lead store)."""

    def __init__(self, store: Any) -> None:
        self.store = store
        self.kind = store.kind
        self.description = store.description
        self.load_seconds = self.save_seconds = 0.0
        self.operations = int(store.operations)  # the store's own count, read after each call

    def load(self, namespace: str, keys: Sequence[str]) -> dict[str, Any]:
        started = time.perf_counter()
        found = self.store.load(namespace, keys)
        self.load_seconds += time.perf_counter() - started
        self.operations = int(self.store.operations)
        return dict(found)

    def save(self, namespace: str, states: Mapping[str, Any]) -> None:
        started = time.perf_counter()
        self.store.save(namespace, states)
        self.save_seconds += time.perf_counter() - started
        self.operations = int(self.store.operations)

    def close(self) -> None:
        self.store.close()


def worker_core(task: dict[str, Any]) -> dict[str, Any]:
    """The file as one batch through ``prepare_batch`` and ``run_batch`` in this process
    (optionally under cProfile, ``task["profile"]``: a path)."""
    from batch_pipeline.core.common.models import DeliverySettings
    from batch_pipeline.core.initialize import prepare_batch
    from batch_pipeline.core.ledger import Ledger
    from batch_pipeline.core.pipeline import run_batch
    from batch_pipeline.core.stores.state_stores import open_state_store
    from batch_pipeline.core.stores.storage import Storage

    ledger_url, store_url = _urls(task)
    storage, ledger = Storage(), Ledger(ledger_url)
    store = TimedLeadStore(open_state_store(store_url, kind="leads"))
    profiler = None
    if task.get("profile"):
        import cProfile

        profiler = cProfile.Profile()
        profiler.enable()
    try:
        started = time.perf_counter()
        spec = prepare_batch(
            storage,
            task["path"],
            processor="leads",
            output=os.path.join(task["tmp_dir"], "out"),
            delivery=DeliverySettings(target="none"),
            batch_id=task["batch_id"],
        )
        result = run_batch(storage, spec, ledger=ledger, state_store=store).result
        wall = time.perf_counter() - started
    finally:
        if profiler is not None:
            profiler.disable()
        store.close()
        ledger.dispose()
    out = {
        "seconds": wall,
        "records": result.records_in,
        "status": str(result.status),
        "records_in": result.records_in,
        "records_out": result.records_out,
        "records_rejected": result.records_rejected,
        "counts": dict(result.counts),
        "store": store_url.split("://")[0].split("+")[0],
        "store_load_seconds": store.load_seconds,
        "store_save_seconds": store.save_seconds,
        **_stages(ledger_url, task["batch_id"]),
        "load_average": os.getloadavg(),
    }
    if profiler is not None:
        out["profile"] = write_profile(profiler, task["profile"])
    return out


def write_profile(profiler: Any, path: str) -> dict[str, str]:
    """The profile's ``.pstats`` at ``path`` and its top functions in ``path.txt``."""
    import io
    import pstats

    Path(path).parent.mkdir(parents=True, exist_ok=True)
    profiler.dump_stats(path)
    text = io.StringIO()
    stats = pstats.Stats(profiler, stream=text)
    stats.sort_stats("tottime").print_stats(30)
    stats.sort_stats("cumulative").print_stats(50)
    Path(path + ".txt").write_text(text.getvalue())
    return {"pstats": path, "text": path + ".txt"}


TABLE = """CREATE TABLE IF NOT EXISTS leads (email TEXT PRIMARY KEY, name TEXT, phone TEXT,
company TEXT, title TEXT, industry TEXT, source TEXT, updated_at TEXT)"""
UPSERT = """INSERT INTO leads (email, name, phone, company, title, industry, source, updated_at)
VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (email) DO UPDATE SET
name = coalesce(excluded.name, name), phone = coalesce(excluded.phone, phone),
company = coalesce(excluded.company, company), title = coalesce(excluded.title, title),
industry = coalesce(excluded.industry, industry), source = coalesce(excluded.source, source),
updated_at = excluded.updated_at"""


def worker_pandas(task: dict[str, Any]) -> dict[str, Any]:
    """The baseline: read with pandas, standardize with ``rules``, keep each e-mail's last
    non-empty value per field (``groupby(email).last()``), upsert with ``executemany``."""
    import sqlite3

    import pandas as pd
    import pyarrow as pa
    import pyarrow.compute as pc

    from batch_pipeline.core.processing.processors.leads import rules

    started = time.perf_counter()
    frame = pd.read_csv(task["path"], dtype=str, keep_default_na=False)
    taken = rules.match_columns(list(frame.columns))
    raw = {f: pa.array(frame[cs[0]]) if cs else pa.nulls(len(frame), pa.string())
           for f, cs in taken.items()}  # fmt: skip
    emails, reasons = rules.standardize_email(raw["email"])
    phones = rules.standardize_phone(raw["phone"])
    values = {
        "email": emails,
        "name": rules.standardize_name(raw["name"]),
        "phone": pc.if_else(pc.equal(phones, "N/A"), None, phones),
        "company": rules.standardize_company(raw["company"]),
        "title": rules.standardize_title(raw["title"]),
        "industry": rules.standardize_industry(raw["industry"]),
        "source": rules.standardize_text(raw["source"]),
    }
    table = pa.table(values).to_pandas()
    valid = table[table["email"].notna()]
    leads = valid.groupby("email", sort=False).last()  # per column: the last non-null value
    standardized = time.perf_counter()
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    rows = [(email, *fields, now) for email, *fields in leads.itertuples(name=None)]
    db = sqlite3.connect(os.path.join(task["store_dir"], "pandas.db"))
    try:
        db.execute(TABLE)
        before = db.execute("SELECT count(*) FROM leads").fetchone()[0]
        with db:
            db.executemany(UPSERT, rows)
        after = db.execute("SELECT count(*) FROM leads").fetchone()[0]
    finally:
        db.close()
    wall = time.perf_counter() - started
    return {
        "seconds": wall,
        "records": len(frame),
        "records_in": len(frame),
        "records_rejected": int(pc.sum(pc.is_valid(reasons)).as_py() or 0),
        "records_valid": len(valid),
        "upserted": len(rows),
        "inserted": after - before,
        "standardize_seconds": standardized - started,
        "upsert_seconds": wall - (standardized - started),
        "load_average": os.getloadavg(),
    }


WORKERS: dict[str, Worker] = {"job": worker_job, "core": worker_core, "pandas": worker_pandas}
