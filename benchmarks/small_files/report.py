"""The small-files report: one table of the measurements (runs, steps, process_chunk steps,
wall time, records/s, peak memory, and the speed-up of one file-set run against each), with
the per-file run extrapolated to every file.
"""

from __future__ import annotations

from typing import Any

from benchmarks.harness import fmt, mib, rate_text, ratio
from benchmarks.small_files import KINDS, LABELS


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
        rate = rate_text(m)
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
            f"| {fmt(wall)} | {rate} | {mib(m['peak_rss_bytes'])} "
            f"| {_times(ratio(set_rate, m['rate']))} | {_times(ratio(m['rate'], raw_rate))} |"
        )
    p, s = derived.get("per_file"), derived.get("file_set")
    if p:
        print(
            f"\nper_file: {fmt(p['seconds_per_file'], 3)} s per file warm (first run, cold: "
            f"{fmt(p['first_run_seconds'], 2)} s), {made['files']:,} files -> "
            f"{fmt(p['extrapolated_seconds'], 0)} s; not counted: a run process per run"
        )
    if s:
        print(
            f"file_set: {s['process_chunk_steps']} process_chunk step(s) of ~"
            f"{fmt(s['files_per_chunk'], 0)} files, sum chunk {fmt(s['chunk_seconds_sum'])} s, "
            f"plan step {fmt(s['plan_step_seconds'])} s, peak/step "
            f"{mib(s['step_peak_rss_bytes'])} MiB, peak/run "
            f"{mib(s['run_peak_rss_bytes'])} MiB"
        )
    print(
        f"speed-up file_set / per_file: {_times(derived['file_set_vs_per_file'])}; "
        f"file_set / raw: {_times(derived['file_set_vs_raw'])}"
    )
