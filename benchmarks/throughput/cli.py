"""The throughput benchmark's command line: its options, every size measured, the three extras
(a 500-record file through the whole job and through ``batch-pipeline run``, planning 10,000
chunks), the goals judged, the tables printed and the JSON report written. With ``--worker`` it
runs one measurement instead.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import benchmarks.throughput
from benchmarks.harness import (
    add_common_args,
    apply_common_args,
    machine_info,
    print_measurement,
    serve_worker,
    write_report,
)
from benchmarks.throughput import KINDS, PEERS, SMALL_JOB_RECORDS
from benchmarks.throughput.measure import PEER_STOPS, WORKERS, cli_task, measure_best, measure_size
from benchmarks.throughput.report import evaluate_goals, print_goals, print_tables

TIMEOUT = 3600.0
PEER_TIMEOUT = 900.0
UNITS = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30}


def parse_bytes(text: str) -> int:
    """``16g``, ``512m``, ``1000000``: bytes (k, m, g: binary)."""
    text = text.strip().lower().removesuffix("ib").removesuffix("b")
    factor = UNITS.get(text[-1:], 1)
    number = float(text[:-1] if text[-1:] in UNITS else text)
    if number <= 0:
        raise ValueError(f"not a positive size: {text}")
    return int(number * factor)


def main(argv: list[str] | None = None) -> int:
    description = benchmarks.throughput.__doc__.split("\n\n")[0]
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.throughput", description=description
    )
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
        "--no-extras", action="store_true", help="skip the 500-record and plan cases"
    )
    parser.add_argument("--profile", help="cProfile our runs into this folder (.pstats + .txt)")
    parser.add_argument(
        "--peer-memory-limit",
        default="16g",
        help="a peer (duckdb, polars) whose process tree's resident memory passes this is "
        "stopped and reported as such, not a failure (default 16g)",
    )
    parser.add_argument(
        "--peer-timeout",
        type=float,
        default=PEER_TIMEOUT,
        help=f"s per peer measurement; a peer timing out is reported, not a failure "
        f"({PEER_TIMEOUT:.0f})",
    )
    # seed: records.DEFAULT_SEED, not imported here: records imports numpy and pyarrow, which
    # would count in every worker's peak memory.
    add_common_args(parser, KINDS, seed=7, timeout=TIMEOUT, name="throughput")
    args = parser.parse_args(argv)

    if args.worker:
        return serve_worker(WORKERS, args.worker)

    from benchmarks.records import parse_size, size_label

    try:
        sizes = [parse_size(s) for s in ("10k" if args.smoke else args.sizes).split(",")]
        args.naive_max, args.pandas_max = parse_size(args.naive_max), parse_size(args.pandas_max)
        args.raw_max = parse_size(args.raw_max)
        args.peer_memory_limit = parse_bytes(args.peer_memory_limit)
    except ValueError as exc:
        parser.error(str(exc))
    if any(s < 1 for s in sizes):
        parser.error("sizes must be at least 1 record")
    if args.profile:
        args.profile = str(Path(args.profile).resolve())
    apply_common_args(parser, args, KINDS, TIMEOUT)

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
            "kinds": args.kinds,
            "peer_memory_limit_bytes": args.peer_memory_limit,
            "peer_timeout": args.peer_timeout,
            "chunk_records": args.chunk_records or "planner default",
            "seed": args.seed,
            "executor": args.executor,
            "max_concurrent": args.max_concurrent,
            "delivery": "none",
            "instance": "DagsterInstance.local_temp (SQLite), fresh per measurement",
            "timing": "ours: wall around execute_job in a fresh worker process; the CLI's: "
            "spawn to exit of batch-pipeline run; others: around the work itself; peak RSS: "
            "max(worker VmHWM, polled process tree), for the CLI its own process tree",
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
        measure_extras(args, sizes, report)

    report["goals"] = evaluate_goals(report)
    failures = find_failures(report)
    report["failures"] = failures
    report["ok"] = not failures
    report["total_seconds"] = time.perf_counter() - started

    print_tables(report)
    print_goals(report["goals"])
    return write_report(report, args.json)


def measure_extras(args: argparse.Namespace, sizes: list[int], report: dict[str, Any]) -> None:
    """A 500-record file through the whole job (cold, then warm) and through ``batch-pipeline
    run`` (a cold process, spawn to exit), and ``plan_batch`` into 10,000 chunks, as
    ``report["small_job"]``, ``report["small_cli"]`` and ``report["planning"]``."""
    from benchmarks.records import ensure_records, size_label

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

    task = {
        "kind": "small_cli",
        "size": size_label(SMALL_JOB_RECORDS),
        "records": SMALL_JOB_RECORDS,
        "path": small.path,
        "tmp_dir": args.tmp_dir,
    } | cli_task(args, "validate")
    m = measure_best(task, args, SMALL_JOB_RECORDS, small.invalid)
    print_measurement(m)
    report["small_cli"] = asdict(m)

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


def find_failures(report: dict[str, Any]) -> list[str]:
    """Each measurement that failed, timed out or miscounted (a skipped one is no failure, nor
    a peer stopped at its memory limit or timed out: the report says where it stopped)."""
    failures = []
    for label, entry in report["sizes"].items():
        for kind, m in entry["measurements"].items():
            if m["status"] in ("ok", "skipped (memory)"):
                continue
            if kind in PEERS and m["status"] in PEER_STOPS:
                continue
            failures.append(f"{label} {kind}: {m['status']}: {'; '.join(m['errors'])[:300]}")
    for extra in ("small_job", "small_cli", "planning"):
        m = report.get(extra)
        if m and m["status"] != "ok":
            failures.append(f"{extra}: {m['status']}: {'; '.join(m['errors'])[:300]}")
    return failures
