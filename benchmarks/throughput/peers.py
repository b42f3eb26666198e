"""The peers ``batch_job`` is measured against end to end: the script a competent user writes
in DuckDB and in polars to do what ``validate`` does with ``benchmarks.records.SCHEMA``: read
the whole file as text, check every rule (required, int/float/timestamp, min, pattern, length),
give each rejected record its reasons (the same words and order as ``validate`` and the pandas
script), and write the valid records (typed) and the rejected ones (as read, with ``_reason``)
to two Parquet files. Each is a worker run in its own process; heavy imports stay inside the
workers, so that a worker's peak memory is its own work's. The driver checks that each rejects
exactly the generator's invalid records.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from typing import Any

# The pandas script's regular expression of an integer (validate's own).
INT_PATTERN = r"^[+-]?[0-9]+$"
DUCKDB_TYPES = {"int64": "BIGINT", "float64": "DOUBLE", "timestamp": "TIMESTAMPTZ"}


def _rules() -> list[tuple[str, dict[str, Any]]]:
    from benchmarks.records import SCHEMA

    return list(SCHEMA["columns"].items())


def _sql_text(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def duckdb_query(path: str) -> tuple[str, list[str], list[str]]:
    """The statement that reads ``path`` and checks it (a table ``checked`` with each column as
    read, each typed column as ``<name>__typed`` and ``_reason``, NULL when valid), the typed
    columns' select list and the raw columns' names."""
    typed, reasons, raw = [], [], []
    for name, rule in _rules():
        kind = rule.get("type", "string")
        col = f'"{name}"'
        text = f"coalesce(trim({col}), '')"
        shown = text if kind != "string" else f"coalesce({col}, '')"
        present = f"{text} <> ''"
        if kind == "int64":
            value = f"CASE WHEN regexp_full_match({text}, {_sql_text(INT_PATTERN[1:-1])}) "
            value += f"THEN TRY_CAST({text} AS BIGINT) END"
        elif kind in DUCKDB_TYPES:
            value = f"TRY_CAST({text} AS {DUCKDB_TYPES[kind]})"
        else:
            value = col
        ok = f"({present} AND ({value}) IS NOT NULL)"
        if rule.get("required"):
            reasons.append(f"CASE WHEN NOT ({present}) THEN '{name}: required value missing' END")
        reasons.append(
            f"CASE WHEN {present} AND ({value}) IS NULL THEN '{name}: not a valid {kind}' END"
        )
        if rule.get("min") is not None:
            reasons.append(
                f"CASE WHEN {ok} AND ({value}) < {rule['min']} "
                f"THEN '{name}: below minimum {rule['min']}' END"
            )
        if rule.get("pattern"):
            reason = _sql_text(f"{name}: does not match pattern {rule['pattern']}")
            reasons.append(
                f"CASE WHEN {ok} AND NOT regexp_matches({shown}, {_sql_text(rule['pattern'])}) "
                f"THEN {reason} END"
            )
        if rule.get("max_length") is not None:
            reasons.append(
                f"CASE WHEN {ok} AND length({shown}) > {rule['max_length']} "
                f"THEN '{name}: longer than {rule['max_length']} characters' END"
            )
        typed.append(f'{value} AS "{name}"')
        raw.append(col)
    reason = f"nullif(concat_ws('; ', {', '.join(reasons)}), '') AS _reason"
    query = (
        f"CREATE TABLE checked AS SELECT *, {reason} "
        f"FROM read_csv({_sql_text(path)}, all_varchar = true, header = true)"
    )
    return query, typed, raw


def worker_duckdb(task: dict[str, Any]) -> dict[str, Any]:
    """DuckDB: ``read_csv`` (every column text, quote-aware) into a table with each record's
    reasons, then ``COPY ... TO ... (FORMAT parquet)`` of the valid records (cast with
    ``TRY_CAST``) and of the rejected ones."""
    import duckdb

    out = tempfile.mkdtemp(prefix="throughput-duckdb-", dir=task.get("tmp_dir"))
    phases: dict[str, float] = {}
    try:
        started = time.perf_counter()
        con = duckdb.connect()
        con.execute(f"SET temp_directory = {_sql_text(os.path.join(out, 'spill'))}")
        query, typed, raw = duckdb_query(task["path"])
        con.execute(query)
        phases["read_and_check"] = time.perf_counter() - started
        valid_path = _sql_text(os.path.join(out, "valid.parquet"))
        rejected_path = _sql_text(os.path.join(out, "rejected.parquet"))
        con.execute(
            f"COPY (SELECT {', '.join(typed)} FROM checked WHERE _reason IS NULL) "
            f"TO {valid_path} (FORMAT parquet)"
        )
        con.execute(
            f"COPY (SELECT {', '.join(raw)}, _reason FROM checked WHERE _reason IS NOT NULL) "
            f"TO {rejected_path} (FORMAT parquet)"
        )
        seconds = time.perf_counter() - started
        phases["write"] = seconds - phases["read_and_check"]
        valid, rejected = con.execute(
            "SELECT count(*) FILTER (WHERE _reason IS NULL), "
            "count(*) FILTER (WHERE _reason IS NOT NULL) FROM checked"
        ).fetchone() or (None, None)
        reasons = con.execute(
            "SELECT _reason, count(*) AS n FROM checked WHERE _reason IS NOT NULL "
            "GROUP BY _reason ORDER BY n DESC, _reason LIMIT 20"
        ).fetchall()
        con.close()
        return {
            "seconds": seconds,
            "records": (valid or 0) + (rejected or 0),
            "valid": valid,
            "rejected": rejected,
            "phases": phases,
            "rejection_reasons": {str(k): int(v) for k, v in reasons},
        }
    finally:
        shutil.rmtree(out, ignore_errors=True)


def worker_polars(task: dict[str, Any]) -> dict[str, Any]:
    """polars: ``scan_csv(infer_schema=False)`` (every column text), the checks as expressions
    (``str.contains``, ``str.to_datetime(strict=False)``, casts with ``strict=False``), one
    ``collect``, then ``write_parquet`` of the valid records (typed) and of the rejected ones."""
    import polars as pl

    out = tempfile.mkdtemp(prefix="throughput-polars-", dir=task.get("tmp_dir"))
    phases: dict[str, float] = {}
    try:
        started = time.perf_counter()
        lf = pl.scan_csv(task["path"], infer_schema=False)
        typed, reasons = [], []
        for name, rule in _rules():
            kind = rule.get("type", "string")
            raw = pl.col(name).fill_null("")
            text = raw.str.strip_chars()
            shown = raw if kind == "string" else text
            present = text != ""
            if kind == "int64":
                value = pl.when(text.str.contains(INT_PATTERN)).then(
                    text.cast(pl.Int64, strict=False)
                )
            elif kind == "float64":
                value = text.cast(pl.Float64, strict=False)
            elif kind == "timestamp":
                value = pl.when(present).then(
                    text.str.to_datetime(strict=False, time_zone="UTC", time_unit="us")
                )
            else:
                value = pl.col(name)
            ok = present & value.is_not_null()

            def reason(mask: pl.Expr, words: str) -> pl.Expr:
                return pl.when(mask).then(pl.lit(words))

            if rule.get("required"):
                reasons.append(reason(~present, f"{name}: required value missing"))
            reasons.append(reason(present & value.is_null(), f"{name}: not a valid {kind}"))
            if rule.get("min") is not None:
                low = rule["min"]
                reasons.append(reason(ok & (value < low), f"{name}: below minimum {low}"))
            if rule.get("pattern"):
                words = f"{name}: does not match pattern {rule['pattern']}"
                reasons.append(reason(ok & ~shown.str.contains(rule["pattern"]), words))
            if rule.get("max_length") is not None:
                most = rule["max_length"]
                too_long = ok & (shown.str.len_chars() > most)
                reasons.append(reason(too_long, f"{name}: longer than {most} characters"))
            typed.append(value.alias(f"{name}__typed"))
        reason_expr = pl.concat_str(reasons, separator="; ", ignore_nulls=True)
        checked = lf.with_columns(*typed, _reason=pl.when(reason_expr != "").then(reason_expr))
        df = checked.collect()
        phases["read_and_check"] = time.perf_counter() - started
        names = [name for name, _ in _rules()]
        valid = df.filter(pl.col("_reason").is_null()).select(
            pl.col(f"{n}__typed").alias(n) for n in names
        )
        rejected = df.filter(pl.col("_reason").is_not_null()).select(*names, "_reason")
        valid.write_parquet(os.path.join(out, "valid.parquet"))
        rejected.write_parquet(os.path.join(out, "rejected.parquet"))
        seconds = time.perf_counter() - started
        phases["write"] = seconds - phases["read_and_check"]
        counts = rejected["_reason"].value_counts(sort=True).head(20)
        return {
            "seconds": seconds,
            "records": df.height,
            "valid": valid.height,
            "rejected": rejected.height,
            "phases": phases,
            "rejection_reasons": {str(k): int(v) for k, v in counts.iter_rows()},
        }
    finally:
        shutil.rmtree(out, ignore_errors=True)
