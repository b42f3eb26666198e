"""The small-files benchmark's command line: its options, the folder generated (or taken from
the cache), each kind measured, the table printed and the JSON report written. With
``--worker`` it runs one measurement instead.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import asdict
from datetime import UTC, datetime
from typing import Any

import benchmarks.small_files
from benchmarks.harness import (
    add_common_args,
    apply_common_args,
    machine_info,
    serve_worker,
    warm,
    write_report,
)
from benchmarks.records import DEFAULT_SEED
from benchmarks.small_files import DEFAULTS, KINDS, SMOKE
from benchmarks.small_files.folder import ensure_small_files
from benchmarks.small_files.measure import derive, measure
from benchmarks.small_files.report import print_table
from benchmarks.small_files.workers import WORKERS

TIMEOUT = 1800.0


def main(argv: list[str] | None = None) -> int:
    description = benchmarks.small_files.__doc__.split("\n\n")[0]
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.small_files", description=description
    )
    parser.add_argument("--files", type=int, default=None, help="files (default 2,000)")
    parser.add_argument(
        "--records-per-file", type=int, default=None, help="records per file (default 500)"
    )
    parser.add_argument(
        "--per-file", type=int, default=None, help="files run one by one (default 40)"
    )
    parser.add_argument("--smoke", action="store_true", help="100 files x 100 records, 5 runs")
    parser.add_argument("--chunk-records", type=int, default=None, help="default: the planner's")
    parser.add_argument("--raw-threads", type=int, default=8, help="files read at a time by raw")
    add_common_args(parser, KINDS, seed=DEFAULT_SEED, timeout=TIMEOUT, name="small_files")
    args = parser.parse_args(argv)

    if args.worker:
        return serve_worker(WORKERS, args.worker)

    sizes = SMOKE if args.smoke else DEFAULTS
    args.files = args.files or sizes["files"]
    args.records_per_file = args.records_per_file or sizes["records_per_file"]
    args.per_file = min(args.per_file or sizes["per_file"], args.files)
    if min(args.files, args.records_per_file, args.per_file, args.raw_threads) < 1:
        parser.error("files, records per file, --per-file and --raw-threads must be at least 1")
    apply_common_args(parser, args, KINDS, TIMEOUT)

    started = time.perf_counter()
    made = ensure_small_files(args.files, args.records_per_file, args.seed, args.data_dir)
    how = "cached" if made.seconds is None else f"generated in {made.seconds:.1f}s"
    machine = machine_info()
    print(
        f"small_files: {made.files:,} files x {made.records_per_file:,} records "
        f"({made.records:,} records, {made.invalid:,} invalid, {made.bytes / 1e6:,.1f} MB), "
        f"{how}: {made.folder}; {machine['cpus']} CPUs; measuring {', '.join(args.kinds)}",
        flush=True,
    )
    warm(made.paths())
    measurements = measure(args, made)

    failures = [
        f"{kind}: {m.status}: {'; '.join(m.errors)[:300]}"
        for kind, m in measurements.items()
        if m.status != "ok"
    ]
    report: dict[str, Any] = {
        "benchmark": "small_files",
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine,
        "settings": {
            "files": made.files,
            "records_per_file": made.records_per_file,
            "per_file_sample": args.per_file,
            "smoke": args.smoke,
            "seed": args.seed,
            "chunk_records": args.chunk_records or "planner default",
            "raw_threads": args.raw_threads,
            "repeats": args.repeats,
            "executor": "in_process",
            "delivery": "none",
            "instance": "DagsterInstance.local_temp (SQLite), fresh per measurement",
            "timing": "ours: wall around execute_job in a fresh worker process (per_file: "
            "each run's wall, the first run left out when there are more, extrapolated to "
            "every file); raw: around the reads; peak RSS: max(worker VmHWM, polled tree)",
        },
        "input": {k: v for k, v in asdict(made).items() if k != "invalid_per_file"}
        | {"generated_seconds": made.seconds},
        "measurements": {k: asdict(m) for k, m in measurements.items()},
        "derived": derive(measurements, made),
        "failures": failures,
        "ok": not failures,
        "total_seconds": time.perf_counter() - started,
    }

    print_table(report)
    return write_report(report, args.json)
