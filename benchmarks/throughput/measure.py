"""The throughput driver's measurements: one size measured kind by kind (each the fastest of
``--repeats`` runs of a worker in its own process), every count checked against the generated
input, and what each size derives (ratios, the orchestration share, peak memory per step).
``WORKERS`` are the workers ``python -m benchmarks.throughput --worker`` runs.
"""

from __future__ import annotations

import argparse
import math
from dataclasses import asdict
from pathlib import Path
from typing import Any

from benchmarks.harness import Measurement, Worker, print_measurement, ratio, run_task, warm
from benchmarks.throughput import PLAN_CHUNKS
from benchmarks.throughput.competitors import worker_naive, worker_pandas, worker_raw
from benchmarks.throughput.jobs import worker_job, worker_plan

MODULE = "benchmarks.throughput"
WORKERS: dict[str, Worker] = {
    "raw": worker_raw,
    "raw_text": worker_raw,
    "naive": worker_naive,
    "pandas": worker_pandas,
    "job": worker_job,
    "plan": worker_plan,
}


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


def measure_size(args: argparse.Namespace, records: int, label: str) -> dict[str, Any]:
    from benchmarks.records import ensure_records, invalid_in_first

    made = ensure_records(records, args.seed, args.data_dir)
    how = "cached" if made.seconds is None else f"generated in {made.seconds:.1f}s"
    print(
        f"\n== {label}: {made.records:,} records ({made.invalid:,} invalid), "
        f"{made.bytes / 1e6:,.0f} MB, {how}: {made.path}",
        flush=True,
    )
    warm([made.path])
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
        # The worker's module: this one, or another benchmark whose --worker runs more workers.
        _, m = run_task(task, args.timeout, task.get("module") or MODULE)
        m.sampled = task.get("limit") is not None
        check(m, expected, invalid)
        runs.append(m)
        if m.status != "ok":
            return m
    best = min(runs, key=lambda r: r.seconds or math.inf)
    best.data["repeat_seconds"] = [r.seconds for r in runs]
    best.peak_rss_bytes = max(r.peak_rss_bytes or 0 for r in runs) or None
    return best


def derive(ms: dict[str, Measurement], concurrent: bool = False) -> dict[str, Any]:
    def rate(kind: str) -> float | None:
        m = ms.get(kind)
        return m.rate if m is not None and m.status == "ok" else None

    def ok(kind: str) -> Measurement | None:
        m = ms.get(kind)
        return m if m is not None and m.status == "ok" else None

    out: dict[str, Any] = {
        "passthrough_vs_raw": ratio(rate("passthrough"), rate("raw")),
        "passthrough_vs_raw_text": ratio(rate("passthrough"), rate("raw_text")),
        "validate_vs_raw": ratio(rate("validate"), rate("raw")),
        "validate_vs_raw_text": ratio(rate("validate"), rate("raw_text")),
        "validate_vs_naive": ratio(rate("validate"), rate("naive")),
        "passthrough_vs_naive": ratio(rate("passthrough"), rate("naive")),
    }
    pandas, validate = ok("pandas"), ok("validate")
    if pandas and validate:
        out["validate_time_vs_pandas"] = ratio(validate.seconds, pandas.seconds)
        out["validate_memory_vs_pandas"] = ratio(validate.peak_rss_bytes, pandas.peak_rss_bytes)
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
