"""What one mapped ``process_chunk`` step costs under each local executor of ``batch_job``.

The real job (initialize -> plan_chunks -> process_chunk mapped -> aggregate -> deliver) runs on
one small generated input (20,000 leads, passthrough processor, delivery ``none``, console logs
at WARNING) with ``execute_job(reconstructable(get_batch_job), ...)`` on a fresh temporary
SQLite instance, under:

- ``in_process``: the project's default executor config;
- ``forkserver``: ``multiprocess`` with ``max_concurrent: 2``, i.e. forkserver with
  ``batch_pipeline.definitions`` preloaded (what ``batch_executor`` picks);
- ``spawn``: ``multiprocess`` with ``max_concurrent: 2`` and ``start_method: {spawn: {}}``;

each at a small and a large fan-out (10 and 200 chunks; ``--quick``: 10 and 50, no spawn). With
wall times W(n) for n chunks, the cost of one mapped step is (W(large) - W(small)) / (large -
small) and the fixed cost is the intercept W(small) - small x per-step.

The machine is shared and its speed drifts, so runs are interleaved: a pass of small fan-outs,
a pass of large fan-outs, then the small fan-outs again (their mean brackets the large pass),
with the executor order rotated between passes. Compare the ratios, not absolute times across
runs. Each run happens in its own Python process (so every run starts its own forkserver and
none inherits another's warm state), is timed around ``execute_job`` only, and is killed with
its process group if it exceeds ``--timeout``. Every run must succeed with every chunk step
succeeded, or the script exits 1.

Run it from the repository root (``make bench-executor`` runs the full one)::

    .venv/bin/python -m benchmarks.executor_overhead           # full: ~10-15 minutes
    .venv/bin/python -m benchmarks.executor_overhead --quick   # ~1-2 minutes

It prints a table and writes ``benchmarks/results/executor_overhead.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from benchmarks.harness import (
    RESULTS_DIR,
    STDERR_TAIL,
    machine_info,
    run_worker_process,
    write_json,
)

# Only the standard library at module level (the harness too): with ``spawn`` every step
# process imports this module as ``__mp_main__``, and it should cost them no more than the
# CLI's entry point does.

MODULE = "benchmarks.executor_overhead"
EXECUTORS: dict[str, dict[str, Any]] = {
    "in_process": {"in_process": {}},
    # No start_method: batch_executor fills in forkserver + preload of batch_pipeline.definitions.
    "forkserver": {"multiprocess": {"max_concurrent": 2}},
    "spawn": {"multiprocess": {"max_concurrent": 2, "start_method": {"spawn": {}}}},
}


@dataclass
class RunSpec:
    executor: str
    chunks: int
    records: int
    source: str
    phase: str  # warmup, small-1, large-1, small-2, ...


@dataclass
class RunResult:
    executor: str
    chunks: int
    phase: str
    success: bool
    wall_seconds: float | None  # around execute_job, inside the worker
    process_seconds: float  # the worker process, start to exit (imports included)
    chunks_planned: int | None = None
    chunk_steps_succeeded: int | None = None
    chunk_steps_failed: int | None = None
    steps_succeeded: int | None = None
    records_in: int | None = None
    records_out: int | None = None
    run_status: str | None = None
    timed_out: bool = False
    returncode: int | None = None
    leftover_processes: int = 0
    errors: list[str] = field(default_factory=list)
    stderr_tail: str | None = None

    @property
    def ok(self) -> bool:
        return (
            self.success
            and not self.timed_out
            and self.chunks_planned == self.chunks
            and self.chunk_steps_succeeded == self.chunks
            and not self.chunk_steps_failed
        )


def run_config(spec: RunSpec, output: str) -> dict[str, Any]:
    """Run config of ``batch_job`` for one measurement (as ``run_config_from_args`` builds it)."""
    chunk_records = spec.records // spec.chunks
    config: dict[str, Any] = {
        "source": spec.source,
        "processor": "passthrough",
        "chunking": {"chunk_records": chunk_records, "max_chunks": spec.chunks},
        "output": output,
        "delivery": {"target": "none"},
    }
    return {
        "ops": {"initialize": {"config": config}},
        "execution": {"config": EXECUTORS[spec.executor]},
        "loggers": {"console": {"config": {"log_level": "WARNING"}}},
    }


# --- the worker: one run of batch_job in this process ------------------------------------------


def worker(spec: RunSpec) -> dict[str, Any]:
    """Run ``batch_job`` once on a fresh temporary SQLite instance; return what was measured."""
    from dagster import DagsterEventType, DagsterInstance, execute_job, reconstructable

    from batch_pipeline.definitions import get_batch_job

    directory = tempfile.mkdtemp(prefix="executor-overhead-")
    try:
        overrides = {"telemetry": {"enabled": False}}
        with DagsterInstance.local_temp(directory, overrides=overrides) as instance:
            config = run_config(spec, os.path.join(directory, "output"))
            started = time.perf_counter()
            with execute_job(
                reconstructable(get_batch_job),
                instance=instance,
                run_config=config,
                raise_on_error=False,
            ) as result:
                wall = time.perf_counter() - started
                planned = 0
                chunk_ok = chunk_failed = steps_ok = 0
                errors: list[str] = []
                for event in result.all_events:
                    key = event.step_key or ""
                    if key == "plan_chunks" and event.event_type == DagsterEventType.STEP_OUTPUT:
                        planned += 1
                    elif event.event_type == DagsterEventType.STEP_SUCCESS:
                        steps_ok += 1
                        chunk_ok += key.startswith("process_chunk[")
                    elif event.event_type == DagsterEventType.STEP_FAILURE:
                        chunk_failed += key.startswith("process_chunk[")
                        error = event.step_failure_data.error
                        errors.append(f"{key}: {error.to_string() if error else 'failed'}")
                    elif event.event_type in (
                        DagsterEventType.RUN_FAILURE,
                        DagsterEventType.ENGINE_EVENT,
                    ):
                        data = event.event_specific_data
                        error = getattr(data, "error", None)
                        if error is not None:
                            errors.append(f"{event.event_type.value}: {error.to_string()}")
                batch = result.output_for_node("aggregate") if result.success else None
                run = instance.get_run_by_id(result.run_id)
                return {
                    "success": result.success,
                    "wall_seconds": wall,
                    "chunks_planned": planned,
                    "chunk_steps_succeeded": chunk_ok,
                    "chunk_steps_failed": chunk_failed,
                    "steps_succeeded": steps_ok,
                    "records_in": batch.records_in if batch else None,
                    "records_out": batch.records_out if batch else None,
                    "run_status": run.status.value if run else None,
                    "errors": errors,
                }
    finally:
        shutil.rmtree(directory, ignore_errors=True)


# --- the driver ----------------------------------------------------------------------------------


def measure(spec: RunSpec, timeout: float) -> RunResult:
    """Run one measurement in a fresh worker process (its own session and process group)."""
    run = run_worker_process(MODULE, json.dumps(asdict(spec)), timeout, poll_memory=False)
    data, timed_out = run.data, run.timed_out
    result = RunResult(
        executor=spec.executor,
        chunks=spec.chunks,
        phase=spec.phase,
        success=bool(data.get("success")),
        wall_seconds=data.get("wall_seconds"),
        process_seconds=run.seconds,
        chunks_planned=data.get("chunks_planned"),
        chunk_steps_succeeded=data.get("chunk_steps_succeeded"),
        chunk_steps_failed=data.get("chunk_steps_failed"),
        steps_succeeded=data.get("steps_succeeded"),
        records_in=data.get("records_in"),
        records_out=data.get("records_out"),
        run_status=data.get("run_status"),
        timed_out=timed_out,
        returncode=run.returncode,
        leftover_processes=run.leftover,
        errors=data.get("errors", []),
    )
    if timed_out:
        result.errors.append(f"timed out after {timeout:.0f}s; process group killed")
    elif not data:
        result.errors.append(f"the worker exited with code {run.returncode} and no result")
    if result.records_out is not None and result.records_out != spec.records:
        result.errors.append(f"records_out {result.records_out} != {spec.records}")
        result.success = False
    if not result.ok or run.returncode:
        result.stderr_tail = run.stderr[-STDERR_TAIL:] or None
    return result


def schedule(executors: list[str], small: int, large: int, repeats: int) -> list[tuple[str, int]]:
    """Interleaved (executor, chunks) order: small, large, small, ... ending on small; the
    executor order rotates from pass to pass."""
    passes = [small, large] * repeats + [small]
    order = []
    for index, chunks in enumerate(passes):
        shift = index % len(executors)
        rotated = executors[shift:] + executors[:shift]
        order += [(name, chunks) for name in rotated]
    return order


def derive(
    runs: list[RunResult], executors: list[str], small: int, large: int
) -> dict[str, dict[str, Any]]:
    derived: dict[str, dict[str, Any]] = {}
    for name in executors:
        walls: dict[int, list[float]] = {small: [], large: []}
        ok = True
        for run in runs:
            if run.executor == name and run.phase != "warmup":
                ok = ok and run.ok
                if run.wall_seconds is not None:
                    walls[run.chunks].append(run.wall_seconds)
        entry: dict[str, Any] = {
            "all_ok": ok,
            f"wall_{small}": walls[small],
            f"wall_{large}": walls[large],
        }
        if ok and walls[small] and walls[large]:
            w_small, w_large = statistics.fmean(walls[small]), statistics.fmean(walls[large])
            per_step = (w_large - w_small) / (large - small)
            entry.update(
                mean_small=w_small,
                mean_large=w_large,
                per_step_seconds=per_step,
                fixed_seconds=w_small - small * per_step,
            )
        derived[name] = entry
    base = derived.get("in_process", {}).get("per_step_seconds")
    for entry in derived.values():
        if base and "per_step_seconds" in entry:
            entry["per_step_vs_in_process"] = entry["per_step_seconds"] / base
    return derived


def _fmt(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def print_run_header() -> None:
    print(
        f"{'phase':<9} {'executor':<11} {'chunks':>6} {'wall s':>8} {'proc s':>8} "
        f"{'chunk ok':>9} status",
        flush=True,
    )


def print_run(run: RunResult) -> None:
    status = "ok" if run.ok else ("TIMEOUT" if run.timed_out else "FAILED")
    done = "-" if run.chunk_steps_succeeded is None else str(run.chunk_steps_succeeded)
    print(
        f"{run.phase:<9} {run.executor:<11} {run.chunks:>6} {_fmt(run.wall_seconds):>8} "
        f"{run.process_seconds:>8.2f} {done:>9} {status}",
        flush=True,
    )
    for error in run.errors[:3]:
        lines = error.strip().splitlines()
        print(f"    error: {lines[0] if lines else error}", flush=True)


def print_table(derived: dict[str, dict[str, Any]], small: int, large: int) -> None:
    header = (
        f"| executor | wall {small} chunks (s) | wall {large} chunks (s) | per mapped step (ms) "
        f"| fixed (s) | per step vs in_process |"
    )
    print(header)
    print("|" + "|".join("---" for _ in range(6)) + "|")
    for name, entry in derived.items():
        small_walls = "/".join(_fmt(w) for w in entry[f"wall_{small}"]) or "-"
        large_walls = "/".join(_fmt(w) for w in entry[f"wall_{large}"]) or "-"
        per_step = entry.get("per_step_seconds")
        ratio = entry.get("per_step_vs_in_process")
        print(
            f"| {name} | {small_walls} (mean {_fmt(entry.get('mean_small'))}) "
            f"| {large_walls} | {_fmt(per_step * 1000 if per_step is not None else None, 0)} "
            f"| {_fmt(entry.get('fixed_seconds'))} "
            f"| {_fmt(ratio, 1) + 'x' if ratio is not None else '-'} |"
            + ("" if entry["all_ok"] else " FAILED")
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog=f"python -m {MODULE}", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--quick", action="store_true", help="10 and 50 chunks, no spawn")
    parser.add_argument("--records", type=int, default=20_000)
    parser.add_argument("--small", type=int, default=10, help="small fan-out (chunks)")
    parser.add_argument("--large", type=int, default=None, help="large fan-out (200; quick 50)")
    parser.add_argument("--repeats", type=int, default=1, help="large passes (each bracketed)")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds per run")
    parser.add_argument("--json-out", type=Path, default=RESULTS_DIR / "executor_overhead.json")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.worker:
        print(json.dumps(worker(RunSpec(**json.loads(args.worker)))), flush=True)
        return 0

    small = args.small
    large = args.large or (50 if args.quick else 200)
    executors = ["in_process", "forkserver"] if args.quick else list(EXECUTORS)
    if not 0 < small < large <= args.records:
        parser.error("need 0 < small < large <= records")

    from batch_pipeline.core.inputs.sample_data import write_sample

    started = time.perf_counter()
    runs: list[RunResult] = []
    with tempfile.TemporaryDirectory(prefix="executor-overhead-input-") as directory:
        source, _ = write_sample(directory, args.records)
        order = [("in_process", small), *schedule(executors, small, large, args.repeats)]
        print(
            f"{args.records:,} records, fan-outs {small} and {large}, executors "
            f"{', '.join(executors)}: {len(order)} runs (the first is a warm-up)",
            flush=True,
        )
        print_run_header()
        passes: dict[int, int] = {}
        previous: int | None = None
        for index, (name, chunks) in enumerate(order):
            if index == 0:
                phase = "warmup"
            else:
                if chunks != previous:
                    passes[chunks] = passes.get(chunks, 0) + 1
                previous = chunks
                phase = f"{'small' if chunks == small else 'large'}-{passes[chunks]}"
            spec = RunSpec(name, chunks, args.records, source, phase)
            run = measure(spec, args.timeout)
            runs.append(run)
            print_run(run)

    derived = derive(runs, executors, small, large)
    total = time.perf_counter() - started
    print()
    print_table(derived, small, large)
    print(
        f"\ntotal {total:.0f}s; per step = (W{large} - W{small}) / {large - small}, "
        f"fixed = W{small} - {small} x per step; W{small} = mean of the bracketing passes"
    )

    report = {
        "benchmark": "executor_overhead",
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine_info(["dagster"]),
        "settings": {
            "records": args.records,
            "small_chunks": small,
            "large_chunks": large,
            "repeats": args.repeats,
            "quick": args.quick,
            "executors": {name: EXECUTORS[name] for name in executors},
            "processor": "passthrough",
            "delivery": "none",
            "instance": "DagsterInstance.local_temp (SQLite), fresh per run",
            "timing": "wall around execute_job in a fresh worker process",
        },
        "total_seconds": total,
        "derived": derived,
        "runs": [asdict(run) | {"ok": run.ok} for run in runs],
    }
    write_json(report, args.json_out)

    failed = [run for run in runs if not run.ok]
    if failed:
        print(f"{len(failed)} run(s) failed:", file=sys.stderr)
        for run in failed:
            print(f"  {run.phase} {run.executor} {run.chunks}: {run.errors[:1]}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
