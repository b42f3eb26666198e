"""The small-files benchmark's own workers, each one measurement in its own process: a raw
Arrow read of every file, ``threads`` at a time, and ``batch_job`` run once per file on one
temporary instance. ``WORKERS`` adds them to ``benchmarks.throughput``'s (the file-set runs are
its ``job`` worker): ``python -m benchmarks.small_files --worker`` runs any of them.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from benchmarks.harness import Worker
from benchmarks.records import COLUMNS
from benchmarks.throughput.jobs import job_config, step_times
from benchmarks.throughput.measure import WORKERS as THROUGHPUT_WORKERS

MODULE = "benchmarks.small_files"


def worker_raw_files(task: dict[str, Any]) -> dict[str, Any]:
    """``read_csv`` of every file, all columns as text, ``threads`` files at a time."""
    import pyarrow as pa
    import pyarrow.csv as pacsv

    paths = task["paths"]
    convert = pacsv.ConvertOptions(
        column_types=dict.fromkeys(COLUMNS, pa.string()),
        strings_can_be_null=False,
        quoted_strings_can_be_null=False,
    )
    read = pacsv.ReadOptions(use_threads=False)  # the files are small: threads across files

    def one(path: str) -> tuple[int, int]:
        table = pacsv.read_csv(path, read_options=read, convert_options=convert)
        return table.num_rows, table.num_columns

    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=max(1, task["threads"])) as pool:
        shapes = list(pool.map(one, paths))
    seconds = time.perf_counter() - started
    return {
        "seconds": seconds,
        "records": sum(rows for rows, _ in shapes),
        "files": len(shapes),
        "columns": sorted({columns for _, columns in shapes}),
    }


def worker_per_file(task: dict[str, Any]) -> dict[str, Any]:
    """``batch_job`` once per file (``validate``), one after another on one temporary instance
    and ledger; each run a new batch. The first run is the warm-up when there are more."""
    directory = tempfile.mkdtemp(prefix="small-files-job-", dir=task.get("tmp_dir"))
    os.environ["BATCH_PIPELINE_LEDGER_URL"] = f"sqlite:///{os.path.join(directory, 'ledger.db')}"
    os.environ.pop("DAGSTER_HOME", None)
    try:
        from dagster import DagsterInstance, execute_job, reconstructable

        from batch_pipeline.definitions import get_batch_job

        runs: list[dict[str, Any]] = []
        home = os.path.join(directory, "instance")
        os.makedirs(home)
        overrides = {"telemetry": {"enabled": False}}
        with DagsterInstance.local_temp(home, overrides=overrides) as instance:
            for i, path in enumerate(task["paths"]):
                config = job_config(task, path, os.path.join(directory, f"out{i}"))
                config["ops"]["initialize"]["config"]["batch_id"] = f"bench-file-{i}"
                started = time.perf_counter()
                with execute_job(
                    reconstructable(get_batch_job),
                    instance=instance,
                    run_config=config,
                    raise_on_error=False,
                ) as result:
                    wall = time.perf_counter() - started
                    batch = result.output_for_node("aggregate") if result.success else None
                    steps = step_times(instance, result.run_id)
                    runs.append(
                        {
                            "success": result.success,
                            "wall_seconds": wall,
                            "records_in": batch.records_in if batch else None,
                            "records_out": batch.records_out if batch else None,
                            "records_rejected": batch.records_rejected if batch else None,
                            "chunks": batch.chunks if batch else None,
                            "steps": steps["steps"],
                        }
                    )
        timed = runs[1:] if len(runs) > 1 else runs
        return {
            "seconds": sum(r["wall_seconds"] for r in timed),
            "records": sum(r["records_in"] or 0 for r in timed),
            "timed_runs": len(timed),
            "runs": len(runs),
            "runs_succeeded": sum(bool(r["success"]) for r in runs),
            "first_wall_seconds": runs[0]["wall_seconds"] if runs else None,
            "walls": [round(r["wall_seconds"], 3) for r in runs],
            "records_in": sum(r["records_in"] or 0 for r in runs),
            "records_out": sum(r["records_out"] or 0 for r in runs),
            "records_rejected": sum(r["records_rejected"] or 0 for r in runs),
            "rejected_per_run": [r["records_rejected"] for r in runs],
            "chunks": sum(r["chunks"] or 0 for r in runs),
            "steps": sum(r["steps"] for r in runs),
        }
    finally:
        shutil.rmtree(directory, ignore_errors=True)


WORKERS: dict[str, Worker] = THROUGHPUT_WORKERS | {
    "raw_files": worker_raw_files,
    "per_file": worker_per_file,
}
