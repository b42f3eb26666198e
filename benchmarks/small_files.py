"""Many small files: one ``batch_job`` run per file against one file-set run over the folder.

A folder of ``--files`` CSV files of ``--records-per-file`` records each (default 2,000 x 500 =
1M records; ``--smoke``: 100 x 100) is generated deterministically with ``records.py``'s
blocks (the files, concatenated, hold the same records as ``records-<N>-seed<S>.csv``), cached
in ``data/bench/small-<files>x<records>/`` with a JSON sidecar next to the folder, and measured,
each measurement in its own Python process (its own session and process group, killed with it
after ``--timeout``; ``throughput.py``'s driver and workers):

- ``raw``: ``pyarrow.csv.read_csv`` of every file, every column as text, ``--raw-threads``
  files at a time (as a file-set chunk reads its files): the practical limit;
- ``per_file``: ``batch_job`` with ``validate``, one run per file (what the nightly schedule
  cost before file sets: one run and one ``process_chunk`` step per object), for the first
  ``--per-file`` files, one after another on one temporary SQLite instance in one warm
  process. The first run (cold) is left out of the rate when there are more; the rate is
  reported as ``sampled`` and extrapolated to every file. A lower bound of the real cost: the
  daemon's run launcher starts a process per run (imports included), which is not counted;
- ``file_set``: one ``batch_job`` run with ``validate`` whose source is the folder (a file set,
  the planner's default chunking or ``--chunk-records``): wall time, records/s, Dagster steps,
  ``process_chunk`` steps and peak RSS (``throughput.worker_job``);
- ``file_set_passthrough``: the same with ``passthrough``.

Our runs: ``execute_job(reconstructable(get_batch_job))``, the in-process executor, delivery
``none``, a temporary SQLite instance and ledger per measurement. Peak memory: the larger of the
worker's ``VmHWM`` and its process tree polled every 50 ms.

Derived: records/s of each, ``file_set / per_file`` (the speed-up of file sets; from the
extrapolated per-file time), ``file_set / raw``, and steps. Correctness: every measurement must
see every record it reads; the file-set runs must count valid + rejected = records and reject
exactly the generator's invalid records (passthrough: none); the per-file runs must do the same
for their files. Otherwise the script exits 1.

Run it from the repository root::

    .venv/bin/python benchmarks/small_files.py --smoke     # 100 files x 100 records
    .venv/bin/python benchmarks/small_files.py             # 2,000 files x 500 records

It prints a markdown table and writes ``benchmarks/results/small_files.json`` (``--json PATH``
elsewhere).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the benchmarks' own modules
import throughput
from records import BLOCK_RECORDS, COLUMNS, DATA_DIR, DEFAULT_SEED, generate_block
from throughput import (
    RESULTS_DIR,
    Measurement,
    machine_info,
    measure_best,
    print_measurement,
    write_report,
)

GENERATOR_VERSION = 1
KINDS = ("raw", "per_file", "file_set", "file_set_passthrough")
LABELS = {
    "raw": "raw Arrow read (text)",
    "per_file": "per_file: a run per file",
    "file_set": "file_set: one run (validate)",
    "file_set_passthrough": "file_set: one run (passthrough)",
}
DEFAULTS = {"files": 2_000, "records_per_file": 500, "per_file": 40}
SMOKE = {"files": 100, "records_per_file": 100, "per_file": 5}


# --- the input: a folder of small CSV files -----------------------------------------------------


@dataclass
class SmallFiles:
    """A generated folder of small CSV files and what it holds."""

    folder: str
    files: int
    records_per_file: int
    records: int
    invalid: int
    invalid_per_file: list[int]
    seed: int
    bytes: int
    generator_version: int = GENERATOR_VERSION
    seconds: float | None = None  # how long generating took (None: taken from the cache)

    def paths(self) -> list[str]:
        return [os.path.join(self.folder, _name(i, self.files)) for i in range(self.files)]


def _name(index: int, files: int) -> str:
    return f"part-{index:0{max(5, len(str(files - 1)))}d}.csv"


def small_files_folder(
    files: int, records_per_file: int, data_dir: str | os.PathLike[str] | None = None
) -> Path:
    return Path(data_dir or DATA_DIR) / f"small-{files}x{records_per_file}"


def _meta_path(folder: Path) -> Path:
    """The sidecar sits next to the folder: inside, it would be a member of the file set."""
    return folder.with_name(folder.name + ".json")


def _folder_bytes(folder: Path) -> tuple[int, int]:
    entries = list(os.scandir(folder))
    return len(entries), sum(e.stat().st_size for e in entries)


def _read_meta(folder: Path, files: int, records_per_file: int, seed: int) -> SmallFiles | None:
    meta = _meta_path(folder)
    if not (meta.exists() and folder.is_dir()):
        return None
    try:
        found = SmallFiles(**json.loads(meta.read_text()))
    except (ValueError, TypeError):
        return None
    if (
        found.generator_version != GENERATOR_VERSION
        or (found.files, found.records_per_file, found.seed) != (files, records_per_file, seed)
        or _folder_bytes(folder) != (files, found.bytes)
    ):
        return None
    found.folder, found.seconds = str(folder), None
    return found


def write_small_files(folder: Path, files: int, records_per_file: int, seed: int) -> SmallFiles:
    """Write ``files`` CSV files of ``records_per_file`` records: ``records.py``'s blocks of
    ``seed`` (block ``k`` from ``default_rng([seed, k])``, ids from 1) cut into files in order.
    Written into a hidden folder renamed at the end, then the sidecar."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.csv as pacsv

    folder.parent.mkdir(parents=True, exist_ok=True)
    temp = folder.with_name(f".{folder.name}.{os.getpid()}.tmp")
    shutil.rmtree(temp, ignore_errors=True)
    temp.mkdir()
    started = time.perf_counter()
    total = files * records_per_file
    options = pacsv.WriteOptions(include_header=True, quoting_style="none")
    blocks: dict[int, tuple[pa.Table, np.ndarray]] = {}

    def block(k: int) -> tuple[pa.Table, np.ndarray]:
        if k not in blocks:
            for old in [b for b in blocks if b < k]:
                del blocks[old]
            first = k * BLOCK_RECORDS
            n = min(BLOCK_RECORDS, total - first)
            blocks[k] = generate_block(np.random.default_rng([seed, k]), first + 1, n)
        return blocks[k]

    invalid_per_file = []
    try:
        for i in range(files):
            start, end = i * records_per_file, (i + 1) * records_per_file
            tables, bad = [], 0
            for k in range(start // BLOCK_RECORDS, (end - 1) // BLOCK_RECORDS + 1):
                table, defect = block(k)
                a = max(start, k * BLOCK_RECORDS) - k * BLOCK_RECORDS
                b = min(end, (k + 1) * BLOCK_RECORDS) - k * BLOCK_RECORDS
                tables.append(table.slice(a, b - a))
                bad += int((defect[a:b] >= 0).sum())
            table = tables[0] if len(tables) == 1 else pa.concat_tables(tables)
            pacsv.write_csv(table.select(list(COLUMNS)), temp / _name(i, files), options)
            invalid_per_file.append(bad)
        shutil.rmtree(folder, ignore_errors=True)
        _meta_path(folder).unlink(missing_ok=True)
        os.replace(temp, folder)
    finally:
        shutil.rmtree(temp, ignore_errors=True)
    result = SmallFiles(
        folder=str(folder),
        files=files,
        records_per_file=records_per_file,
        records=total,
        invalid=sum(invalid_per_file),
        invalid_per_file=invalid_per_file,
        seed=seed,
        bytes=_folder_bytes(folder)[1],
        seconds=time.perf_counter() - started,
    )
    meta_temp = folder.with_name(f".{folder.name}.{os.getpid()}.json.tmp")
    meta_temp.write_text(json.dumps(asdict(result) | {"seconds": None}) + "\n")
    os.replace(meta_temp, _meta_path(folder))
    return result


def ensure_small_files(
    files: int,
    records_per_file: int,
    seed: int = DEFAULT_SEED,
    data_dir: str | os.PathLike[str] | None = None,
) -> SmallFiles:
    """The folder of ``files`` x ``records_per_file`` records of ``seed``: the cached one when
    it is there and complete, else written now."""
    folder = small_files_folder(files, records_per_file, data_dir)
    found = _read_meta(folder, files, records_per_file, seed)
    return found or write_small_files(folder, files, records_per_file, seed)


# --- workers: one measurement each, in its own process ------------------------------------------


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
                config = throughput._job_config(task, path, os.path.join(directory, f"out{i}"))
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
                    steps = throughput._step_times(instance, result.run_id)
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


WORKERS = {"raw_files": worker_raw_files, "per_file": worker_per_file}


def run_worker(task: dict[str, Any]) -> dict[str, Any]:
    """``throughput.run_worker`` (errors reported, peak memory) over its workers and these."""
    throughput.WORKERS.update(WORKERS)
    return throughput.run_worker(task)


# --- the driver ----------------------------------------------------------------------------------


def _warm(paths: list[str]) -> None:
    """Read every file once, so that each measurement starts with them in the page cache."""
    for path in paths:
        with open(path, "rb") as f:
            f.read()


def _check_per_file(m: Measurement, made: SmallFiles, sample: int) -> None:
    """Every run succeeded, saw its file's records and rejected exactly its invalid ones."""
    if m.status != "ok":
        return
    d, problems = m.data, []
    want_records = sample * made.records_per_file
    want_rejected = made.invalid_per_file[:sample]
    if d.get("runs_succeeded") != sample:
        problems.append(f"{d.get('runs_succeeded')} of {sample} runs succeeded")
    if d.get("records_in") != want_records:
        problems.append(f"saw {d.get('records_in')} records, expected {want_records}")
    if (d.get("records_out") or 0) + (d.get("records_rejected") or 0) != want_records:
        problems.append(f"out {d.get('records_out')} + rejected {d.get('records_rejected')}")
    if d.get("rejected_per_run") != want_rejected:
        problems.append(f"rejected {d.get('rejected_per_run')}, expected {want_rejected}")
    if problems:
        m.status = "failed"
        m.errors.extend(problems)


def measure(args: argparse.Namespace, made: SmallFiles) -> dict[str, Measurement]:
    paths = made.paths()
    base = {
        "size": f"{made.files}x{made.records_per_file}",
        "tmp_dir": args.tmp_dir,
        "script": str(Path(__file__).resolve()),  # whose --worker knows the workers above
    }
    job = {"worker": "job", "chunk_records": args.chunk_records, "repeats": 1}
    measurements: dict[str, Measurement] = {}
    for kind in args.kinds:
        if kind == "raw":
            task = base | {"worker": "raw_files", "kind": kind, "records": made.records}
            task |= {"paths": paths, "threads": args.raw_threads}
            m = measure_best(task, args, made.records, None)
        elif kind == "per_file":
            sample = paths[: args.per_file]
            timed = len(sample) - 1 if len(sample) > 1 else 1
            task = base | {"worker": "per_file", "kind": kind, "records": made.records}
            task |= {"paths": sample, "processor": "validate"}
            m = measure_best(task, args, timed * made.records_per_file, None)
            m.sampled = True
            _check_per_file(m, made, len(sample))
        else:
            processor = "validate" if kind == "file_set" else "passthrough"
            # throughput's check() knows a job's counts by the processor's name.
            task = base | job | {"kind": processor, "processor": processor}
            task |= {"path": made.folder, "records": made.records}
            m = measure_best(task, args, made.records, made.invalid)
            m.kind = kind
            d = m.data
            if m.status == "ok" and d.get("chunks", 0) >= made.files > 1:
                m.status = "failed"
                m.errors.append(f"{d.get('chunks')} chunks for {made.files} files")
        measurements[kind] = m
        print_measurement(m)
    return measurements


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def derive(ms: dict[str, Measurement], made: SmallFiles) -> dict[str, Any]:
    def ok(kind: str) -> Measurement | None:
        m = ms.get(kind)
        return m if m is not None and m.status == "ok" else None

    out: dict[str, Any] = {"rates": {k: m.rate for k in KINDS if (m := ok(k)) is not None}}
    per_file = ok("per_file")
    if per_file:
        d = per_file.data
        seconds_per_file = per_file.seconds / d["timed_runs"] if per_file.seconds else None
        out["per_file"] = {
            "sampled_files": d["runs"],
            "timed_files": d["timed_runs"],
            "seconds_per_file": seconds_per_file,
            "first_run_seconds": d["first_wall_seconds"],
            "extrapolated_seconds": seconds_per_file * made.files if seconds_per_file else None,
            "extrapolated_runs": made.files,
            # Each run's steps (initialize, plan_chunks, process_chunk, aggregate, deliver),
            # as the sampled runs had them, times every file.
            "steps_per_run": d["steps"] / d["runs"],
            "extrapolated_steps": round(d["steps"] / d["runs"] * made.files),
            "extrapolated_process_chunk_steps": round(d["chunks"] / d["runs"] * made.files),
        }
    for kind in ("file_set", "file_set_passthrough"):
        m = ok(kind)
        if m is None:
            continue
        d = m.data
        inside = d.get("seconds_in_steps", {})
        out[kind] = {
            "wall_seconds": d["wall_seconds"],
            "runs": 1,
            "steps": d["steps"],
            "process_chunk_steps": d["chunks"],
            "files_per_chunk": made.files / d["chunks"] if d["chunks"] else None,
            "chunk_records": d.get("chunk_records"),
            "chunk_records_max": d.get("chunk_records_max"),
            "chunk_seconds_sum": d["chunk_seconds_sum"],
            "plan_step_seconds": inside.get("plan_chunks"),
            "initialize_step_seconds": inside.get("initialize"),
            "step_peak_rss_bytes": d["chunk_peak_rss_max_bytes"],
            "run_peak_rss_bytes": m.peak_rss_bytes,
        }
    rate = out["rates"].get
    out["file_set_vs_per_file"] = _ratio(rate("file_set"), rate("per_file"))
    out["file_set_passthrough_vs_per_file"] = _ratio(rate("file_set_passthrough"), rate("per_file"))
    out["file_set_vs_raw"] = _ratio(rate("file_set"), rate("raw"))
    out["file_set_passthrough_vs_raw"] = _ratio(rate("file_set_passthrough"), rate("raw"))
    out["per_file_vs_raw"] = _ratio(rate("per_file"), rate("raw"))
    return out


# --- output --------------------------------------------------------------------------------------


def _fmt(value: float | None, digits: int = 2, suffix: str = "") -> str:
    return "-" if value is None else f"{value:,.{digits}f}{suffix}"


def _times(value: float | None) -> str:
    """A ratio: two decimals from 1 up, two significant digits below (0.00033x)."""
    if value is None:
        return "-"
    return f"{value:,.2f}x" if value >= 1 else f"{value:.2g}x"


def _count(value: int | None) -> str:
    return "-" if value is None else f"{value:,}"


def print_table(report: dict[str, Any]) -> None:
    made, derived = report["input"], report["derived"]
    ms = report["measurements"]
    print(
        f"\n### {made['files']:,} files x {made['records_per_file']:,} records "
        f"({made['records']:,} records, {made['invalid']:,} invalid, "
        f"{made['bytes'] / 1e6:,.1f} MB)\n"
    )
    print(
        "| measurement | runs | steps | process_chunk steps | wall s | records/s | peak MiB "
        "| file_set vs this | this vs raw |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    raw_rate = derived["rates"].get("raw")
    set_rate = derived["rates"].get("file_set")
    for kind in KINDS:
        m = ms.get(kind)
        if m is None:
            continue
        label = LABELS[kind]
        if m["status"] != "ok":
            print(f"| {label} | {m['status']} | | | | | | | |")
            continue
        runs = steps = chunk_steps = None
        wall = m["seconds"]
        rate = throughput._rate(m)
        if kind == "per_file":
            p = derived["per_file"]
            label += f" ({p['timed_files']} timed of {p['sampled_files']}, extrapolated)"
            runs, steps = p["extrapolated_runs"], p["extrapolated_steps"]
            chunk_steps, wall = p["extrapolated_process_chunk_steps"], p["extrapolated_seconds"]
        elif kind in derived:
            d = derived[kind]
            runs, steps, chunk_steps = d["runs"], d["steps"], d["process_chunk_steps"]
        print(
            f"| {label} | {_count(runs)} | {_count(steps)} | {_count(chunk_steps)} "
            f"| {_fmt(wall)} | {rate} | {throughput._mib(m['peak_rss_bytes'])} "
            f"| {_times(_ratio(set_rate, m['rate']))} | {_times(_ratio(m['rate'], raw_rate))} |"
        )
    p, s = derived.get("per_file"), derived.get("file_set")
    if p:
        print(
            f"\nper_file: {_fmt(p['seconds_per_file'], 3)} s per file warm (first run, cold: "
            f"{_fmt(p['first_run_seconds'], 2)} s), {made['files']:,} files -> "
            f"{_fmt(p['extrapolated_seconds'], 0)} s; not counted: a run process per run"
        )
    if s:
        print(
            f"file_set: {s['process_chunk_steps']} process_chunk step(s) of ~"
            f"{_fmt(s['files_per_chunk'], 0)} files, sum chunk {_fmt(s['chunk_seconds_sum'])} s, "
            f"plan step {_fmt(s['plan_step_seconds'])} s, peak/step "
            f"{throughput._mib(s['step_peak_rss_bytes'])} MiB, peak/run "
            f"{throughput._mib(s['run_peak_rss_bytes'])} MiB"
        )
    print(
        f"speed-up file_set / per_file: {_times(derived['file_set_vs_per_file'])}; "
        f"file_set / raw: {_times(derived['file_set_vs_raw'])}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
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
    parser.add_argument(
        "--only", help="measure only these kinds (comma-separated, of " + ",".join(KINDS) + ")"
    )
    parser.add_argument("--repeats", type=int, default=1, help="runs of each; the fastest counts")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
    parser.add_argument("--data-dir", default=None, help="generated inputs (default data/bench)")
    parser.add_argument("--tmp-dir", default=None, help="where runs write their outputs")
    parser.add_argument("--timeout", type=float, default=None, help="s per measurement (1800)")
    parser.add_argument("--json", type=Path, default=RESULTS_DIR / "small_files.json")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.worker:
        print(json.dumps(run_worker(json.loads(args.worker)), default=str), flush=True)
        return 0

    sizes = SMOKE if args.smoke else DEFAULTS
    args.files = args.files or sizes["files"]
    args.records_per_file = args.records_per_file or sizes["records_per_file"]
    args.per_file = min(args.per_file or sizes["per_file"], args.files)
    if min(args.files, args.records_per_file, args.per_file, args.raw_threads) < 1:
        parser.error("files, records per file, --per-file and --raw-threads must be at least 1")
    args.kinds = [k.strip() for k in args.only.split(",")] if args.only else list(KINDS)
    if set(args.kinds) - set(KINDS):
        parser.error(f"--only takes {', '.join(KINDS)}")
    if args.timeout is None:
        args.timeout = 120.0 if args.smoke else 1800.0
    if args.tmp_dir:
        os.makedirs(args.tmp_dir, exist_ok=True)

    def terminate(signum: int, _: Any) -> None:
        raise SystemExit(128 + signum)  # run_task ends the running worker's process group

    signal.signal(signal.SIGTERM, terminate)

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
    _warm(made.paths())
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


if __name__ == "__main__":
    sys.exit(main())
