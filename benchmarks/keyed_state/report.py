"""The keyed benchmark's checks, figures and tables: every batch's counts checked
(``problems``), the core part's rows (median of the warm repetitions, ``core_rows``), the job's
shares of its wall time (``job_figures``), seed 002's targets against them (``targets``), and
the markdown tables printed.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from typing import Any

from benchmarks.harness import fmt, mib
from benchmarks.keyed_state import (
    LABELS,
    LATENCY_TARGET_SECONDS,
    OPS_PER_100_TARGET,
    PEAK_TARGET_BYTES,
)

BATCHES = ("first", "second")
TIMED = (
    "bucket_seconds",
    "run_seconds",
    "prepare_seconds",
    "stage1_seconds",
    "load_seconds",
    "save_seconds",
)


def problems(run: dict[str, Any]) -> list[str]:
    """What is wrong with one batch's counts: it must succeed, see every record written, count
    out + rejected = in, reject exactly the outliers, succeed in every chunk and bucket, find
    the states it should and save one per user."""
    found: list[str] = []
    if run["status"] != "succeeded":
        found.append(f"status {run['status']}")
    rin, out, rejected = run["records_in"], run["records_out"], run["records_rejected"]
    if rin != run["expected_records"]:
        found.append(f"{rin} records in, {run['expected_records']} written")
    if out + rejected != rin:
        found.append(f"{out} out + {rejected} rejected != {rin} in")
    if rejected != run["expected_rejected"]:
        found.append(f"{rejected} rejected, {run['expected_rejected']} outliers written")
    for unit in ("chunks", "buckets"):
        if not run[unit] or run[f"{unit}_succeeded"] != run[unit]:
            found.append(f"{run[f'{unit}_succeeded']} of {run[unit]} {unit} succeeded")
    if run["keys_found"] != run["expected_found"]:
        found.append(f"the loads found {run['keys_found']} states, {run['expected_found']} exist")
    if run["keys_saved"] != run["users"]:
        found.append(f"{run['keys_saved']} states saved for {run['users']} users")
    return found


def median(values: Sequence[float]) -> float | None:
    return statistics.median(values) if values else None


def _met(value: float | None, target: float | None) -> bool | None:
    return None if value is None or target is None else value < target


def core_rows(data: dict[str, Any]) -> list[dict[str, Any]]:
    """A row per combination and batch: the median of the repetitions after the first (all of
    them when there is one), the first's own, the store's operations and the targets."""
    rows = []
    for combo in data.get("combos", []):
        records = combo["records"]
        target = LATENCY_TARGET_SECONDS.get(records)
        for batch in BATCHES:
            runs = combo["runs"][batch]
            timed = runs[1:] if len(runs) > 1 else runs
            row: dict[str, Any] = {"records": records, "users": combo["users"], "batch": batch}
            row["repetitions_timed"] = len(timed)
            row |= {name: median([r[name] for r in timed]) for name in TIMED}
            row["first_repetition"] = {name: runs[0][name] for name in TIMED}
            row["operations"] = max(r["operations"] for r in runs)
            row["operations_per_100"] = 100 * row["operations"] / records
            row["keys_found"] = runs[-1]["keys_found"]
            row["records_rejected"] = runs[-1]["records_rejected"]
            row["latency_target_seconds"] = target
            row["bucket_met"] = _met(row["bucket_seconds"], target)
            row["run_met"] = _met(row["run_seconds"], target)
            row["operations_met"] = row["operations_per_100"] < OPS_PER_100_TARGET
            rows.append(row)
    return rows


def job_figures(data: dict[str, Any]) -> dict[str, Any]:
    """The job's rate and the shares of its run (``run_batch``'s wall): stage 1, stage 2 and
    the rest (planning, the ledger's rows, aggregation)."""
    wall = data["run_seconds"]
    stage1, stage2 = data["stage1_seconds"], data["bucket_seconds"]
    rest = wall - stage1 - stage2
    return {
        "wall_seconds": wall,
        "records_per_second": data["records_in"] / wall if wall else None,
        "stage1_seconds": stage1,
        "stage2_seconds": stage2,
        "rest_seconds": rest,
        "stage1_share": stage1 / wall if wall else None,
        "stage2_share": stage2 / wall if wall else None,
        "rest_share": rest / wall if wall else None,
        "store_load_seconds": data["load_seconds"],
        "store_save_seconds": data["save_seconds"],
        "operations_per_100": 100 * data["operations"] / data["records_in"],
    }


def _target(
    goal: str, text: str, met: bool | None, values: dict[str, Any], figure: str
) -> dict[str, Any]:
    return {"goal": goal, "text": text, "met": met, "values": values, "figure": figure}


def targets(report: dict[str, Any]) -> list[dict[str, Any]]:
    """Seed 002's targets against every store measured, and the job's memory."""
    out = []
    for store, entry in report["core"].items():
        rows = entry.get("rows") or []
        if not rows:
            continue
        timed = [r for r in rows if r["latency_target_seconds"] is not None]
        for figure in ("bucket", "run") if timed else ():
            worst = max(timed, key=lambda r: r[f"{figure}_seconds"] / r["latency_target_seconds"])
            seconds, target = worst[f"{figure}_seconds"], worst["latency_target_seconds"]
            where = f"{worst['records']} over {worst['users']}, {worst['batch']} batch"
            name = "bucket step" if figure == "bucket" else "local run"
            out.append(
                _target(
                    f"{store}_{figure}_latency",
                    f"{LABELS[store]}: {name} < 200 ms / 1 s / 5 s for 10 / 100 / 500",
                    all(r[f"{figure}_met"] for r in timed),
                    {"worst_seconds": seconds, "worst_of_target": seconds / target},
                    f"closest: {_ms(seconds)} ms of {target * 1000:,.0f} ms ({where})",
                )
            )
        missed = sorted({(r["records"], r["users"]) for r in rows if not r["operations_met"]})
        most = max(rows, key=lambda r: r["operations_per_100"])
        out.append(
            _target(
                f"{store}_operations",
                f"{LABELS[store]}: < {OPS_PER_100_TARGET} store operations per 100 measurements",
                not missed,
                {"most_per_100": most["operations_per_100"], "missed_at": missed},
                f"most: {most['operations']} per batch of {most['records']} = "
                f"{fmt(most['operations_per_100'], 1)} per 100"
                + (
                    f"; missed at {', '.join(f'{n} over {u}' for n, u in missed)}" if missed else ""
                ),
            )
        )
        peak = entry["measurement"].get("peak_rss_bytes")
        out.append(
            _target(
                f"{store}_peak_memory",
                f"{LABELS[store]}: peak memory < 512 MiB",
                _met(peak, PEAK_TARGET_BYTES),
                {"peak_rss_bytes": peak},
                f"{mib(peak)} MiB",
            )
        )
    job = report.get("job")
    if job and job.get("measurement", {}).get("status") == "ok":
        peak = job["measurement"]["peak_rss_bytes"]
        out.append(
            _target(
                "job_peak_memory",
                f"whole job ({job['records']:,} records): peak memory < 512 MiB",
                _met(peak, PEAK_TARGET_BYTES),
                {"peak_rss_bytes": peak},
                f"{mib(peak)} MiB",
            )
        )
    return out


def _verdict(met: bool | None) -> str:
    return {True: "met", False: "MISSED", None: "-"}[met]


def _ms(seconds: float | None) -> str:
    return fmt(None if seconds is None else seconds * 1000, 1)


def print_core(store: str, entry: dict[str, Any]) -> None:
    m, rows = entry["measurement"], entry.get("rows") or []
    print(f"\n### Core keyed path: {LABELS[store]}, one chunk and one bucket per batch\n")
    if m["status"] != "ok":
        print(f"{m['status']}: {'; '.join(m['errors'])[:500]}")
        return
    timed = rows[0]["repetitions_timed"] if rows else 0
    print(f"median of {timed} warm repetitions (the first of each left out); ms\n")
    print(
        "| measurements | users | batch | bucket step | local run | target | met (bucket / run) "
        "| store load / save | store ops | per 100 | < 10 |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        target = r["latency_target_seconds"]
        print(
            f"| {r['records']} | {r['users']} | {r['batch']} | {_ms(r['bucket_seconds'])} "
            f"| {_ms(r['run_seconds'])} | {'-' if target is None else f'{target * 1000:,.0f}'} "
            f"| {_verdict(r['bucket_met'])} / {_verdict(r['run_met'])} "
            f"| {_ms(r['load_seconds'])} / {_ms(r['save_seconds'])} | {r['operations']} "
            f"| {fmt(r['operations_per_100'], 1)} | {_verdict(r['operations_met'])} |"
        )
    if rows:
        first = rows[0]["first_repetition"]
        print(
            f"\npeak RSS of the measuring process {mib(m['peak_rss_bytes'])} MiB (< 512: "
            f"{_verdict(_met(m['peak_rss_bytes'], PEAK_TARGET_BYTES))}); the process's first "
            f"batch (cold, left out): bucket {_ms(first['bucket_seconds'])} ms, local run "
            f"{_ms(first['run_seconds'])} ms"
        )


def print_job(job: dict[str, Any]) -> None:
    m = job["measurement"]
    print(
        f"\n### Whole keyed job: {job['records']:,} measurements over {job['users']:,} users, "
        f"SQLite store, {job['chunks']} chunks\n"
    )
    if m["status"] != "ok":
        print(f"{m['status']}: {'; '.join(m['errors'])[:500]}")
        return
    d, f = m["data"], job["figures"]

    def share(seconds: float, part: float | None) -> str:
        return f"{fmt(seconds, 1)} ({fmt(None if part is None else 100 * part, 0)}%)"

    print(
        "| records | users | chunks / buckets | wall s | records/s | stage 1: partition s "
        "| stage 2: buckets s | of which store load / save s | rest s | peak MiB | < 512 |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    print(
        f"| {d['records_in']:,} | {job['users']:,} | {d['chunks']} / {d['buckets']} "
        f"| {fmt(f['wall_seconds'], 1)} | {fmt(f['records_per_second'] / 1e3, 0)}k "
        f"| {share(f['stage1_seconds'], f['stage1_share'])} "
        f"| {share(f['stage2_seconds'], f['stage2_share'])} "
        f"| {fmt(f['store_load_seconds'], 1)} / {fmt(f['store_save_seconds'], 1)} "
        f"| {share(f['rest_seconds'], f['rest_share'])} | {mib(m['peak_rss_bytes'])} "
        f"| {_verdict(_met(m['peak_rss_bytes'], PEAK_TARGET_BYTES))} |"
    )
    print(
        f"\nrejected {d['records_rejected']:,} (the outliers written), store operations "
        f"{d['operations']:,} ({fmt(f['operations_per_100'], 2)} per 100), largest chunk step "
        f"{mib(d['chunk_peak_rss_bytes'])} MiB, largest bucket step "
        f"{mib(d['bucket_peak_rss_bytes'])} MiB; input generated in "
        f"{fmt(job['generated_seconds'], 1)} s (not counted)"
    )


def print_targets(goals: list[dict[str, Any]]) -> None:
    print("\n### Seed 002's targets\n")
    print("| target | result | figure |")
    print("|---|---|---|")
    for g in goals:
        print(f"| {g['text']} | {_verdict(g['met'])} | {g['figure']} |")
