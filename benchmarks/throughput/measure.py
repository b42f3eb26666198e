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
from benchmarks.throughput import OURS, PEERS, PLAN_CHUNKS
from benchmarks.throughput.competitors import worker_naive, worker_pandas, worker_raw
from benchmarks.throughput.jobs import worker_cli, worker_job, worker_plan
from benchmarks.throughput.peers import worker_duckdb, worker_polars

MODULE = "benchmarks.throughput"
WORKERS: dict[str, Worker] = {
    "raw": worker_raw,
    "raw_text": worker_raw,
    "naive": worker_naive,
    "pandas": worker_pandas,
    "duckdb": worker_duckdb,
    "polars": worker_polars,
    "job": worker_job,
    "cli": worker_cli,
    "plan": worker_plan,
}
#: A peer stopped at the memory limit or timed out is reported, not a failure.
PEER_STOPS = ("stopped (memory)", "timeout")


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
    if m.kind in ("naive", "pandas", *PEERS):
        valid, rejected = d.get("valid"), d.get("rejected")
        if valid is None or rejected is None or valid + rejected != expected_records:
            problems.append(f"valid {valid} + rejected {rejected} != {expected_records}")
        if expected_invalid is not None and rejected != expected_invalid:
            problems.append(f"rejected {rejected}, expected {expected_invalid}")
    if m.kind in (*OURS, "small_job", "small_cli"):
        want = 0 if m.kind.endswith("passthrough") else expected_invalid
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
        elif kind in PEERS:
            task |= {
                "worker": kind,
                "timeout": args.peer_timeout,
                "memory_limit": args.peer_memory_limit,
            }
        elif kind.startswith("cli_"):
            task |= cli_task(args, kind.removeprefix("cli_"))
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


def cli_task(args: argparse.Namespace, processor: str) -> dict[str, Any]:
    """What ``worker_cli`` needs to run ``batch-pipeline run`` with ``processor``."""
    from benchmarks.records import SCHEMA

    return {
        "worker": "cli",
        "processor": processor,
        "schema": SCHEMA,
        "chunk_records": args.chunk_records,
        "executor": args.executor,
        "max_concurrent": args.max_concurrent,
    }


def measure_best(
    task: dict[str, Any], args: argparse.Namespace, expected: int, invalid: int | None
) -> Measurement:
    """Run ``task`` ``--repeats`` times; the fastest correct run, with every run's seconds and
    the highest peak memory of all."""
    runs = []
    for _ in range(max(1, args.repeats)):
        # The worker's module: this one, or another benchmark whose --worker runs more workers.
        timeout = task.get("timeout") or args.timeout
        module = task.get("module") or MODULE
        _, m = run_task(task, timeout, module, task.get("memory_limit"))
        m.sampled = task.get("limit") is not None
        if task["worker"] == "cli" and m.status == "ok" and m.data.get("cli_peak_rss_bytes"):
            # The CLI's process tree, not the worker that launched it and read the ledger.
            m.peak_rss_bytes = m.data["cli_peak_rss_bytes"]
        check(m, expected, invalid)
        runs.append(m)
        if m.status != "ok":
            return m
    best = min(runs, key=lambda r: r.seconds or math.inf)
    best.data["repeat_seconds"] = [r.seconds for r in runs]
    best.peak_rss_bytes = max(r.peak_rss_bytes or 0 for r in runs) or None
    return best


def peer_figures(m: Measurement | None) -> dict[str, Any] | None:
    """A peer's rate and peak memory; for one stopped at the memory limit or timed out, bounds:
    its rate was at most records / seconds until it stopped (it had not finished), its peak at
    least the memory it had then."""
    if m is None:
        return None
    if m.status == "ok":
        return {"rate": m.rate, "peak_rss_bytes": m.peak_rss_bytes, "stopped": None}
    if m.status in PEER_STOPS and m.data.get("stopped_seconds"):
        return {
            "rate": m.records / m.data["stopped_seconds"],
            "peak_rss_bytes": m.data.get("stopped_rss_bytes") or m.polled_peak_rss_bytes,
            "stopped": f"{m.status} at {m.data['stopped_seconds']:.1f} s",
        }
    return None


def derive(ms: dict[str, Measurement], concurrent: bool = False) -> dict[str, Any]:
    def rate(kind: str) -> float | None:
        m = ms.get(kind)
        return m.rate if m is not None and m.status == "ok" else None

    def ok(kind: str) -> Measurement | None:
        m = ms.get(kind)
        return m if m is not None and m.status == "ok" else None

    out: dict[str, Any] = {}
    for kind in OURS:
        for other in ("raw", "raw_text", "naive"):
            out[f"{kind}_vs_{other}"] = ratio(rate(kind), rate(other))
    pandas, validate = ok("pandas"), ok("validate")
    if pandas and validate:
        out["validate_time_vs_pandas"] = ratio(validate.seconds, pandas.seconds)
        out["validate_memory_vs_pandas"] = ratio(validate.peak_rss_bytes, pandas.peak_rss_bytes)
    peers = {k: f for k in PEERS if (f := peer_figures(ms.get(k))) is not None}
    # Ours against the faster peer's rate and each peer's peak memory: the CLI run, cold, if
    # measured, else the in-process one.
    ours = next((k for k in ("cli_validate", "validate") if ok(k)), None)
    if peers and ours:
        mine = ms[ours]
        # A peer that did not finish has no rate, only a bound (records / seconds until it was
        # stopped, as if it had been about to finish): the faster peer is the faster of those
        # that finished, the bound only when none did.
        finished = [k for k in peers if not peers[k]["stopped"]] or list(peers)
        fastest = max(finished, key=lambda k: peers[k]["rate"] or 0.0)
        least = min(peers.values(), key=lambda f: f["peak_rss_bytes"] or math.inf)
        out["vs_peers"] = {
            "ours": ours,
            "peers_measured": sorted(peers),
            "peers_missing": [k for k in PEERS if k not in peers and k in ms],
            "fastest_peer": fastest,
            "fastest_peer_rate": peers[fastest]["rate"],
            "rate_ratio": ratio(mine.rate, peers[fastest]["rate"]),
            "memory_ratio": ratio(mine.peak_rss_bytes, least["peak_rss_bytes"]),
            "memory_ratio_vs_fastest": ratio(mine.peak_rss_bytes, peers[fastest]["peak_rss_bytes"]),
            "stopped": {k: f["stopped"] for k, f in peers.items() if f["stopped"]},
        }
    for kind in OURS:
        m = ok(kind)
        if m is None:
            continue
        d = m.data
        wall, chunks = d["wall_seconds"], d["chunk_seconds_sum"]
        inside = d.get("seconds_in_steps", {})
        steps = d.get("steps")  # not known for the CLI (its event log is not kept)
        # Chunks one after another (in-process): what is not chunk work is orchestration (for
        # the CLI: the process's start-up and imports too). With concurrent steps the
        # difference means nothing: not computed.
        sequential = wall and not concurrent
        out[kind] = {
            "orchestration_share": (wall - chunks) / wall if sequential else None,
            "orchestration_per_step_seconds": (wall - chunks) / steps
            if sequential and steps
            else None,
            "plan_step_seconds": inside.get("plan_chunks"),
            "outside_steps_seconds": wall - sum(inside.values()) if sequential and inside else None,
            "chunk_step_overhead_seconds": inside["process_chunk"] - chunks
            if "process_chunk" in inside
            else None,
            "step_peak_rss_bytes": d["chunk_peak_rss_max_bytes"],
            "run_peak_rss_bytes": m.peak_rss_bytes,
            "steps": steps,
            "chunks": d["chunks"],
            "chunk_records": d.get("chunk_records"),
            "chunk_records_max": d.get("chunk_records_max"),
        }
    return out
