"""The small-files driver's measurements: the raw reads, the sampled run per file and the two
file-set runs, each the fastest of ``--repeats`` in a worker process of its own and each count
checked (``benchmarks.throughput``'s checks, and every per-file run's own), and what they
derive: rates, the speed-up of file sets, steps extrapolated to every file.
"""

from __future__ import annotations

import argparse
from typing import Any

from benchmarks.harness import Measurement, print_measurement, ratio
from benchmarks.small_files import KINDS
from benchmarks.small_files.folder import SmallFiles
from benchmarks.small_files.workers import MODULE
from benchmarks.throughput.measure import measure_best


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
        "module": MODULE,  # whose --worker knows the workers of both benchmarks
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
    out["file_set_vs_per_file"] = ratio(rate("file_set"), rate("per_file"))
    out["file_set_passthrough_vs_per_file"] = ratio(rate("file_set_passthrough"), rate("per_file"))
    out["file_set_vs_raw"] = ratio(rate("file_set"), rate("raw"))
    out["file_set_passthrough_vs_raw"] = ratio(rate("file_set_passthrough"), rate("raw"))
    out["per_file_vs_raw"] = ratio(rate("per_file"), rate("raw"))
    return out
