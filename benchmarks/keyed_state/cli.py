"""The keyed benchmark's command line: its options, the core part store by store (each store's
server started before its measurement and ended after it), the job's input generated and the
job measured, every count checked, the tables printed and the JSON report written. With
``--worker`` it runs one measurement instead.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import benchmarks.keyed_state
from benchmarks.harness import (
    Measurement,
    add_common_args,
    apply_common_args,
    machine_info,
    print_measurement,
    run_task,
    serve_worker,
    warm,
    write_report,
)
from benchmarks.keyed_state import (
    CORE_OUTLIER_EVERY,
    CORE_REPEATS,
    JOB_CHUNKS,
    JOB_OUTLIER_EVERY,
    JOB_RECORDS,
    KALMAN,
    KINDS,
    MEASUREMENTS_PER_USER,
    SIZES,
    STORES,
    USERS,
)
from benchmarks.keyed_state.report import (
    core_rows,
    job_figures,
    print_core,
    print_job,
    print_targets,
    problems,
    targets,
)
from benchmarks.keyed_state.services import ServiceError, moto_server, postgres_database
from benchmarks.keyed_state.workers import MODULE, WORKERS
from benchmarks.records import DEFAULT_SEED, parse_size, size_label

TIMEOUT = 1800.0
SMOKE = {"only": "core", "stores": "sqlite", "sizes": "10", "users": "5", "core_repeats": 2}


def _counts(text: str, name: str, parser: argparse.ArgumentParser) -> list[int]:
    try:
        values = [parse_size(part) for part in text.split(",") if part.strip()]
    except ValueError as exc:
        parser.error(f"{name}: {exc}")
    if not values or min(values) < 1:
        parser.error(f"{name} takes counts of at least 1, comma-separated")
    return values


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    description = (benchmarks.keyed_state.__doc__ or "").split("\n\n")[0]
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.keyed_state", description=description
    )
    parser.add_argument("--stores", help="core: stores measured (" + ",".join(STORES) + ")")
    parser.add_argument("--sizes", help="core: measurements per batch (10,100,500)")
    parser.add_argument("--users", help="core: users per batch (5,20,50)")
    parser.add_argument(
        "--core-repeats",
        type=int,
        help=f"core: timed repetitions per combination, after one left out ({CORE_REPEATS})",
    )
    parser.add_argument(
        "--records", default=size_label(JOB_RECORDS), help="job: measurements (10m)"
    )
    parser.add_argument("--job-users", help="job: users (default records / 10)")
    parser.add_argument("--chunks", type=int, default=JOB_CHUNKS, help="job: chunks (20)")
    parser.add_argument("--smoke", action="store_true", help="core only: 10 over 5, SQLite, 2+1")
    add_common_args(parser, KINDS, seed=DEFAULT_SEED, timeout=TIMEOUT, name="keyed_state")
    args = parser.parse_args(argv)
    if args.worker:
        return args
    defaults: dict[str, Any] = {"stores": ",".join(STORES), "sizes": ",".join(map(str, SIZES))}
    defaults |= {"users": ",".join(map(str, USERS)), "core_repeats": CORE_REPEATS}
    for name, value in (defaults | SMOKE if args.smoke else defaults).items():
        if getattr(args, name) is None:  # what the command line gave wins
            setattr(args, name, value)
    args.stores = [s.strip() for s in args.stores.split(",") if s.strip()]
    if not args.stores or set(args.stores) - set(STORES):
        parser.error(f"--stores takes {', '.join(STORES)}")
    args.sizes, args.users = (
        _counts(args.sizes, "--sizes", parser),
        _counts(args.users, "--users", parser),
    )
    args.records = _counts(args.records, "--records", parser)[0]
    default_users = max(1, args.records // MEASUREMENTS_PER_USER)
    args.job_users = (
        _counts(args.job_users, "--job-users", parser)[0] if args.job_users else default_users
    )
    if args.job_users > args.records or min(args.core_repeats, args.chunks, args.repeats) < 1:
        parser.error("--job-users <= --records; --core-repeats, --chunks, --repeats >= 1")
    if not any(u <= n for n in args.sizes for u in args.users):
        parser.error("--sizes and --users give no batch: every count of users exceeds the sizes")
    apply_common_args(parser, args, KINDS, TIMEOUT)
    return args


@contextlib.contextmanager
def _service(store: str) -> Iterator[dict[str, Any]]:
    """What a store's worker needs from a server started for it: none for SQLite."""
    if store == "postgres":
        with postgres_database() as url:
            yield {"url": url}
    elif store == "dynamodb":
        with moto_server() as endpoint:
            yield {"endpoint": endpoint}
    else:
        yield {}


def _fail(m: Measurement, found: list[str]) -> None:
    if found and m.status == "ok":
        m.status = "failed"
    m.errors.extend(found)


def measure_core(args: argparse.Namespace) -> dict[str, Any]:
    combos = [(n, u) for n in args.sizes for u in args.users if u <= n]
    repeats = args.core_repeats + 1
    records = 2 * repeats * sum(n for n, _ in combos)
    print(f"\n== core: {len(combos)} combination(s) x 2 batches x {repeats} repetitions per store")
    out: dict[str, Any] = {}
    for store in args.stores:
        task = {"worker": "core", "kind": "core", "size": store, "records": records}
        task |= {"store": store, "combos": combos, "repeats": repeats, "seed": args.seed}
        task["tmp_dir"] = args.tmp_dir
        load = os.getloadavg()
        try:
            with _service(store) as server:
                _, m = run_task(task | server, args.timeout, MODULE)
        except ServiceError as exc:
            m = Measurement(kind="core", size=store, records=records, status="failed")
            m.errors.append(str(exc))
        if m.status == "ok":
            got = [(c["records"], c["users"]) for c in m.data["combos"]]
            if got != combos:
                _fail(m, [f"measured {got}, asked for {combos}"])
            for combo in m.data["combos"]:
                for batch, runs in combo["runs"].items():
                    if len(runs) != repeats:
                        _fail(m, [f"{len(runs)} of {repeats} repetitions"])
                    for run in runs:
                        where = f"{combo['records']}x{combo['users']} {batch}"
                        _fail(m, [f"{where}: {p}" for p in problems(run)])
        m.data["load_average_before"] = load
        print_measurement(m)
        out[store] = {
            "measurement": asdict(m),
            "rows": core_rows(m.data) if m.status == "ok" else [],
        }
    return out


def _faster(a: Measurement, b: Measurement) -> bool:
    if a.status != "ok":
        return False
    return b.status != "ok" or (a.seconds or math.inf) < (b.seconds or math.inf)


def measure_job(args: argparse.Namespace) -> dict[str, Any]:
    records, users = args.records, args.job_users
    folder = args.data_dir or tempfile.mkdtemp(prefix="bench-keyed-input-", dir=args.tmp_dir)
    entry: dict[str, Any] = {"records": records, "users": users, "chunks": args.chunks}
    try:
        from benchmarks.keyed_state.data import ensure_measurements, write_measurements

        if args.data_dir:
            made = ensure_measurements(
                folder, records, users, outlier_every=JOB_OUTLIER_EVERY, seed=args.seed
            )
        else:
            made = write_measurements(
                os.path.join(folder, "measurements.csv"), records, users,
                outlier_every=JOB_OUTLIER_EVERY, seed=args.seed,
            )  # fmt: skip
        how = "cached" if made.seconds is None else f"generated in {made.seconds:.1f}s"
        print(
            f"\n== job: {records:,} measurements over {users:,} users ({made.outliers:,} "
            f"outliers), {made.bytes / 1e6:,.0f} MB, {how}: {made.path}",
            flush=True,
        )
        entry |= {"outliers": made.outliers, "input_bytes": made.bytes}
        entry["generated_seconds"] = made.seconds
        warm([made.path])
        task = {"worker": "job", "kind": "job", "size": size_label(records), "records": records}
        task |= {"store": "sqlite", "path": made.path, "chunks": args.chunks}
        task["tmp_dir"] = args.tmp_dir
        best: Measurement | None = None
        for _ in range(args.repeats):
            load = os.getloadavg()
            _, m = run_task(task, args.timeout, MODULE)
            m.data["load_average_before"] = load
            if m.status == "ok":
                m.data |= {"expected_records": records, "expected_rejected": made.outliers}
                m.data |= {"expected_found": 0, "users": users}
                _fail(m, problems(m.data))
            print_measurement(m)
            if best is None or _faster(m, best):
                best = m
        assert best is not None
    finally:
        if not args.data_dir:
            shutil.rmtree(folder, ignore_errors=True)
    entry["measurement"] = asdict(best)
    entry["figures"] = job_figures(best.data) if best.status == "ok" else None
    return entry


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.worker:
        return serve_worker(WORKERS, args.worker)
    started = time.perf_counter()
    machine = machine_info(("pyarrow", "numpy", "sqlalchemy", "psycopg2-binary", "boto3", "moto"))
    load_start = os.getloadavg()
    print(
        f"keyed_state: {', '.join(args.kinds)}; {machine['cpus']} CPUs; load average "
        f"{' '.join(f'{x:.2f}' for x in load_start)}",
        flush=True,
    )
    core = measure_core(args) if "core" in args.kinds else {}
    job = measure_job(args) if "job" in args.kinds else None
    failures = [
        f"core {store}: {e['measurement']['status']}: {'; '.join(e['measurement']['errors'])[:500]}"
        for store, e in core.items()
        if e["measurement"]["status"] != "ok"
    ]
    if job and job["measurement"]["status"] != "ok":
        m = job["measurement"]
        failures.append(f"job: {m['status']}: {'; '.join(m['errors'])[:500]}")
    load_end = os.getloadavg()
    report: dict[str, Any] = {
        "benchmark": "keyed_state",
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine,
        "load_average": {"start": load_start, "end": load_end},
        "settings": {
            "kinds": args.kinds,
            "stores": args.stores,
            "sizes": args.sizes,
            "users": args.users,
            "core_repeats": args.core_repeats,
            "core_outlier_every": CORE_OUTLIER_EVERY,
            "records": args.records,
            "job_users": args.job_users,
            "chunks": args.chunks,
            "job_outlier_every": JOB_OUTLIER_EVERY,
            "repeats": args.repeats,
            "seed": args.seed,
            "smoke": args.smoke,
            "kalman": KALMAN,
            "ledger": "a SQLite file in the worker's temporary folder",
            "timing": "bucket step: run_bucket's own seconds as the ledger's bucket row has "
            "them; local run: wall around run_batch; core: the median of the repetitions after "
            "the first; job: the fastest of --repeats; peak RSS: max(worker VmHWM, polled tree)",
        },
        "core": core,
        "job": job,
        "failures": failures,
        "ok": not failures,
    }
    report["targets"] = targets(report)
    for store, entry in core.items():
        print_core(store, entry)
    if job:
        print_job(job)
    print_targets(report["targets"])
    print(f"\nload average: start {' '.join(f'{x:.2f}' for x in load_start)}, end "
          f"{' '.join(f'{x:.2f}' for x in load_end)}")  # fmt: skip
    report["total_seconds"] = time.perf_counter() - started
    return write_report(report, Path(args.json))
