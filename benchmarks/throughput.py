"""Records per second of ``batch_job`` against the practical limit, a naive loop and pandas.

For each size (``--sizes``, default ``10k,1m,10m``) a deterministic CSV is generated (or taken
from the cache, see ``records.py``) and measured, each measurement in its own Python process
(its own session and process group, killed with it after ``--timeout``):

- ``raw``: ``pyarrow.csv.read_csv`` of the whole file, all columns as they come (types
  inferred, all threads): the practical limit of reading the file; ``raw_text``: the same with
  every column read as text, which is what our reader does with each chunk. Above
  ``--raw-max`` records (20M: a 60M table would take ~18 GB) both read the file's first
  ``--raw-max`` records, held in memory, and their rate is reported as ``sampled``;
- ``naive``: the Lambda handler's way: ``csv.reader``, a dict per record and the checks that
  ``validate`` makes (strip, required, int/float/ISO timestamp parsing, min, pattern, length),
  one record at a time on one core. It writes nothing (a generous baseline). Above
  ``--naive-max`` records (2M) it runs on the first ``--naive-max`` records and its rate is
  reported as ``sampled``;
- ``pandas``: a plain whole-file pandas script doing the same processing: ``read_csv`` (text),
  vectorized checks, reasons, split valid/rejected, both written to Parquet. Skipped above
  ``--pandas-max`` (10M) records (``skipped (memory)``);
- ``passthrough`` and ``validate``: ``batch_job`` end to end through Dagster:
  ``execute_job(reconstructable(get_batch_job))`` on a fresh temporary SQLite instance, the
  default (in-process) executor and the planner's default chunking (``--chunk-records`` to
  change it), delivery ``none``, a temporary SQLite ledger. Per-chunk seconds and peak RSS come
  from the ledger; wall time is around ``execute_job``.

Peak memory of a measurement is the larger of the worker's own high-water mark (``VmHWM``) and
the resident memory of its process tree polled (psutil, every 50 ms) by this driver. Per step
(ours): the highest chunk peak RSS from the ledger (the step's process, Dagster included).

Derived per size: rates, ours/naive and ours/raw, ours vs pandas (time and peak memory), the
orchestration share ``(wall - sum of chunk seconds) / wall`` (chunks run one after another
in-process; planning's scan of the file counts as orchestration here, and the table shows it
apart) and per step ``(wall - sum of chunk seconds) / steps``. Two more cases: a 500-record
file through the whole job (cold, in a fresh process, and again warm), and
``core.planning.plan_batch`` cutting a file into 10,000 chunks.

``--repeats N`` runs each measurement N times and keeps the fastest (the machine is shared).

Correctness: every measurement must see every record; ours must count valid + rejected =
records and rejected = the generator's invalid records (passthrough: 0 rejected); the naive
loop and pandas must find the same invalid records. Otherwise the script exits 1. Goals that are
missed are reported, not failures.

Run it from the repository root::

    .venv/bin/python benchmarks/throughput.py --smoke        # 10k only, ~15 s
    .venv/bin/python benchmarks/throughput.py                # 10k, 1m, 10m: ~3 minutes
    .venv/bin/python benchmarks/throughput.py --sizes 60m    # the 60M goal (~6 GB of input)

It prints a markdown table and the goals, and writes ``benchmarks/results/throughput.json``
(``--json PATH`` elsewhere). Generated inputs stay cached in ``data/bench/`` (``--data-dir``).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.metadata
import json
import math
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the benchmarks' own modules
from processes import end_group

HERE = Path(__file__).resolve().parent
RESULTS_DIR = HERE / "results"
STDERR_TAIL = 3000
GIB = 1 << 30
SMALL_JOB_RECORDS = 500
PLAN_CHUNKS = 10_000
KINDS = ("raw", "raw_text", "naive", "pandas", "passthrough", "validate")
LABELS = {
    "raw": "raw Arrow read",
    "raw_text": "raw read as text",
    "naive": "naive loop",
    "pandas": "pandas",
    "passthrough": "ours passthrough",
    "validate": "ours validate",
}

GOALS = {
    "validate_60m_seconds": "validate 60M records end to end <= 120 s",
    "passthrough_vs_raw": "passthrough >= 0.5x the raw Arrow read rate",
    "validate_vs_naive": "validate >= 4x the naive loop's rate",
    "validate_vs_pandas": "at 10M: validate at least as fast as pandas, <= 1/3 of its peak memory",
    "orchestration_share": "orchestration <= 10% of wall",
    "step_peak_memory": "peak memory <= 1 GiB per step",
    "small_job_seconds": "a 500-record file through the whole job < 2 s",
    "plan_10k_chunks_seconds": "planning 10,000 chunks < 1 s",
}


# --- workers: one measurement each, in its own process ------------------------------------------


def _self_peak_rss() -> dict[str, int]:
    """This process's peak resident memory: ``VmHWM`` (the high-water mark of this program's
    memory, from its exec on), and the largest waited-for child's ``ru_maxrss``. Not
    ``RUSAGE_SELF``: Linux carries the parent's maxrss over fork and exec, so a worker started by
    a big driver would report the driver's peak."""
    import resource

    peak = 0
    with contextlib.suppress(OSError), open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                peak = int(line.split()[1]) * 1024
    if not peak:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return {
        "self_maxrss_bytes": peak,
        "children_maxrss_bytes": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024,
    }


def _prefix(path: str, records: int) -> bytes:
    """The header and the first ``records`` lines of a generated file (no quoted line breaks)."""
    import numpy as np

    chunks, lines = [], -1  # the header is not a record
    with open(path, "rb") as f:
        while block := f.read(64 << 20):
            breaks = np.flatnonzero(np.frombuffer(block, dtype=np.uint8) == 10)
            if lines + breaks.size >= records:
                chunks.append(block[: int(breaks[records - lines - 1]) + 1])
                break
            chunks.append(block)
            lines += int(breaks.size)
    return b"".join(chunks)


def worker_raw(task: dict[str, Any]) -> dict[str, Any]:
    """``read_csv`` of the whole file: types inferred (``raw``), or every column as text, as
    our reader reads a chunk (``raw_text``). With ``limit``: of the file's first ``limit``
    records, read into memory first (untimed), so that a huge file's table fits."""
    import io

    import pyarrow as pa
    import pyarrow.csv as pacsv

    convert = pacsv.ConvertOptions()
    if task["kind"] == "raw_text":
        with open(task["path"], encoding="utf-8") as f:
            names = f.readline().strip().replace('"', "").split(",")
        convert = pacsv.ConvertOptions(
            column_types=dict.fromkeys(names, pa.string()),
            strings_can_be_null=False,
            quoted_strings_can_be_null=False,
        )
    source: Any = task["path"]
    if task.get("limit") is not None:
        source = io.BytesIO(_prefix(task["path"], task["limit"]))
    started = time.perf_counter()
    table = pacsv.read_csv(source, convert_options=convert)
    seconds = time.perf_counter() - started
    return {
        "seconds": seconds,
        "records": table.num_rows,
        "columns": table.num_columns,
        "sampled": task.get("limit") is not None,
    }


def _naive_rules() -> list[tuple[str, dict[str, Any]]]:
    from records import SCHEMA

    return list(SCHEMA["columns"].items())


def worker_naive(task: dict[str, Any]) -> dict[str, Any]:
    """The Lambda handler's loop: a dict per record, every rule of the schema checked in Python.
    Same rules and reasons as ``validate``; nothing is written."""
    import csv
    import itertools
    import re
    from collections import Counter
    from datetime import datetime

    int_re = re.compile(r"^[+-]?[0-9]+$")
    float_re = re.compile(r"^[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?$")
    rules = []
    for name, rule in _naive_rules():
        pattern = re.compile(rule["pattern"]) if rule.get("pattern") else None
        kind, required = rule.get("type", "string"), rule.get("required", False)
        low, high, max_length = rule.get("min"), rule.get("max"), rule.get("max_length")
        rules.append((name, kind, required, low, high, pattern, max_length))

    limit = task.get("limit")
    valid = rejected = 0
    reasons: Counter[str] = Counter()
    started = time.perf_counter()
    with open(task["path"], newline="", encoding="utf-8") as f:
        reader = csv.reader(f)
        header = next(reader)
        for row in itertools.islice(reader, limit):
            record = dict(zip(header, row, strict=False))
            typed: dict[str, Any] = {}
            problems: list[str] = []
            for name, kind, required, low, high, pattern, max_length in rules:
                value = record.get(name)
                text = value.strip() if value is not None else ""
                if not text:
                    if required:
                        problems.append(f"{name}: required value missing")
                    typed[name] = None
                    continue
                converted: Any = value
                if kind == "int64":
                    converted = int(text) if int_re.match(text) else None
                elif kind == "float64":
                    converted = float(text) if float_re.match(text) else None
                elif kind == "timestamp":
                    try:
                        converted = datetime.fromisoformat(text)
                    except ValueError:
                        converted = None
                if converted is None:
                    problems.append(f"{name}: not a valid {kind}")
                    continue
                if low is not None and converted < low:
                    problems.append(f"{name}: below minimum {low}")
                if high is not None and converted > high:
                    problems.append(f"{name}: above maximum {high}")
                shown = value if kind == "string" else text
                if pattern is not None and not pattern.search(shown):
                    problems.append(f"{name}: does not match pattern {pattern.pattern}")
                if max_length is not None and len(shown) > max_length:
                    problems.append(f"{name}: longer than {max_length} characters")
                typed[name] = converted
            if problems:
                rejected += 1
                reasons["; ".join(problems)] += 1
            else:
                valid += 1
    seconds = time.perf_counter() - started
    return {
        "seconds": seconds,
        "records": valid + rejected,
        "valid": valid,
        "rejected": rejected,
        "sampled": limit is not None,
        "rejection_reasons": dict(reasons.most_common(20)),
    }


def worker_pandas(task: dict[str, Any]) -> dict[str, Any]:
    """A plain whole-file pandas script: read, vectorized checks, split, write Parquet."""
    import numpy as np
    import pandas as pd

    rules = _naive_rules()
    out = tempfile.mkdtemp(prefix="throughput-pandas-", dir=task.get("tmp_dir"))
    phases: dict[str, float] = {}
    try:
        started = time.perf_counter()
        df = pd.read_csv(task["path"], dtype=str, keep_default_na=False, na_filter=False)
        phases["read"] = time.perf_counter() - started
        n = len(df)
        checks: list[tuple[np.ndarray, str]] = []
        typed: dict[str, Any] = {}
        for name, rule in rules:
            kind = rule.get("type", "string")
            raw = df[name]
            text = raw.str.strip()
            present = (text != "").to_numpy(dtype=bool)
            if kind == "int64":
                whole = text.str.fullmatch(r"[+-]?[0-9]+").to_numpy(dtype=bool)
                values = pd.to_numeric(text.where(whole), errors="coerce").astype("Int64")
            elif kind == "float64":
                values = pd.to_numeric(text.where(present), errors="coerce")
            elif kind == "timestamp":
                values = pd.to_datetime(text, format="ISO8601", utc=True, errors="coerce")
            else:
                values = raw
            converted = values.notna().to_numpy(dtype=bool)
            if rule.get("required"):
                checks.append((~present, f"{name}: required value missing"))
            bad = present & ~converted
            checks.append((bad, f"{name}: not a valid {kind}"))
            ok = present & converted
            if rule.get("min") is not None:
                below = (values < rule["min"]).fillna(False).to_numpy(dtype=bool)
                checks.append((below & ok, f"{name}: below minimum {rule['min']}"))
            shown = raw if kind == "string" else text
            if rule.get("pattern"):
                match = shown.str.contains(rule["pattern"], regex=True).to_numpy(dtype=bool)
                checks.append((~match & ok, f"{name}: does not match pattern {rule['pattern']}"))
            if rule.get("max_length") is not None:
                long = (shown.str.len() > rule["max_length"]).to_numpy(dtype=bool)
                checks.append((long & ok, f"{name}: longer than {rule['max_length']} characters"))
            typed[name] = values
        reject = np.zeros(n, dtype=bool)
        for mask, _ in checks:
            reject |= mask
        rows = np.flatnonzero(reject)
        reason = pd.Series([""] * rows.size, dtype=object)
        for mask, text in checks:
            hit = mask[rows]
            if hit.any():
                sep = np.where(reason.to_numpy() == "", "", "; ")
                reason = reason.where(~hit, reason + sep + text)
        valid = pd.DataFrame({name: col[~reject] for name, col in typed.items()})
        rejected = df.iloc[rows].assign(_reason=reason.to_numpy(), _record=rows)
        phases["checks"] = time.perf_counter() - started - phases["read"]
        valid.to_parquet(os.path.join(out, "valid.parquet"), index=False)
        rejected.to_parquet(os.path.join(out, "rejected.parquet"), index=False)
        seconds = time.perf_counter() - started
        phases["write"] = seconds - phases["read"] - phases["checks"]
        reasons = rejected["_reason"].value_counts().head(20)
        return {
            "seconds": seconds,
            "records": n,
            "valid": len(valid),
            "rejected": len(rejected),
            "phases": phases,
            "rejection_reasons": {str(k): int(v) for k, v in reasons.items()},
        }
    finally:
        shutil.rmtree(out, ignore_errors=True)


def _job_config(task: dict[str, Any], source: str, output: str) -> dict[str, Any]:
    from records import SCHEMA

    config: dict[str, Any] = {
        "source": source,
        "processor": task["processor"],
        "output": output,
        "delivery": {"target": "none"},
    }
    if task["processor"] == "validate":
        config["processor_options"] = SCHEMA
    if task.get("chunk_records"):
        config["chunking"] = {"chunk_records": task["chunk_records"]}
    execution: dict[str, Any] = {"in_process": {}}
    if task.get("executor") == "multiprocess":
        execution = {"multiprocess": {"max_concurrent": task.get("max_concurrent")}}
    return {
        "ops": {"initialize": {"config": config}},
        "execution": {"config": execution},
        "loggers": {"console": {"config": {"log_level": "WARNING"}}},
    }


def _step_times(instance: Any, run_id: str) -> dict[str, Any]:
    """Seconds inside steps, by kind, from the event log (step start to success/failure)."""
    from dagster import DagsterEventType

    starts: dict[str, float] = {}
    inside: dict[str, float] = {}
    ends = {DagsterEventType.STEP_SUCCESS, DagsterEventType.STEP_FAILURE}
    for entry in instance.all_logs(run_id):
        event = entry.dagster_event
        if event is None or not event.step_key:
            continue
        if event.event_type == DagsterEventType.STEP_START:
            starts[event.step_key] = entry.timestamp
        elif event.event_type in ends and event.step_key in starts:
            kind = event.step_key.split("[", 1)[0]
            inside[kind] = inside.get(kind, 0.0) + entry.timestamp - starts[event.step_key]
    return {"steps": len(starts), "seconds_in_steps": inside}


def worker_job(task: dict[str, Any]) -> dict[str, Any]:
    """``batch_job`` on a fresh temporary SQLite instance and ledger, ``task["repeats"]`` times
    (each a new batch id); the first run's figures, plus the wall time of each run."""
    directory = tempfile.mkdtemp(prefix="throughput-job-", dir=task.get("tmp_dir"))
    os.environ["BATCH_PIPELINE_LEDGER_URL"] = f"sqlite:///{os.path.join(directory, 'ledger.db')}"
    os.environ.pop("DAGSTER_HOME", None)
    profiler = None
    try:
        from dagster import DagsterInstance, execute_job, reconstructable

        from batch_pipeline.core.ledger import open_ledger
        from batch_pipeline.definitions import get_batch_job
        from batch_pipeline.settings import default_ledger_url

        if task.get("profile"):
            import cProfile

            profiler = cProfile.Profile()
        runs: list[dict[str, Any]] = []
        overrides = {"telemetry": {"enabled": False}}
        home = os.path.join(directory, "instance")
        os.makedirs(home)
        with DagsterInstance.local_temp(home, overrides=overrides) as instance:
            for repeat in range(task.get("repeats", 1)):
                config = _job_config(task, task["path"], os.path.join(directory, f"out{repeat}"))
                config["ops"]["initialize"]["config"]["batch_id"] = f"bench-{repeat}"
                if profiler is not None and repeat == 0:
                    profiler.enable()
                started = time.perf_counter()
                with execute_job(
                    reconstructable(get_batch_job),
                    instance=instance,
                    run_config=config,
                    raise_on_error=False,
                ) as result:
                    wall = time.perf_counter() - started
                    if profiler is not None and repeat == 0:
                        profiler.disable()
                    errors = []
                    for event in result.all_events:
                        if event.is_step_failure:
                            error = event.step_failure_data.error
                            errors.append(f"{event.step_key}: {error.to_string() if error else ''}")
                    batch = result.output_for_node("aggregate") if result.success else None
                    run_id = result.run_id
                    success = result.success
                states = open_ledger(default_ledger_url()).chunk_states(f"bench-{repeat}")
                chunk_seconds = [s.seconds or 0.0 for s in states]
                chunk_peaks = [s.peak_rss_bytes or 0 for s in states]
                steps = _step_times(instance, run_id)
                runs.append(
                    {
                        "success": success,
                        "wall_seconds": wall,
                        "records_in": batch.records_in if batch else None,
                        "records_out": batch.records_out if batch else None,
                        "records_rejected": batch.records_rejected if batch else None,
                        "chunks": len(states),
                        "chunks_succeeded": sum(s.status == "succeeded" for s in states),
                        "chunk_records": batch.chunk_records if batch else None,
                        "chunk_records_max": max((s.records_in or 0 for s in states), default=0),
                        "chunk_seconds_sum": sum(chunk_seconds),
                        "chunk_seconds_max": max(chunk_seconds, default=0.0),
                        "chunk_seconds": [round(x, 3) for x in chunk_seconds],
                        "chunk_peak_rss_max_bytes": max(chunk_peaks, default=0),
                        "steps": steps["steps"],
                        "seconds_in_steps": steps["seconds_in_steps"],
                        "rejection_reasons": dict(list(batch.rejection_reasons.items())[:20])
                        if batch
                        else {},
                        "errors": errors[:5],
                    }
                )
        first = dict(runs[0])
        first["records"] = first["records_in"]
        first["seconds"] = first["wall_seconds"]
        first["repeat_walls"] = [r["wall_seconds"] for r in runs]
        if profiler is not None:
            first["profile"] = _write_profile(profiler, task["profile"])
        return first
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def _write_profile(profiler: Any, path: str) -> dict[str, str]:
    import io
    import pstats

    Path(path).parent.mkdir(parents=True, exist_ok=True)
    profiler.dump_stats(path)
    text = io.StringIO()
    stats = pstats.Stats(profiler, stream=text)
    stats.sort_stats("tottime").print_stats(30)
    stats.sort_stats("cumulative").print_stats(40)
    Path(path + ".txt").write_text(text.getvalue())
    return {"pstats": path, "text": path + ".txt"}


def worker_plan(task: dict[str, Any]) -> dict[str, Any]:
    """``plan_batch`` cutting the file into ``PLAN_CHUNKS`` chunks (and, apart, writing
    plan.json and registering the plan in a ledger, as ``plan_chunks`` does)."""
    directory = tempfile.mkdtemp(prefix="throughput-plan-", dir=task.get("tmp_dir"))
    try:
        from batch_pipeline.core.common.models import ChunkingSettings
        from batch_pipeline.core.initialize.prepare import prepare_batch
        from batch_pipeline.core.ledger import open_ledger
        from batch_pipeline.core.planning.plan import plan_batch, write_plan
        from batch_pipeline.core.stores.storage import Storage

        storage = Storage()
        chunk_records = max(1, math.ceil(task["records"] / PLAN_CHUNKS))
        settings = ChunkingSettings(chunk_records=chunk_records, max_chunks=PLAN_CHUNKS)
        started = time.perf_counter()
        spec = prepare_batch(
            storage, task["path"], chunking=settings, output=os.path.join(directory, "out")
        )
        prepare = time.perf_counter() - started
        started = time.perf_counter()
        plan = plan_batch(storage, spec)
        seconds = time.perf_counter() - started
        started = time.perf_counter()
        write_plan(storage, spec, plan)
        write = time.perf_counter() - started
        ledger = open_ledger(f"sqlite:///{os.path.join(directory, 'ledger.db')}")
        started = time.perf_counter()
        ledger.register_batch(spec, plan)
        register = time.perf_counter() - started
        ledger.dispose()
        return {
            "seconds": seconds,
            "records": plan.total_records,
            "chunks": len(plan.chunks),
            "chunk_records": chunk_records,
            "prepare_seconds": prepare,
            "write_plan_seconds": write,
            "register_seconds": register,
        }
    finally:
        shutil.rmtree(directory, ignore_errors=True)


WORKERS = {
    "raw": worker_raw,
    "raw_text": worker_raw,
    "naive": worker_naive,
    "pandas": worker_pandas,
    "job": worker_job,
    "plan": worker_plan,
}


def run_worker(task: dict[str, Any]) -> dict[str, Any]:
    try:
        data = WORKERS[task["worker"]](task)
        data["ok"] = True
    except Exception as exc:  # reported to the driver, which fails the benchmark
        import traceback

        data = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
        traceback.print_exc()
    return data | _self_peak_rss()


# --- the driver ----------------------------------------------------------------------------------


@dataclass
class Measurement:
    kind: str  # raw, naive, pandas, passthrough, validate, small_job, plan
    size: str
    records: int  # records in the input file
    status: str = "ok"  # ok, failed, timeout, skipped (memory)
    seconds: float | None = None
    records_measured: int | None = None
    rate: float | None = None  # records/s
    sampled: bool = False
    peak_rss_bytes: int | None = None
    polled_peak_rss_bytes: int | None = None
    process_seconds: float | None = None
    data: dict[str, Any] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    stderr_tail: str | None = None


class TreePoller(threading.Thread):
    """Polls the resident memory of a process and its descendants; ``peak`` is the highest sum."""

    def __init__(self, pid: int, interval: float = 0.05) -> None:
        super().__init__(daemon=True)
        self.pid = pid
        self.interval = interval
        self.peak = 0
        self.stop = threading.Event()

    def run(self) -> None:
        import psutil

        try:
            root = psutil.Process(self.pid)
        except psutil.Error:
            return
        while not self.stop.is_set():
            total = 0
            try:
                procs = [root, *root.children(recursive=True)]
            except psutil.Error:
                break
            for proc in procs:
                with contextlib.suppress(psutil.Error):
                    total += proc.memory_info().rss
            self.peak = max(self.peak, total)
            self.stop.wait(self.interval)


def run_task(task: dict[str, Any], timeout: float) -> tuple[dict[str, Any], Measurement]:
    """Run one worker in a fresh process, in a temporary folder of its own that is removed
    afterwards whatever happened (a killed worker cannot clean up); return its JSON and the
    measurement."""
    work = tempfile.mkdtemp(prefix="throughput-", dir=task.get("tmp_dir"))
    try:
        return _run_task(task | {"tmp_dir": work}, timeout)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _run_task(task: dict[str, Any], timeout: float) -> tuple[dict[str, Any], Measurement]:
    # The worker script: this one, or another benchmark whose --worker runs more workers.
    script = task.get("script") or str(Path(__file__).resolve())
    command = [sys.executable, script, "--worker", json.dumps(task)]
    started = time.perf_counter()
    proc = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
        cwd=str(HERE.parent),
    )
    poller = TreePoller(proc.pid)
    poller.start()
    timed_out = False
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        timed_out = True
        os.killpg(proc.pid, signal.SIGKILL)
        stdout, stderr = proc.communicate()
    except BaseException:  # Ctrl-C, or SIGTERM (see main): the worker goes with us
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise
    finally:
        poller.stop.set()
        poller.join()
    elapsed = time.perf_counter() - started
    leftover = end_group(proc.pid)
    lines = [line for line in stdout.splitlines() if line.startswith("{")]
    data: dict[str, Any] = json.loads(lines[-1]) if lines and not timed_out else {}
    m = Measurement(kind=task["kind"], size=task["size"], records=task["records"])
    m.process_seconds = elapsed
    m.polled_peak_rss_bytes = poller.peak or None
    if timed_out:
        m.status = "timeout"
        m.errors.append(f"timed out after {timeout:.0f}s; process group killed")
    elif not data:
        m.status = "failed"
        m.errors.append(f"the worker exited with code {proc.returncode} and no result")
    elif not data.get("ok"):
        m.status = "failed"
        m.errors.append(data.get("error", "failed"))
    if leftover:
        m.errors.append(f"{leftover} process(es) outlived the worker and were ended")
    if m.status != "ok" or proc.returncode:
        m.stderr_tail = stderr[-STDERR_TAIL:] or None
    peaks = [data.get("self_maxrss_bytes") or 0, poller.peak]
    m.peak_rss_bytes = max(peaks) or None
    m.data = data
    m.seconds = data.get("seconds")
    m.records_measured = data.get("records")
    if m.seconds and m.records_measured:
        m.rate = m.records_measured / m.seconds
    return data, m


def check(m: Measurement, expected_records: int, expected_invalid: int | None) -> None:
    """Append what is wrong with ``m``'s counts to ``m.errors`` (and mark it failed).

    ``expected_records``: records the measurement must see (the sample, for a sampled naive
    loop); ``expected_invalid``: how many of them are invalid (None: not known)."""
    if m.status != "ok":
        return
    d = m.data
    problems = []
    if d.get("records") != expected_records:
        problems.append(f"saw {d.get('records')} records, expected {expected_records}")
    if m.kind in ("naive", "pandas"):
        valid, rejected = d.get("valid"), d.get("rejected")
        if valid is None or rejected is None or valid + rejected != expected_records:
            problems.append(f"valid {valid} + rejected {rejected} != {expected_records}")
        if expected_invalid is not None and rejected != expected_invalid:
            problems.append(f"rejected {rejected}, expected {expected_invalid}")
    if m.kind in ("passthrough", "validate", "small_job"):
        want = 0 if m.kind == "passthrough" else expected_invalid
        if not d.get("success"):
            problems.append("the run failed: " + "; ".join(d.get("errors") or ["?"])[:500])
        out, rej = d.get("records_out"), d.get("records_rejected")
        if out is None or rej is None or out + rej != expected_records:
            problems.append(f"records out {out} + rejected {rej} != {expected_records}")
        if want is not None and rej != want:
            problems.append(f"rejected {rej}, expected {want}")
        if not d.get("chunks") or d.get("chunks_succeeded") != d.get("chunks"):
            problems.append(f"{d.get('chunks_succeeded')} of {d.get('chunks')} chunks succeeded")
    if m.kind == "plan" and d.get("chunks") != PLAN_CHUNKS and expected_records >= PLAN_CHUNKS:
        problems.append(f"planned {d.get('chunks')} chunks, expected {PLAN_CHUNKS}")
    if problems:
        m.status = "failed"
        m.errors.extend(problems)


def _warm(path: str) -> None:
    """Read the file once so that every measurement starts with it in the page cache."""
    with open(path, "rb") as f:
        while f.read(16 << 20):
            pass


def measure_size(args: argparse.Namespace, records: int, label: str) -> dict[str, Any]:
    from records import ensure_records, invalid_in_first

    made = ensure_records(records, args.seed, args.data_dir)
    how = "cached" if made.seconds is None else f"generated in {made.seconds:.1f}s"
    print(
        f"\n== {label}: {made.records:,} records ({made.invalid:,} invalid), "
        f"{made.bytes / 1e6:,.0f} MB, {how}: {made.path}",
        flush=True,
    )
    _warm(made.path)
    base = {"path": made.path, "records": records, "size": label, "tmp_dir": args.tmp_dir}
    measurements: dict[str, Measurement] = {}
    for kind in args.kinds:
        task = base | {"kind": kind}
        if kind == "pandas" and records > args.pandas_max:
            m = Measurement(kind, label, records, status="skipped (memory)")
            measurements[kind] = m
            print_measurement(m)
            continue
        if kind in ("raw", "raw_text", "naive", "pandas"):
            task["worker"] = kind
        else:
            task |= {
                "worker": "job",
                "processor": kind,
                "chunk_records": args.chunk_records,
                "executor": args.executor,
                "max_concurrent": args.max_concurrent,
            }
            if args.profile:
                task["profile"] = str(Path(args.profile) / f"{label}-{kind}.pstats")
        limit = {"naive": args.naive_max, "raw": args.raw_max, "raw_text": args.raw_max}.get(kind)
        sampled = limit is not None and records > limit
        expected, invalid = records, made.invalid
        if sampled and limit is not None:
            task["limit"] = expected = limit
            invalid = invalid_in_first(limit, records, args.seed) if kind == "naive" else None
        m = measure_best(task, args, expected, invalid)
        m.sampled = sampled
        measurements[kind] = m
        print_measurement(m)
    return {
        "records": records,
        "invalid": made.invalid,
        "bytes": made.bytes,
        "path": made.path,
        "generated_seconds": made.seconds,
        "measurements": {k: asdict(m) for k, m in measurements.items()},
        "derived": derive(measurements, concurrent=args.executor == "multiprocess"),
    }


def measure_best(
    task: dict[str, Any], args: argparse.Namespace, expected: int, invalid: int | None
) -> Measurement:
    """Run ``task`` ``--repeats`` times; the fastest correct run, with every run's seconds and
    the highest peak memory of all."""
    runs = []
    for _ in range(max(1, args.repeats)):
        _, m = run_task(task, args.timeout)
        m.sampled = task.get("limit") is not None
        check(m, expected, invalid)
        runs.append(m)
        if m.status != "ok":
            return m
    best = min(runs, key=lambda r: r.seconds or math.inf)
    best.data["repeat_seconds"] = [r.seconds for r in runs]
    best.peak_rss_bytes = max(r.peak_rss_bytes or 0 for r in runs) or None
    return best


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def derive(ms: dict[str, Measurement], concurrent: bool = False) -> dict[str, Any]:
    def rate(kind: str) -> float | None:
        m = ms.get(kind)
        return m.rate if m is not None and m.status == "ok" else None

    def ok(kind: str) -> Measurement | None:
        m = ms.get(kind)
        return m if m is not None and m.status == "ok" else None

    out: dict[str, Any] = {
        "passthrough_vs_raw": _ratio(rate("passthrough"), rate("raw")),
        "passthrough_vs_raw_text": _ratio(rate("passthrough"), rate("raw_text")),
        "validate_vs_raw": _ratio(rate("validate"), rate("raw")),
        "validate_vs_raw_text": _ratio(rate("validate"), rate("raw_text")),
        "validate_vs_naive": _ratio(rate("validate"), rate("naive")),
        "passthrough_vs_naive": _ratio(rate("passthrough"), rate("naive")),
    }
    pandas, validate = ok("pandas"), ok("validate")
    if pandas and validate:
        out["validate_time_vs_pandas"] = _ratio(validate.seconds, pandas.seconds)
        out["validate_memory_vs_pandas"] = _ratio(validate.peak_rss_bytes, pandas.peak_rss_bytes)
    for kind in ("passthrough", "validate"):
        m = ok(kind)
        if m is None:
            continue
        d = m.data
        wall, chunks = d["wall_seconds"], d["chunk_seconds_sum"]
        inside = d.get("seconds_in_steps", {})
        # Chunks one after another (in-process): what is not chunk work is orchestration. With
        # concurrent steps the difference means nothing: not computed.
        sequential = wall and not concurrent
        out[kind] = {
            "orchestration_share": (wall - chunks) / wall if sequential else None,
            "orchestration_per_step_seconds": (wall - chunks) / d["steps"]
            if sequential and d["steps"]
            else None,
            "plan_step_seconds": inside.get("plan_chunks"),
            "outside_steps_seconds": wall - sum(inside.values()) if sequential else None,
            "chunk_step_overhead_seconds": inside.get("process_chunk", 0.0) - chunks,
            "step_peak_rss_bytes": d["chunk_peak_rss_max_bytes"],
            "run_peak_rss_bytes": m.peak_rss_bytes,
            "steps": d["steps"],
            "chunks": d["chunks"],
            "chunk_records": d.get("chunk_records"),
            "chunk_records_max": d.get("chunk_records_max"),
        }
    return out


# --- output --------------------------------------------------------------------------------------


def _fmt(value: float | None, digits: int = 2, suffix: str = "") -> str:
    return "-" if value is None else f"{value:,.{digits}f}{suffix}"


def _scaled(value: float | None, factor: float) -> float | None:
    return None if value is None else value * factor


def _mib(value: int | None) -> str:
    return "-" if not value else f"{value / 2**20:,.0f}"


def _rate(m: dict[str, Any] | Measurement | None) -> str:
    if m is None:
        return "-"
    m = m if isinstance(m, dict) else asdict(m)
    if m["status"] != "ok":
        return m["status"]
    text = f"{m['rate'] / 1e6:,.2f}M" if m["rate"] >= 1e5 else f"{m['rate'] / 1e3:,.1f}k"
    return text + (" (sampled)" if m["sampled"] else "")


def print_measurement(m: Measurement) -> None:
    measured = f"{m.records_measured:,}" if m.records_measured is not None else "-"
    print(
        f"  {m.kind:<11} {m.status:<16} {_fmt(m.seconds, 2, ' s'):>10} "
        f"{_rate(m):>18} rec/s  records {measured:>12}  peak {_mib(m.peak_rss_bytes):>6} MiB  "
        f"(process {_fmt(m.process_seconds, 1, ' s')})",
        flush=True,
    )
    for error in m.errors[:4]:
        lines = error.strip().splitlines()
        print(f"      error: {lines[0][:300] if lines else error}", flush=True)


def print_tables(report: dict[str, Any]) -> None:
    sizes = report["sizes"]
    print("\n### Records per second\n")
    print("| size | " + " | ".join(LABELS[k] for k in KINDS) + " |")
    print("|---|" + "---|" * len(KINDS))
    for label, entry in sizes.items():
        ms = entry["measurements"]
        cells = [_rate(ms.get(kind)) for kind in KINDS]
        print(f"| {label} | " + " | ".join(cells) + " |")

    print("\n### Seconds and peak memory (MiB) per measurement\n")
    print("| size | " + " | ".join(KINDS) + " |")
    print("|---|" + "---|" * len(KINDS))
    for label, entry in sizes.items():
        cells = []
        for kind in KINDS:
            m = entry["measurements"].get(kind)
            if m is None or m["status"] != "ok":
                cells.append(m["status"] if m else "-")
            else:
                cells.append(f"{m['seconds']:,.2f} s / {_mib(m['peak_rss_bytes'])}")
        print(f"| {label} | " + " | ".join(cells) + " |")

    print("\n### Ours\n")
    print(
        "| size | run | chunks x records | steps | wall s | sum chunk s | orchestration "
        "| per step ms | plan step s | between steps s | peak/step MiB | peak/run MiB "
        "| vs raw | vs raw text | vs naive | time vs pandas | memory vs pandas |"
    )
    print("|" + "---|" * 17)
    for label, entry in sizes.items():
        derived = entry["derived"]
        for kind in ("passthrough", "validate"):
            d = derived.get(kind)
            m = entry["measurements"].get(kind)
            if d is None or m is None:
                continue
            data = m["data"]
            vs_raw = derived.get(f"{kind}_vs_raw")
            vs_text = derived.get(f"{kind}_vs_raw_text")
            vs_naive = derived.get(f"{kind}_vs_naive")
            time_p = derived.get("validate_time_vs_pandas") if kind == "validate" else None
            mem_p = derived.get("validate_memory_vs_pandas") if kind == "validate" else None
            print(
                f"| {label} | {kind} | {d['chunks']} x {d['chunk_records_max'] or 0:,} "
                f"| {d['steps']} "
                f"| {data['wall_seconds']:,.2f} | {data['chunk_seconds_sum']:,.2f} "
                f"| {_fmt(_scaled(d['orchestration_share'], 100), 1, '%')} "
                f"| {_fmt(_scaled(d['orchestration_per_step_seconds'], 1000), 0)} "
                f"| {_fmt(d['plan_step_seconds'])} | {_fmt(d['outside_steps_seconds'])} "
                f"| {_mib(d['step_peak_rss_bytes'])} | {_mib(d['run_peak_rss_bytes'])} "
                f"| {_fmt(vs_raw, 2, 'x')} | {_fmt(vs_text, 2, 'x')} | {_fmt(vs_naive, 1, 'x')} "
                f"| {_fmt(time_p, 2, 'x')} | {_fmt(mem_p, 2, 'x')} |"
            )
    small, plan = report.get("small_job"), report.get("planning")
    if small:
        walls = small["data"].get("repeat_walls") or []
        print(
            f"\n{SMALL_JOB_RECORDS}-record file through batch_job (validate): "
            f"{small['status']}, wall {'/'.join(f'{w:.2f}' for w in walls) or '-'} s "
            "(first run cold in a fresh process, then warm), process "
            f"{small['process_seconds']:.1f} s with imports"
        )
    if plan:
        d = plan["data"]
        print(
            f"plan_batch into {d.get('chunks', '-'):,} chunks of {d.get('chunk_records', 0):,} "
            f"records ({plan['size']} file): {plan['status']}, {_fmt(plan['seconds'], 3)} s "
            f"(prepare_batch {_fmt(d.get('prepare_seconds'), 3)} s, write plan.json "
            f"{_fmt(d.get('write_plan_seconds'), 3)} s, ledger register "
            f"{_fmt(d.get('register_seconds'), 3)} s)"
        )


def evaluate_goals(report: dict[str, Any]) -> list[dict[str, Any]]:
    """Each goal with its value per size where it applies, and met / missed / not measured."""
    sizes = report["sizes"]
    goals: list[dict[str, Any]] = []

    def add(key: str, values: dict[str, Any], met: bool | None, note: str = "") -> None:
        goals.append({"goal": key, "text": GOALS[key], "values": values, "met": met, "note": note})

    def measured(label: str, kind: str) -> dict[str, Any] | None:
        m = sizes[label]["measurements"].get(kind)
        return m if m and m["status"] == "ok" else None

    big = [label for label, e in sizes.items() if e["records"] >= 60_000_000]
    if big:
        m = measured(big[-1], "validate")
        seconds = m["seconds"] if m else None
        add(
            "validate_60m_seconds",
            {big[-1]: seconds},
            None if seconds is None else seconds <= 120,
        )
    else:
        add("validate_60m_seconds", {}, None, "not measured (run --sizes 60m)")

    def ratio_goal(key: str, derived_key: str, target: float) -> None:
        values = {label: e["derived"].get(derived_key) for label, e in sizes.items()}
        present = {k: v for k, v in values.items() if v is not None}
        if not present:
            add(key, values, None, "not measured")
            return
        largest = list(present)[-1]
        add(key, values, present[largest] >= target, f"judged at {largest}")

    ratio_goal("passthrough_vs_raw", "passthrough_vs_raw", 0.5)
    ratio_goal("validate_vs_naive", "validate_vs_naive", 4.0)

    with_pandas = [
        label
        for label, e in sizes.items()
        if e["derived"].get("validate_time_vs_pandas") is not None
    ]
    at = "10m" if "10m" in with_pandas else (with_pandas[-1] if with_pandas else None)
    if at:
        d = sizes[at]["derived"]
        t, mem = d["validate_time_vs_pandas"], d["validate_memory_vs_pandas"]
        met = t <= 1.0 and mem is not None and mem <= 1 / 3
        add(
            "validate_vs_pandas",
            {at: {"time_ratio": t, "memory_ratio": mem}},
            met,
            "" if at == "10m" else f"10m not measured; judged at {at}",
        )
    else:
        add("validate_vs_pandas", {}, None, "not measured")

    def per_run_goal(key: str, field_name: str, target: float) -> None:
        values: dict[str, Any] = {}
        for label, e in sizes.items():
            for kind in ("passthrough", "validate"):
                d = e["derived"].get(kind)
                if d and d.get(field_name) is not None:
                    values[f"{label} {kind}"] = d[field_name]
        if not values:
            add(key, values, None, "not measured")
            return
        largest = list(sizes)[-1]
        judged = {k: v for k, v in values.items() if k.startswith(f"{largest} ")}
        met = all(v <= target for v in judged.values()) if judged else None
        add(key, values, met, f"judged at {largest}")

    per_run_goal("orchestration_share", "orchestration_share", 0.10)
    per_run_goal("step_peak_memory", "step_peak_rss_bytes", GIB)

    small = report.get("small_job")
    if small and small["status"] == "ok":
        wall = small["data"]["wall_seconds"]
        add("small_job_seconds", {"cold": wall, "walls": small["data"]["repeat_walls"]}, wall < 2)
    else:
        add("small_job_seconds", {}, None, "not measured" if not small else small["status"])

    plan = report.get("planning")
    if plan and plan["status"] == "ok":
        add(
            "plan_10k_chunks_seconds",
            {plan["size"]: plan["seconds"], "chunks": plan["data"]["chunks"]},
            plan["seconds"] < 1.0 and plan["data"]["chunks"] == PLAN_CHUNKS,
        )
    else:
        add("plan_10k_chunks_seconds", {}, None, "not measured" if not plan else plan["status"])
    return goals


def _goal_value(value: Any) -> str:
    if isinstance(value, dict):
        return ", ".join(f"{k} {_goal_value(v)}" for k, v in value.items())
    if isinstance(value, list):
        return "/".join(_goal_value(v) for v in value)
    if isinstance(value, float):
        return f"{value:,.3f}"
    return str(value)


def print_goals(goals: list[dict[str, Any]]) -> None:
    print("\n### Goals\n")
    print("| goal | result | values |")
    print("|---|---|---|")
    for g in goals:
        verdict = {True: "met", False: "MISSED", None: ""}[g["met"]]
        note = g["note"] if g["met"] is None else (f" ({g['note']})" if g["note"] else "")
        values = dict(g["values"])
        if g["goal"] == "step_peak_memory":
            values = {k: f"{v / 2**20:,.0f} MiB" for k, v in values.items()}
        elif g["goal"] == "orchestration_share":
            values = {k: f"{100 * v:.1f}%" for k, v in values.items()}
        print(f"| {g['text']} | {verdict}{note} | {_goal_value(values) or '-'} |")


def machine_info() -> dict[str, Any]:
    versions = {}
    for name in ("dagster", "pyarrow", "pandas", "polars", "numpy"):
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        **versions,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="10k,1m,10m", help="comma-separated: 10k,1m,10m,60m")
    parser.add_argument("--smoke", action="store_true", help="10k only, fast")
    parser.add_argument("--naive-max", default="2m", help="naive loop on at most this many")
    parser.add_argument("--pandas-max", default="10m", help="pandas skipped above this size")
    parser.add_argument(
        "--raw-max", default="20m", help="raw reads on at most this many (a table of 60M ~18 GB)"
    )
    parser.add_argument("--chunk-records", type=int, default=None, help="default: the planner's")
    parser.add_argument(
        "--executor",
        default="in_process",
        choices=["in_process", "multiprocess"],
        help="our runs' executor (default in_process; multiprocess: forkserver)",
    )
    parser.add_argument("--max-concurrent", type=int, default=None, help="with multiprocess")
    parser.add_argument(
        "--only", help="measure only these kinds (comma-separated, of " + ",".join(KINDS) + ")"
    )
    parser.add_argument(
        "--no-extras", action="store_true", help="skip the 500-record and plan cases"
    )
    parser.add_argument("--repeats", type=int, default=1, help="runs of each; the fastest counts")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--data-dir", default=None, help="generated inputs (default data/bench)")
    parser.add_argument("--tmp-dir", default=None, help="where runs write their outputs")
    parser.add_argument("--timeout", type=float, default=None, help="s per measurement (3600)")
    parser.add_argument("--profile", help="cProfile our runs into this folder (.pstats + .txt)")
    parser.add_argument("--json", type=Path, default=RESULTS_DIR / "throughput.json")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    sys.path.insert(0, str(HERE))  # records.py, also when imported as a module
    if args.worker:
        print(json.dumps(run_worker(json.loads(args.worker)), default=str), flush=True)
        return 0

    from records import parse_size, size_label

    try:
        sizes = [parse_size(s) for s in ("10k" if args.smoke else args.sizes).split(",")]
        args.naive_max, args.pandas_max = parse_size(args.naive_max), parse_size(args.pandas_max)
        args.raw_max = parse_size(args.raw_max)
    except ValueError as exc:
        parser.error(str(exc))
    if any(s < 1 for s in sizes):
        parser.error("sizes must be at least 1 record")
    args.kinds = [k.strip() for k in args.only.split(",")] if args.only else list(KINDS)
    if set(args.kinds) - set(KINDS):
        parser.error(f"--only takes {', '.join(KINDS)}")
    if args.timeout is None:
        args.timeout = 120.0 if args.smoke else 3600.0
    if args.profile:
        args.profile = str(Path(args.profile).resolve())
    if args.tmp_dir:
        os.makedirs(args.tmp_dir, exist_ok=True)

    def terminate(signum: int, _: Any) -> None:
        raise SystemExit(128 + signum)  # run_task ends the running worker's process group

    signal.signal(signal.SIGTERM, terminate)

    started = time.perf_counter()
    report: dict[str, Any] = {
        "benchmark": "throughput",
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine_info(),
        "settings": {
            "sizes": [size_label(s) for s in sizes],
            "smoke": args.smoke,
            "naive_max": args.naive_max,
            "pandas_max": args.pandas_max,
            "raw_max": args.raw_max,
            "chunk_records": args.chunk_records or "planner default",
            "seed": args.seed,
            "executor": args.executor,
            "max_concurrent": args.max_concurrent,
            "delivery": "none",
            "instance": "DagsterInstance.local_temp (SQLite), fresh per measurement",
            "timing": "ours: wall around execute_job in a fresh worker process; others: "
            "around the work itself; peak RSS: max(worker VmHWM, polled process tree)",
        },
        "sizes": {},
    }
    print(
        f"throughput: sizes {', '.join(size_label(s) for s in sizes)} on "
        f"{report['machine']['cpus']} CPUs; measuring {', '.join(args.kinds)}",
        flush=True,
    )
    for records in sizes:
        label = size_label(records)
        report["sizes"][label] = measure_size(args, records, label)

    if not args.no_extras:
        from records import ensure_records

        print("\n== extras", flush=True)
        small = ensure_records(SMALL_JOB_RECORDS, args.seed, args.data_dir)
        task = {
            "worker": "job",
            "kind": "small_job",
            "size": size_label(SMALL_JOB_RECORDS),
            "records": SMALL_JOB_RECORDS,
            "path": small.path,
            "processor": "validate",
            "repeats": 2,
            "tmp_dir": args.tmp_dir,
        }
        m = measure_best(task, args, SMALL_JOB_RECORDS, small.invalid)
        print_measurement(m)
        report["small_job"] = asdict(m)

        plan_records = max([s for s in sizes if s <= 1_000_000] or [min(sizes)])
        plan_file = ensure_records(plan_records, args.seed, args.data_dir)
        task = {
            "worker": "plan",
            "kind": "plan",
            "size": size_label(plan_records),
            "records": plan_records,
            "path": plan_file.path,
            "tmp_dir": args.tmp_dir,
        }
        m = measure_best(task, args, plan_records, plan_file.invalid)
        print_measurement(m)
        report["planning"] = asdict(m)

    report["goals"] = evaluate_goals(report)
    failures = []
    for label, entry in report["sizes"].items():
        for kind, m in entry["measurements"].items():
            if m["status"] not in ("ok", "skipped (memory)"):
                failures.append(f"{label} {kind}: {m['status']}: {'; '.join(m['errors'])[:300]}")
    for extra in ("small_job", "planning"):
        m = report.get(extra)
        if m and m["status"] != "ok":
            failures.append(f"{extra}: {m['status']}: {'; '.join(m['errors'])[:300]}")
    report["failures"] = failures
    report["ok"] = not failures
    report["total_seconds"] = time.perf_counter() - started

    print_tables(report)
    print_goals(report["goals"])
    return write_report(report, args.json)


def write_report(report: dict[str, Any], path: Path) -> int:
    """Print the total, write the JSON report, list its failures: the exit code (1 if any)."""
    print(f"\ntotal {report['total_seconds']:.0f}s")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=1, default=str) + "\n")
    print(f"wrote {path}")
    failures = report.get("failures") or []
    if failures:
        print(f"{len(failures)} measurement(s) failed or miscounted:", file=sys.stderr)
        for failure in failures:
            print(f"  {failure}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
