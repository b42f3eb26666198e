"""The throughput report: the tables of records/s, seconds and peak memory per size, of our
runs (orchestration, per step, against the others) and of our CLI against the peers (DuckDB,
polars), and the goals, each met, missed or not measured, judged at the size they name or else
at the largest size that has them.
"""

from __future__ import annotations

from typing import Any

from benchmarks.harness import fmt, mib, rate_text
from benchmarks.throughput import KINDS, LABELS, OURS, PLAN_CHUNKS, SMALL_JOB_RECORDS

GIB = 1 << 30
PEER_RATE_TARGET = 1.5
PEER_MEMORY_TARGET = 1 / 4
GOALS = {
    "validate_60m_seconds": "validate 60M records end to end <= 120 s",
    "passthrough_vs_raw": "passthrough >= 0.5x the raw Arrow read rate",
    "passthrough_vs_raw_text": "passthrough (the CLI, cold, if measured) >= 0.7x the raw read "
    "as text's rate",
    "validate_vs_raw_text": "validate (the CLI, cold, if measured) >= 0.5x the raw read as "
    "text's rate",
    "validate_vs_naive": "validate >= 4x the naive loop's rate",
    "validate_vs_pandas": "at 10M: validate at least as fast as pandas, <= 1/3 of its peak memory",
    "cli_vs_peers_10m": "at 10M: CLI validate >= 1.5x the faster peer's rate (DuckDB, polars), "
    "peak memory <= 1/4 of theirs",
    "cli_vs_peers_60m": "at 60M: CLI validate >= 1.5x the faster peer's rate (DuckDB, polars), "
    "peak memory <= 1/4 of theirs",
    "orchestration_share": "orchestration <= 10% of wall, at 10M and at 60M",
    "step_peak_memory": "peak memory <= 1 GiB per step",
    "small_job_seconds": "a 500-record file through the whole job < 2 s",
    "small_cli_seconds": "a 500-record file through batch-pipeline run, cold process, < 2 s wall",
    "plan_10k_chunks_seconds": "planning 10,000 chunks < 1 s",
}


def _scaled(value: float | None, factor: float) -> float | None:
    return None if value is None else value * factor


def print_tables(report: dict[str, Any]) -> None:
    sizes = report["sizes"]
    print("\n### Records per second\n")
    print("| size | " + " | ".join(LABELS[k] for k in KINDS) + " |")
    print("|---|" + "---|" * len(KINDS))
    for label, entry in sizes.items():
        ms = entry["measurements"]
        cells = [rate_text(ms.get(kind)) for kind in KINDS]
        print(f"| {label} | " + " | ".join(cells) + " |")

    print("\n### Seconds and peak memory (MiB) per measurement\n")
    print("| size | " + " | ".join(KINDS) + " |")
    print("|---|" + "---|" * len(KINDS))
    for label, entry in sizes.items():
        cells = []
        for kind in KINDS:
            m = entry["measurements"].get(kind)
            if m is not None and m["data"].get("stopped_seconds") and m["status"] != "ok":
                stop = m["data"]
                cells.append(
                    f"{m['status']} at {stop['stopped_seconds']:,.1f} s / "
                    f"{mib(stop.get('stopped_rss_bytes'))}"
                )
            elif m is None or m["status"] != "ok":
                cells.append(m["status"] if m else "-")
            else:
                cells.append(f"{m['seconds']:,.2f} s / {mib(m['peak_rss_bytes'])}")
        print(f"| {label} | " + " | ".join(cells) + " |")

    print("\n### Ours\n")
    print(
        "| size | run | chunks x records | steps | wall s | sum chunk s | orchestration "
        "| per step ms | plan step s | between steps s | peak/step MiB | peak/run MiB "
        "| vs raw | vs raw text | vs naive | time vs pandas | memory vs pandas |"
    )
    print("|" + "---|" * 17)
    for label, entry in sizes.items():
        derived = entry["derived"]
        for kind in OURS:
            d = derived.get(kind)
            m = entry["measurements"].get(kind)
            if d is None or m is None:
                continue
            data = m["data"]
            vs_raw = derived.get(f"{kind}_vs_raw")
            vs_text = derived.get(f"{kind}_vs_raw_text")
            vs_naive = derived.get(f"{kind}_vs_naive")
            time_p = derived.get("validate_time_vs_pandas") if kind == "validate" else None
            mem_p = derived.get("validate_memory_vs_pandas") if kind == "validate" else None
            print(
                f"| {label} | {kind} | {d['chunks']} x {d['chunk_records_max'] or 0:,} "
                f"| {d['steps'] or '-'} "
                f"| {data['wall_seconds']:,.2f} | {data['chunk_seconds_sum']:,.2f} "
                f"| {fmt(_scaled(d['orchestration_share'], 100), 1, '%')} "
                f"| {fmt(_scaled(d['orchestration_per_step_seconds'], 1000), 0)} "
                f"| {fmt(d['plan_step_seconds'])} | {fmt(d['outside_steps_seconds'])} "
                f"| {mib(d['step_peak_rss_bytes'])} | {mib(d['run_peak_rss_bytes'])} "
                f"| {fmt(vs_raw, 2, 'x')} | {fmt(vs_text, 2, 'x')} | {fmt(vs_naive, 1, 'x')} "
                f"| {fmt(time_p, 2, 'x')} | {fmt(mem_p, 2, 'x')} |"
            )
    print_peers(report)
    small, plan = report.get("small_job"), report.get("planning")
    if small:
        walls = small["data"].get("repeat_walls") or []
        print(
            f"\n{SMALL_JOB_RECORDS}-record file through batch_job (validate): "
            f"{small['status']}, wall {'/'.join(f'{w:.2f}' for w in walls) or '-'} s "
            "(first run cold in a fresh process, then warm), process "
            f"{small['process_seconds']:.1f} s with imports"
        )
    small_cli = report.get("small_cli")
    if small_cli:
        d = small_cli["data"]
        print(
            f"{SMALL_JOB_RECORDS}-record file through batch-pipeline run (validate): "
            f"{small_cli['status']}, wall {fmt(d.get('wall_seconds'))} s from spawn to exit "
            f"(the CLI's own summary: {fmt(d.get('cli_seconds'))} s), peak "
            f"{mib(small_cli['peak_rss_bytes'])} MiB"
        )
    if plan:
        d = plan["data"]
        print(
            f"plan_batch into {d.get('chunks', '-'):,} chunks of {d.get('chunk_records', 0):,} "
            f"records ({plan['size']} file): {plan['status']}, {fmt(plan['seconds'], 3)} s "
            f"(prepare_batch {fmt(d.get('prepare_seconds'), 3)} s, write plan.json "
            f"{fmt(d.get('write_plan_seconds'), 3)} s, ledger register "
            f"{fmt(d.get('register_seconds'), 3)} s)"
        )


def _peer_cell(m: dict[str, Any] | None) -> str:
    if m is None:
        return "-"
    if m["status"] == "ok":
        return f"{rate_text(m)} / {m['seconds']:,.1f} s / {mib(m['peak_rss_bytes'])} MiB"
    stop = m["data"]
    if stop.get("stopped_seconds"):
        return (
            f"{m['status']} at {stop['stopped_seconds']:,.1f} s, "
            f"{mib(stop.get('stopped_rss_bytes'))} MiB"
        )
    return m["status"]


def print_peers(report: dict[str, Any]) -> None:
    """Ours (the CLI if measured) against DuckDB and polars: rates, seconds, peak memory and
    the ratios of the goal ``cli_vs_peers``."""
    rows = [(label, e) for label, e in report["sizes"].items() if e["derived"].get("vs_peers")]
    if not rows:
        return
    print("\n### Against the peers (each: records/s / seconds / peak MiB)\n")
    print(
        "| size | ours | ours' figures | DuckDB | polars | faster peer | rate ratio | memory ratio "
        "(vs the smaller peer peak) | memory ratio vs faster |"
    )
    print("|" + "---|" * 9)
    for label, entry in rows:
        v = entry["derived"]["vs_peers"]
        ms = entry["measurements"]
        stopped = ", ".join(f"{k} {s}, did not finish" for k, s in v["stopped"].items())
        print(
            f"| {label} | {v['ours']} | {_peer_cell(ms.get(v['ours']))} "
            f"| {_peer_cell(ms.get('duckdb'))} | {_peer_cell(ms.get('polars'))} "
            f"| {v['fastest_peer']}{f' ({stopped})' if stopped else ''} "
            f"| {fmt(v['rate_ratio'], 2, 'x')} | {fmt(v['memory_ratio'], 3, 'x')} "
            f"| {fmt(v['memory_ratio_vs_fastest'], 3, 'x')} |"
        )


def evaluate_goals(report: dict[str, Any]) -> list[dict[str, Any]]:
    """Each goal with its value per size where it applies, and met / missed / not measured."""
    sizes = report["sizes"]
    goals: list[dict[str, Any]] = []

    def add(key: str, values: dict[str, Any], met: bool | None, note: str = "") -> None:
        goals.append({"goal": key, "text": GOALS[key], "values": values, "met": met, "note": note})

    def measured(label: str, kind: str) -> dict[str, Any] | None:
        m = sizes[label]["measurements"].get(kind)
        return m if m and m["status"] == "ok" else None

    big = [label for label, e in sizes.items() if e["records"] >= 60_000_000]
    if big:
        m = measured(big[-1], "validate")
        seconds = m["seconds"] if m else None
        add(
            "validate_60m_seconds",
            {big[-1]: seconds},
            None if seconds is None else seconds <= 120,
        )
    else:
        add("validate_60m_seconds", {}, None, "not measured (run --sizes 60m)")

    def ratio_goal(key: str, derived_key: str, target: float) -> None:
        values = {label: e["derived"].get(derived_key) for label, e in sizes.items()}
        present = {k: v for k, v in values.items() if v is not None}
        if not present:
            add(key, values, None, "not measured")
            return
        largest = list(present)[-1]
        add(key, values, present[largest] >= target, f"judged at {largest}")

    ratio_goal("passthrough_vs_raw", "passthrough_vs_raw", 0.5)
    for run, target in (("passthrough", 0.7), ("validate", 0.5)):
        raw_text_goal(sizes, add, run, target)
    ratio_goal("validate_vs_naive", "validate_vs_naive", 4.0)

    with_pandas = [
        label
        for label, e in sizes.items()
        if e["derived"].get("validate_time_vs_pandas") is not None
    ]
    at = "10m" if "10m" in with_pandas else (with_pandas[-1] if with_pandas else None)
    if at:
        d = sizes[at]["derived"]
        t, mem = d["validate_time_vs_pandas"], d["validate_memory_vs_pandas"]
        met = t <= 1.0 and mem is not None and mem <= 1 / 3
        add(
            "validate_vs_pandas",
            {at: {"time_ratio": t, "memory_ratio": mem}},
            met,
            "" if at == "10m" else f"10m not measured; judged at {at}",
        )
    else:
        add("validate_vs_pandas", {}, None, "not measured")

    for label in ("10m", "60m"):
        peers_goal(sizes, add, label)

    def per_run_goal(key: str, field_name: str, target: float) -> None:
        values: dict[str, Any] = {}
        for label, e in sizes.items():
            for kind in OURS:
                d = e["derived"].get(kind)
                if d and d.get(field_name) is not None:
                    values[f"{label} {kind}"] = d[field_name]
        if not values:
            add(key, values, None, "not measured")
            return
        largest = list(sizes)[-1]
        judged = {k: v for k, v in values.items() if k.startswith(f"{largest} ")}
        met = all(v <= target for v in judged.values()) if judged else None
        add(key, values, met, f"judged at {largest}")

    orchestration_goal(sizes, add)
    per_run_goal("step_peak_memory", "step_peak_rss_bytes", GIB)

    small = report.get("small_job")
    if small and small["status"] == "ok":
        wall = small["data"]["wall_seconds"]
        add("small_job_seconds", {"cold": wall, "walls": small["data"]["repeat_walls"]}, wall < 2)
    else:
        add("small_job_seconds", {}, None, "not measured" if not small else small["status"])

    small_cli = report.get("small_cli")
    if small_cli and small_cli["status"] == "ok":
        wall = small_cli["data"]["wall_seconds"]
        add(
            "small_cli_seconds",
            {"wall": wall, "cli_summary": small_cli["data"].get("cli_seconds")},
            wall < 2,
            "spawn to exit",
        )
    else:
        note = "not measured" if not small_cli else small_cli["status"]
        add("small_cli_seconds", {}, None, note)

    plan = report.get("planning")
    if plan and plan["status"] == "ok":
        add(
            "plan_10k_chunks_seconds",
            {plan["size"]: plan["seconds"], "chunks": plan["data"]["chunks"]},
            plan["seconds"] < 1.0 and plan["data"]["chunks"] == PLAN_CHUNKS,
        )
    else:
        add("plan_10k_chunks_seconds", {}, None, "not measured" if not plan else plan["status"])
    return goals


Add = Any  # evaluate_goals's add(key, values, met, note)


def raw_text_goal(sizes: dict[str, Any], add: Add, run: str, target: float) -> None:
    """``<run>_vs_raw_text``: our rate over the raw read as text's, the CLI's (cold) where it
    was measured, else the in-process run's; judged at the largest size that has one."""
    values: dict[str, Any] = {}
    which: dict[str, str] = {}
    for label, e in sizes.items():
        for kind in (f"cli_{run}", run):
            value = e["derived"].get(f"{kind}_vs_raw_text")
            if value is not None:
                values[label], which[label] = value, kind
                break
    key = f"{run}_vs_raw_text"
    if not values:
        add(key, values, None, "not measured")
        return
    largest = list(values)[-1]
    add(key, values, values[largest] >= target, f"judged at {largest}, {which[largest]}")


def peers_goal(sizes: dict[str, Any], add: Add, label: str) -> None:
    """``cli_vs_peers_<label>``: at that size, ours (the CLI, else in-process) >= 1.5x the
    faster peer's rate and <= 1/4 of the peers' peak memory (the smaller peak). A peer that
    stopped at the memory limit or timed out has no rate: the faster peer is the faster of
    those that finished (only when none did, a stopped one's bound: records / seconds until
    it stopped); its memory counts as what it had then (at least)."""
    key = f"cli_vs_peers_{label}"
    entry = sizes.get(label)
    v = entry["derived"].get("vs_peers") if entry else None
    if v is None:
        add(key, {}, None, f"not measured (needs {label} with cli_validate and a peer)")
        return
    values = {
        "ours": v["ours"],
        "faster_peer": v["fastest_peer"],
        "rate_ratio": v["rate_ratio"],
        "memory_ratio": v["memory_ratio"],
    }
    rate_ok = v["rate_ratio"] is not None and v["rate_ratio"] >= PEER_RATE_TARGET
    memory_ok = v["memory_ratio"] is not None and v["memory_ratio"] <= PEER_MEMORY_TARGET
    notes = [
        f"{k} {s}: did not finish, "
        + ("its rate a bound" if k == v["fastest_peer"] else "not the faster peer")
        for k, s in v["stopped"].items()
    ]
    if v["peers_missing"]:
        notes.append(f"{', '.join(v['peers_missing'])} failed: not compared")
    if v["ours"] != "cli_validate":
        notes.append("the CLI not measured: the in-process run")
    add(key, values, rate_ok and memory_ok, "; ".join(notes))


def orchestration_goal(sizes: dict[str, Any], add: Add) -> None:
    """Orchestration share of every run of ours (in-process and CLI), judged at 10M and 60M
    (every run measured there), else at the largest size."""
    values: dict[str, Any] = {}
    for label, e in sizes.items():
        for kind in OURS:
            d = e["derived"].get(kind)
            if d and d.get("orchestration_share") is not None:
                values[f"{label} {kind}"] = d["orchestration_share"]
    if not values:
        add("orchestration_share", values, None, "not measured")
        return
    at = [label for label in ("10m", "60m") if label in sizes] or [list(sizes)[-1]]
    judged = {k: v for k, v in values.items() if k.split(" ", 1)[0] in at}
    met = all(v <= 0.10 for v in judged.values()) if judged else None
    add("orchestration_share", values, met, f"judged at {' and '.join(at)}")


def _goal_value(value: Any) -> str:
    if isinstance(value, dict):
        return ", ".join(f"{k} {_goal_value(v)}" for k, v in value.items())
    if isinstance(value, list):
        return "/".join(_goal_value(v) for v in value)
    if isinstance(value, float):
        return f"{value:,.3f}"
    return str(value)


def print_goals(goals: list[dict[str, Any]]) -> None:
    print("\n### Goals\n")
    print("| goal | result | values |")
    print("|---|---|---|")
    for g in goals:
        verdict = {True: "met", False: "MISSED", None: ""}[g["met"]]
        note = g["note"] if g["met"] is None else (f" ({g['note']})" if g["note"] else "")
        values = dict(g["values"])
        if g["goal"] == "step_peak_memory":
            values = {k: f"{v / 2**20:,.0f} MiB" for k, v in values.items()}
        elif g["goal"] == "orchestration_share":
            values = {k: f"{100 * v:.1f}%" for k, v in values.items()}
        print(f"| {g['text']} | {verdict}{note} | {_goal_value(values) or '-'} |")
