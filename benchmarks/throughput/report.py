"""The throughput report: the tables of records/s, seconds and peak memory per size and of our
runs (orchestration, per step, against the others), and the goals, each met, missed or not
measured, judged at the largest size that has them.
"""

from __future__ import annotations

from typing import Any

from benchmarks.harness import fmt, mib, rate_text
from benchmarks.throughput import KINDS, LABELS, PLAN_CHUNKS, SMALL_JOB_RECORDS

GIB = 1 << 30
GOALS = {
    "validate_60m_seconds": "validate 60M records end to end <= 120 s",
    "passthrough_vs_raw": "passthrough >= 0.5x the raw Arrow read rate",
    "validate_vs_naive": "validate >= 4x the naive loop's rate",
    "validate_vs_pandas": "at 10M: validate at least as fast as pandas, <= 1/3 of its peak memory",
    "orchestration_share": "orchestration <= 10% of wall",
    "step_peak_memory": "peak memory <= 1 GiB per step",
    "small_job_seconds": "a 500-record file through the whole job < 2 s",
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
            if m is None or m["status"] != "ok":
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
        for kind in ("passthrough", "validate"):
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
                f"| {d['steps']} "
                f"| {data['wall_seconds']:,.2f} | {data['chunk_seconds_sum']:,.2f} "
                f"| {fmt(_scaled(d['orchestration_share'], 100), 1, '%')} "
                f"| {fmt(_scaled(d['orchestration_per_step_seconds'], 1000), 0)} "
                f"| {fmt(d['plan_step_seconds'])} | {fmt(d['outside_steps_seconds'])} "
                f"| {mib(d['step_peak_rss_bytes'])} | {mib(d['run_peak_rss_bytes'])} "
                f"| {fmt(vs_raw, 2, 'x')} | {fmt(vs_text, 2, 'x')} | {fmt(vs_naive, 1, 'x')} "
                f"| {fmt(time_p, 2, 'x')} | {fmt(mem_p, 2, 'x')} |"
            )
    small, plan = report.get("small_job"), report.get("planning")
    if small:
        walls = small["data"].get("repeat_walls") or []
        print(
            f"\n{SMALL_JOB_RECORDS}-record file through batch_job (validate): "
            f"{small['status']}, wall {'/'.join(f'{w:.2f}' for w in walls) or '-'} s "
            "(first run cold in a fresh process, then warm), process "
            f"{small['process_seconds']:.1f} s with imports"
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

    def per_run_goal(key: str, field_name: str, target: float) -> None:
        values: dict[str, Any] = {}
        for label, e in sizes.items():
            for kind in ("passthrough", "validate"):
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

    per_run_goal("orchestration_share", "orchestration_share", 0.10)
    per_run_goal("step_peak_memory", "step_peak_rss_bytes", GIB)

    small = report.get("small_job")
    if small and small["status"] == "ok":
        wall = small["data"]["wall_seconds"]
        add("small_job_seconds", {"cold": wall, "walls": small["data"]["repeat_walls"]}, wall < 2)
    else:
        add("small_job_seconds", {}, None, "not measured" if not small else small["status"])

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
