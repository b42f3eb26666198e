"""The leads benchmark's checks (every batch's counts against the generator's) and its tables."""

from __future__ import annotations

from typing import Any

from benchmarks.harness import fmt, mib, ratio
from benchmarks.leads import LABELS


def expected(made: dict[str, Any], batch: int) -> dict[str, int]:
    """What batch 1 (a fresh store) or batch 2 (the same file again) must count."""
    people = made["people"]
    first = batch == 1
    return {
        "records_in": made["records"],
        "records_rejected": made["invalid"],
        "records_out": made["records"] - made["invalid"],
        "leads_inserted": people if first else 0,
        "leads_updated": 0,
        "leads_unchanged": 0 if first else people,
        "leads_merged_in_batch": made["records"] - made["invalid"] - people,
    }


def problems(kind: str, data: dict[str, Any], made: dict[str, Any], batch: int) -> list[str]:
    """How a batch's counts differ from the generator's ([] when they check out)."""
    want = expected(made, batch)
    if kind == "pandas":
        got = {
            "records_in": data.get("records_in"),
            "records_rejected": data.get("records_rejected"),
            "records_out": data.get("records_valid"),
            "upserted": data.get("upserted"),
            "inserted": data.get("inserted"),
        }
        want = {k: v for k, v in want.items() if k in got}
        want |= {"upserted": made["people"], "inserted": made["people"] if batch == 1 else 0}
    else:
        got = {k: data.get(k) for k in ("records_in", "records_rejected", "records_out")}
        got |= {k: (data.get("counts") or {}).get(k) for k in want if k.startswith("leads_")}
        if data.get("status") != "succeeded":
            return [f"batch {batch}: status {data.get('status')!r}, not 'succeeded'"]
    return [
        f"batch {batch}: {k} {got[k]!r}, expected {v:,}" for k, v in want.items() if got[k] != v
    ]


def row(kind: str, batch: int, m: dict[str, Any]) -> dict[str, Any]:
    """A table's row of one measurement (a dict of ``harness.Measurement``)."""
    d = m.get("data") or {}
    return {
        "kind": kind,
        "batch": batch,
        "status": m["status"],
        "seconds": m["seconds"],
        "rate": m["rate"],
        "peak_rss_bytes": m["peak_rss_bytes"],
        "stage1_seconds": d.get("stage1_seconds"),
        "stage2_seconds": d.get("stage2_seconds"),
        "chunks": d.get("chunks"),
        "buckets": d.get("buckets"),
        "store_save_seconds": d.get("store_save_seconds"),
        "store_load_seconds": d.get("store_load_seconds"),
        "chunk_peak_rss_bytes": d.get("chunk_peak_rss_bytes"),
        "bucket_peak_rss_bytes": d.get("bucket_peak_rss_bytes"),
        "counts": d.get("counts"),
    }


def derived(rows: list[dict[str, Any]]) -> dict[str, float | None]:
    """Ratios of leads/s within this run (batch 1 unless named)."""
    rate = {(r["kind"], r["batch"]): r["rate"] if r["status"] == "ok" else None for r in rows}
    return {
        "job_mp_vs_core": ratio(rate.get(("job_mp", 1)), rate.get(("core", 1))),
        "job_inproc_vs_core": ratio(rate.get(("job_inproc", 1)), rate.get(("core", 1))),
        "core_vs_pandas": ratio(rate.get(("core", 1)), rate.get(("pandas", 1))),
        "job_mp_vs_pandas": ratio(rate.get(("job_mp", 1)), rate.get(("pandas", 1))),
        "core_pg_vs_core": ratio(rate.get(("core_pg", 1)), rate.get(("core", 1))),
        "core_batch2_vs_batch1": ratio(rate.get(("core", 2)), rate.get(("core", 1))),
        "job_mp_batch2_vs_batch1": ratio(rate.get(("job_mp", 2)), rate.get(("job_mp", 1))),
    }


def _rate(value: float | None) -> str:
    return "-" if value is None else f"{value / 1e3:,.1f}k"


def _share(part: float | None, whole: float | None) -> str:
    if part is None or not whole:
        return "-"
    return f"{part:,.1f} ({100 * part / whole:,.0f}%)"


def print_table(made: dict[str, Any], rows: list[dict[str, Any]]) -> None:
    print(
        f"\n### {made['records']:,} leads over {made['people']:,} people "
        f"({made['records'] - made['invalid'] - made['people']:,} duplicates merged, "
        f"{made['invalid']:,} invalid e-mails)\n"
    )
    print(
        "| measurement | batch | wall s | leads/s | peak MiB | stage 1 s (chunks) "
        "| stage 2 s (buckets) | store save s | chunks / buckets |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        label = LABELS[r["kind"]]
        if r["status"] != "ok":
            print(f"| {label} | {r['batch']} | {r['status']} | | | | | | |")
            continue
        pieces = "-" if r["chunks"] is None else f"{r['chunks']} / {r['buckets']}"
        print(
            f"| {label} | {r['batch']} | {fmt(r['seconds'], 1)} | {_rate(r['rate'])} "
            f"| {mib(r['peak_rss_bytes'])} | {_share(r['stage1_seconds'], r['seconds'])} "
            f"| {_share(r['stage2_seconds'], r['seconds'])} "
            f"| {fmt(r['store_save_seconds'], 1)} | {pieces} |"
        )


def print_derived(ratios: dict[str, float | None]) -> None:
    print("\n| ratio of leads/s (this run) | value |")
    print("|---|---|")
    for name, value in ratios.items():
        if value is not None:
            print(f"| {name} | {value:,.2f} |")
