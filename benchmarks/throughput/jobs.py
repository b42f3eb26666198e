"""Our job measured end to end, each a worker run in its own process: ``batch_job`` through
Dagster on a fresh temporary SQLite instance and ledger (figures from the run, the event log and
the ledger; optionally under cProfile), and ``plan_batch`` cutting a file into
``PLAN_CHUNKS`` chunks. ``small_files`` runs the same job over a folder.
"""

from __future__ import annotations

import math
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.throughput import PLAN_CHUNKS


def job_config(task: dict[str, Any], source: str, output: str) -> dict[str, Any]:
    from benchmarks.records import SCHEMA

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


def step_times(instance: Any, run_id: str) -> dict[str, Any]:
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
    ledger_url = f"sqlite:///{os.path.join(directory, 'ledger.db')}"
    os.environ["BATCH_PIPELINE_LEDGER_URL"] = ledger_url  # the job's steps read it
    os.environ.pop("DAGSTER_HOME", None)
    profiler = None
    try:
        from dagster import DagsterInstance, execute_job, reconstructable

        from batch_pipeline.core.ledger import SUCCEEDED, open_ledger
        from batch_pipeline.definitions import get_batch_job

        if task.get("profile"):
            import cProfile

            profiler = cProfile.Profile()
        runs: list[dict[str, Any]] = []
        overrides = {"telemetry": {"enabled": False}}
        home = os.path.join(directory, "instance")
        os.makedirs(home)
        with DagsterInstance.local_temp(home, overrides=overrides) as instance:
            for repeat in range(task.get("repeats", 1)):
                config = job_config(task, task["path"], os.path.join(directory, f"out{repeat}"))
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
                states = open_ledger(ledger_url).chunk_states(f"bench-{repeat}")
                chunk_seconds = [s.seconds or 0.0 for s in states]
                chunk_peaks = [s.peak_rss_bytes or 0 for s in states]
                steps = step_times(instance, run_id)
                runs.append(
                    {
                        "success": success,
                        "wall_seconds": wall,
                        "records_in": batch.records_in if batch else None,
                        "records_out": batch.records_out if batch else None,
                        "records_rejected": batch.records_rejected if batch else None,
                        "chunks": len(states),
                        "chunks_succeeded": sum(s.status == SUCCEEDED for s in states),
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
        from batch_pipeline.core.planning import plan_batch, write_plan
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


def cli_command(task: dict[str, Any], directory: str) -> list[str]:
    """``batch-pipeline run`` as a user types it (the console script beside this Python, or
    ``python -m batch_pipeline.cli`` without one): the processor's options from a JSON file,
    delivery none, results in ``directory``/out, a summary line in JSON."""
    import json
    import sys

    script = Path(sys.executable).with_name("batch-pipeline")
    command = [str(script)] if script.exists() else [sys.executable, "-m", "batch_pipeline.cli"]
    command += ["run", task["path"], "--processor", task["processor"]]
    if task["processor"] == "validate":
        schema = os.path.join(directory, "schema.json")
        Path(schema).write_text(json.dumps(task["schema"]))
        command += ["--processor-options", f"@{schema}"]
    command += ["--deliver", "none", "--output", os.path.join(directory, "out")]
    command += ["--batch-id", "bench", "--json", "--no-progress"]
    if task.get("chunk_records"):
        command += ["--chunk-records", str(task["chunk_records"])]
    if task.get("executor") == "multiprocess":
        command += ["--executor", "multiprocess"]
        if task.get("max_concurrent"):
            command += ["--max-concurrent", str(task["max_concurrent"])]
    return command


def worker_cli(task: dict[str, Any]) -> dict[str, Any]:
    """``batch-pipeline run`` in a child process, cold, as the user runs it: no DAGSTER_HOME
    (an in-memory instance for an in-process run), a temporary SQLite ledger through
    ``BATCH_PIPELINE_LEDGER_URL``, a temporary output folder. Wall time from spawn to exit; the
    peak memory of the child's process tree (polled, and its ``ru_maxrss``); records from the
    run's JSON summary; chunk seconds and peaks from the ledger, read after the run."""
    import json
    import resource
    import subprocess

    from benchmarks.harness import ROOT, TreePoller

    directory = tempfile.mkdtemp(prefix="throughput-cli-", dir=task.get("tmp_dir"))
    ledger_url = f"sqlite:///{os.path.join(directory, 'ledger.db')}"
    env = {k: v for k, v in os.environ.items() if k != "DAGSTER_HOME"}
    env["BATCH_PIPELINE_LEDGER_URL"] = ledger_url
    # This checkout's batch_pipeline, whichever one the environment installed.
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    try:
        command = cli_command(task, directory)
        started = time.perf_counter()
        proc = subprocess.Popen(
            command,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
            cwd=directory,
        )
        poller = TreePoller(proc.pid, interval=0.02)
        poller.start()
        stdout, stderr = proc.communicate()
        wall = time.perf_counter() - started
        poller.stop.set()
        poller.join()
        child_maxrss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
        lines = [line for line in stdout.splitlines() if line.startswith("{")]
        summary: dict[str, Any] = json.loads(lines[-1]) if lines else {}
        errors = [] if proc.returncode == 0 else [f"exit {proc.returncode}: {stderr[-1500:]}"]
        if summary.get("error"):
            errors.append(str(summary["error"]))

        from batch_pipeline.core.ledger import SUCCEEDED, open_ledger

        ledger = open_ledger(ledger_url)
        states = ledger.chunk_states("bench")
        ledger.dispose()
        chunk_seconds = [s.seconds or 0.0 for s in states]
        chunk_peaks = [s.peak_rss_bytes or 0 for s in states]
        return {
            "success": proc.returncode == 0 and summary.get("status") == "SUCCESS",
            "seconds": wall,
            "wall_seconds": wall,
            "cli_seconds": summary.get("seconds"),
            "records": summary.get("records_in"),
            "records_in": summary.get("records_in"),
            "records_out": summary.get("records_out"),
            "records_rejected": summary.get("records_rejected"),
            "chunks": len(states),
            "chunks_succeeded": sum(s.status == SUCCEEDED for s in states),
            "chunk_records_max": max((s.records_in or 0 for s in states), default=0),
            "chunk_seconds_sum": sum(chunk_seconds),
            "chunk_seconds_max": max(chunk_seconds, default=0.0),
            "chunk_seconds": [round(x, 3) for x in chunk_seconds],
            "chunk_peak_rss_max_bytes": max(chunk_peaks, default=0),
            "cli_peak_rss_bytes": max(poller.peak, child_maxrss),
            "cli_polled_peak_rss_bytes": poller.peak,
            "cli_maxrss_bytes": child_maxrss,
            "command": command,
            "rejection_reasons": dict(list(summary.get("rejection_reasons", {}).items())[:20]),
            "errors": errors[:5],
        }
    finally:
        shutil.rmtree(directory, ignore_errors=True)
