"""What ``batch_job`` is measured against, each a worker run in its own process: the raw Arrow
reads of the file (the practical limit), the Lambda handler's naive per-record loop and a plain
whole-file pandas script, the last two checking the records as ``validate`` does with
``benchmarks.records.SCHEMA``. Heavy imports stay inside the workers, so that a worker's peak
memory is its own work's.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from typing import Any


def _prefix(path: str, records: int) -> bytes:
    """The header and the first ``records`` lines of a generated file (no quoted line breaks)."""
    import numpy as np

    chunks, lines = [], -1  # the header is not a record
    with open(path, "rb") as f:
        while block := f.read(64 << 20):
            breaks = np.flatnonzero(np.frombuffer(block, dtype=np.uint8) == 10)
            if lines + breaks.size >= records:
                chunks.append(block[: int(breaks[records - lines - 1]) + 1])
                break
            chunks.append(block)
            lines += int(breaks.size)
    return b"".join(chunks)


def worker_raw(task: dict[str, Any]) -> dict[str, Any]:
    """``read_csv`` of the whole file: types inferred (``raw``), or every column as text, as
    our reader reads a chunk (``raw_text``). With ``limit``: of the file's first ``limit``
    records, read into memory first (untimed), so that a huge file's table fits."""
    import io

    import pyarrow as pa
    import pyarrow.csv as pacsv

    convert = pacsv.ConvertOptions()
    if task["kind"] == "raw_text":
        with open(task["path"], encoding="utf-8") as f:
            names = f.readline().strip().replace('"', "").split(",")
        convert = pacsv.ConvertOptions(
            column_types=dict.fromkeys(names, pa.string()),
            strings_can_be_null=False,
            quoted_strings_can_be_null=False,
        )
    source: Any = task["path"]
    if task.get("limit") is not None:
        source = io.BytesIO(_prefix(task["path"], task["limit"]))
    started = time.perf_counter()
    table = pacsv.read_csv(source, convert_options=convert)
    seconds = time.perf_counter() - started
    return {
        "seconds": seconds,
        "records": table.num_rows,
        "columns": table.num_columns,
        "sampled": task.get("limit") is not None,
    }


def _naive_rules() -> list[tuple[str, dict[str, Any]]]:
    from benchmarks.records import SCHEMA

    return list(SCHEMA["columns"].items())


def worker_naive(task: dict[str, Any]) -> dict[str, Any]:
    """The Lambda handler's loop: a dict per record, every rule of the schema checked in Python.
    Same rules and reasons as ``validate``; nothing is written."""
    import csv
    import itertools
    import re
    from collections import Counter
    from datetime import datetime

    int_re = re.compile(r"^[+-]?[0-9]+$")
    float_re = re.compile(r"^[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?$")
    rules = []
    for name, rule in _naive_rules():
        pattern = re.compile(rule["pattern"]) if rule.get("pattern") else None
        kind, required = rule.get("type", "string"), rule.get("required", False)
        low, high, max_length = rule.get("min"), rule.get("max"), rule.get("max_length")
        rules.append((name, kind, required, low, high, pattern, max_length))

    limit = task.get("limit")
    valid = rejected = 0
    reasons: Counter[str] = Counter()
    started = time.perf_counter()
    with open(task["path"], newline="", encoding="utf-8") as f:
        reader = csv.reader(f)
        header = next(reader)
        for row in itertools.islice(reader, limit):
            record = dict(zip(header, row, strict=False))
            typed: dict[str, Any] = {}
            problems: list[str] = []
            for name, kind, required, low, high, pattern, max_length in rules:
                value = record.get(name)
                text = value.strip() if value is not None else ""
                if not text:
                    if required:
                        problems.append(f"{name}: required value missing")
                    typed[name] = None
                    continue
                converted: Any = value
                if kind == "int64":
                    converted = int(text) if int_re.match(text) else None
                elif kind == "float64":
                    converted = float(text) if float_re.match(text) else None
                elif kind == "timestamp":
                    try:
                        converted = datetime.fromisoformat(text)
                    except ValueError:
                        converted = None
                if converted is None:
                    problems.append(f"{name}: not a valid {kind}")
                    continue
                if low is not None and converted < low:
                    problems.append(f"{name}: below minimum {low}")
                if high is not None and converted > high:
                    problems.append(f"{name}: above maximum {high}")
                shown = value if kind == "string" else text
                if pattern is not None and not pattern.search(shown):
                    problems.append(f"{name}: does not match pattern {pattern.pattern}")
                if max_length is not None and len(shown) > max_length:
                    problems.append(f"{name}: longer than {max_length} characters")
                typed[name] = converted
            if problems:
                rejected += 1
                reasons["; ".join(problems)] += 1
            else:
                valid += 1
    seconds = time.perf_counter() - started
    return {
        "seconds": seconds,
        "records": valid + rejected,
        "valid": valid,
        "rejected": rejected,
        "sampled": limit is not None,
        "rejection_reasons": dict(reasons.most_common(20)),
    }


def worker_pandas(task: dict[str, Any]) -> dict[str, Any]:
    """A plain whole-file pandas script: read, vectorized checks, split, write Parquet."""
    import numpy as np
    import pandas as pd

    rules = _naive_rules()
    out = tempfile.mkdtemp(prefix="throughput-pandas-", dir=task.get("tmp_dir"))
    phases: dict[str, float] = {}
    try:
        started = time.perf_counter()
        df = pd.read_csv(task["path"], dtype=str, keep_default_na=False, na_filter=False)
        phases["read"] = time.perf_counter() - started
        n = len(df)
        checks: list[tuple[np.ndarray, str]] = []
        typed: dict[str, Any] = {}
        for name, rule in rules:
            kind = rule.get("type", "string")
            raw = df[name]
            text = raw.str.strip()
            present = (text != "").to_numpy(dtype=bool)
            if kind == "int64":
                whole = text.str.fullmatch(r"[+-]?[0-9]+").to_numpy(dtype=bool)
                values = pd.to_numeric(text.where(whole), errors="coerce").astype("Int64")
            elif kind == "float64":
                values = pd.to_numeric(text.where(present), errors="coerce")
            elif kind == "timestamp":
                values = pd.to_datetime(text, format="ISO8601", utc=True, errors="coerce")
            else:
                values = raw
            converted = values.notna().to_numpy(dtype=bool)
            if rule.get("required"):
                checks.append((~present, f"{name}: required value missing"))
            bad = present & ~converted
            checks.append((bad, f"{name}: not a valid {kind}"))
            ok = present & converted
            if rule.get("min") is not None:
                below = (values < rule["min"]).fillna(False).to_numpy(dtype=bool)
                checks.append((below & ok, f"{name}: below minimum {rule['min']}"))
            shown = raw if kind == "string" else text
            if rule.get("pattern"):
                match = shown.str.contains(rule["pattern"], regex=True).to_numpy(dtype=bool)
                checks.append((~match & ok, f"{name}: does not match pattern {rule['pattern']}"))
            if rule.get("max_length") is not None:
                long = (shown.str.len() > rule["max_length"]).to_numpy(dtype=bool)
                checks.append((long & ok, f"{name}: longer than {rule['max_length']} characters"))
            typed[name] = values
        reject = np.zeros(n, dtype=bool)
        for mask, _ in checks:
            reject |= mask
        rows = np.flatnonzero(reject)
        reason = pd.Series([""] * rows.size, dtype=object)
        for mask, text in checks:
            hit = mask[rows]
            if hit.any():
                sep = np.where(reason.to_numpy() == "", "", "; ")
                reason = reason.where(~hit, reason + sep + text)
        valid = pd.DataFrame({name: col[~reject] for name, col in typed.items()})
        rejected = df.iloc[rows].assign(_reason=reason.to_numpy(), _record=rows)
        phases["checks"] = time.perf_counter() - started - phases["read"]
        valid.to_parquet(os.path.join(out, "valid.parquet"), index=False)
        rejected.to_parquet(os.path.join(out, "rejected.parquet"), index=False)
        seconds = time.perf_counter() - started
        phases["write"] = seconds - phases["read"] - phases["checks"]
        reasons = rejected["_reason"].value_counts().head(20)
        return {
            "seconds": seconds,
            "records": n,
            "valid": len(valid),
            "rejected": len(rejected),
            "phases": phases,
            "rejection_reasons": {str(k): int(v) for k, v in reasons.items()},
        }
    finally:
        shutil.rmtree(out, ignore_errors=True)
