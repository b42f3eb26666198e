"""Deterministic benchmark input: a CSV of N records, with a known number of invalid ones.

Columns: ``record_id, user_id, created_at, email, phone, amount, first_name, last_name``
(ISO 8601 UTC timestamps, dollar amounts with cents, ``+1-555-NNNNNNN`` phones, about 5% of
them empty). About ``INVALID_FRACTION`` (3%) of the records break :data:`SCHEMA` (the
``validate`` processor's options) in exactly one way each: an e-mail without ``@``, a missing
e-mail, a negative amount, an amount that is not a number, a timestamp that is not one, a date
that does not exist (Feb 30), a missing first name, a user id that is not an integer, a phone
that is not one. Every other record is valid, so the number of records ``validate`` rejects is
known exactly: :func:`ensure_records` returns it.

Records are built in blocks of ``BLOCK_RECORDS`` (500k) with vectorized numpy and
pyarrow.compute (no Python loop per record) and appended to the file block by block, so any size
can be written in bounded memory (about 0.2 GB): 60M records (~6 GB) at several million records
per second. Block ``k`` of seed ``s`` draws from ``numpy.random.default_rng([s, k])``: the same
size and seed give the same bytes on every machine with the same numpy and pyarrow.

Files are cached in a data folder (default ``data/bench/``), named by size and seed, with a JSON
sidecar (records, invalid records, bytes, generator version) written last: a file without its
sidecar, or of another generator version or size, is written again.

Command line (from the repository root)::

    .venv/bin/python -m benchmarks.records OUT.csv --records 1m [--seed 7]
    .venv/bin/python -m benchmarks.records --records 10m        # into data/bench/ (cached)
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from batch_pipeline.core.inputs import sample_data

GENERATOR_VERSION = 1
BLOCK_RECORDS = 500_000
DEFAULT_SEED = 7
INVALID_FRACTION = 0.03
EMPTY_PHONE_FRACTION = 0.05  # phone is optional: empty phones are valid
DATA_DIR = Path(__file__).resolve().parent.parent / "data" / "bench"
COLUMNS = (
    "record_id",
    "user_id",
    "created_at",
    "email",
    "phone",
    "amount",
    "first_name",
    "last_name",
)

EMAIL_PATTERN = r"^[^@\s]+@[^@\s]+\.[a-z]{2,}$"
PHONE_PATTERN = r"^\+?[0-9][0-9 ().-]{6,}$"

#: The ``validate`` processor's options matching the generated records.
SCHEMA: dict[str, Any] = {
    "columns": {
        "record_id": {"type": "int64", "required": True, "min": 1},
        "user_id": {"type": "int64", "required": True, "min": 1},
        "created_at": {"type": "timestamp", "required": True},
        "email": {"type": "string", "required": True, "pattern": EMAIL_PATTERN},
        "phone": {"type": "string", "pattern": PHONE_PATTERN},
        "amount": {"type": "float64", "required": True, "min": 0},
        "first_name": {"type": "string", "required": True, "max_length": 100},
        "last_name": {"type": "string", "required": True, "max_length": 100},
    },
    "extra_columns": "keep",
}

# The demo's names (sample_data) and more, so that names repeat less in big files.
FIRST = [
    *sample_data.FIRST,
    "Donald",
    "Leslie",
    "Shafi",
    "Whitfield",
    "Martin",
    "Adele",
    "Jean",
    "Fran",
    "Ivan",
    "Judea",
    "Yukihiro",
    "Bjarne",
    "Anders",
    "James",
    "Rasmus",
    "Larry",
    "Brendan",
    "Roberto",
    "Xavier",
    "Mary",
    "Lynn",
    "Evelyn",
]
LAST = [
    *sample_data.LAST,
    "Wilson",
    "Wirth",
    "Knuth",
    "Lamport",
    "Goldwasser",
    "Diffie",
    "Hellman",
    "Goldberg",
    "Sammet",
    "Sutherland",
    "Pearl",
    "Matsumoto",
    "Stroustrup",
    "Hejlsberg",
    "Gosling",
    "Lerdorf",
    "Wall",
    "Eich",
    "Ierusalimschy",
    "Leroy",
    "Keller",
    "Conway",
    "Boole",
]
DOMAINS = ("example.com", "mail.example.org", "corp.example.net", "example.co.uk")

# Ways a record is invalid (exactly one per invalid record).
DEFECTS = (
    "email_no_at",
    "email_missing",
    "amount_negative",
    "amount_not_number",
    "created_at_garbage",
    "created_at_impossible",
    "first_name_missing",
    "user_id_not_int",
    "phone_garbage",
)
T0 = 1_577_836_800  # 2020-01-01T00:00:00Z
T1 = 1_767_225_600  # 2026-01-01T00:00:00Z


@dataclass
class RecordsFile:
    """A generated benchmark file and what it holds."""

    path: str
    records: int
    invalid: int
    seed: int
    bytes: int
    generator_version: int = GENERATOR_VERSION
    invalid_by_defect: dict[str, int] | None = None
    seconds: float | None = None  # how long generating it took (None: taken from the cache)

    @property
    def valid(self) -> int:
        return self.records - self.invalid


def parse_size(text: str) -> int:
    """``500``, ``10k``, ``1m``, ``1.5m``, ``2g``, ``60_000_000`` -> a record count."""
    value = text.strip().lower().replace("_", "").replace(",", "")
    scale = {"k": 1_000, "m": 1_000_000, "g": 1_000_000_000}.get(value[-1:], 1)
    if scale != 1:
        value = value[:-1]
    number = float(value) * scale
    if number < 0 or number != int(number):
        raise ValueError(f"not a record count: {text!r}")
    return int(number)


def size_label(records: int) -> str:
    """The short name of a size: 10k, 1m, 60m, 500, 1.5m."""
    for scale, suffix in ((1_000_000_000, "g"), (1_000_000, "m"), (1_000, "k")):
        if records >= scale and records % (scale // 10) == 0:
            value = records / scale
            return f"{value:g}{suffix}"
    return str(records)


def _str(values: np.ndarray) -> pa.Array:
    return pc.cast(pa.array(values), pa.string())


def _join(*parts: Any) -> pa.Array:
    return pc.binary_join_element_wise(*parts, "")


def generate_block(rng: np.random.Generator, first_id: int, n: int) -> tuple[pa.Table, np.ndarray]:
    """``n`` records with ids from ``first_id``, as a table of strings, and the defect of each
    record (-1: valid; else an index into ``DEFECTS``)."""
    ids = np.arange(first_id, first_id + n, dtype=np.int64)
    record_id = _str(ids)
    user_id = _str(rng.integers(1, 5_000_000, n))
    stamps = pa.array(rng.integers(T0, T1, n), type=pa.timestamp("s"))
    created_at = _join(
        pc.replace_substring(pc.cast(stamps, pa.string()), " ", "T", max_replacements=1), "Z"
    )
    first_idx = rng.integers(0, len(FIRST), n)
    last_idx = rng.integers(0, len(LAST), n)
    first_name = pa.array(FIRST).take(pa.array(first_idx))
    last_name = pa.array(LAST).take(pa.array(last_idx))
    local_first = pa.array([f.lower() for f in FIRST]).take(pa.array(first_idx))
    local_last = pa.array([x.lower() for x in LAST]).take(pa.array(last_idx))
    domain = pa.array(DOMAINS).take(pa.array(rng.integers(0, len(DOMAINS), n)))
    email = _join(local_first, ".", local_last, record_id, "@", domain)
    phone = _join("+1-555-", _str(rng.integers(1_000_000, 10_000_000, n)))
    phone = pc.if_else(pa.array(rng.random(n) < EMPTY_PHONE_FRACTION), "", phone)
    cents = np.minimum(np.round(rng.gamma(2.0, 90_000.0, n)), 99_999_999).astype(np.int64)
    amount = _join(_str(cents // 100), ".", pc.utf8_lpad(_str(cents % 100), 2, "0"))

    defect = np.full(n, -1, dtype=np.int8)
    bad = np.flatnonzero(rng.random(n) < INVALID_FRACTION)
    defect[bad] = rng.integers(0, len(DEFECTS), bad.size)
    columns = {
        "record_id": record_id,
        "user_id": user_id,
        "created_at": created_at,
        "email": email,
        "phone": phone,
        "amount": amount,
        "first_name": first_name,
        "last_name": last_name,
    }

    def replace(column: str, kind: str, make: Any) -> None:
        mask = defect == DEFECTS.index(kind)
        if mask.any():
            current = columns[column]
            values = make(current.filter(pa.array(mask)))
            columns[column] = pc.replace_with_mask(current, pa.array(mask), values)

    def const(text: str) -> Any:
        return lambda old: pa.array([text] * len(old), type=pa.string())

    replace("email", "email_no_at", lambda old: pc.replace_substring(old, "@", " at "))
    replace("email", "email_missing", const(""))
    replace("amount", "amount_negative", lambda old: _join("-", old))
    replace("amount", "amount_not_number", const("n/a"))
    replace("created_at", "created_at_garbage", const("not a date"))
    replace("created_at", "created_at_impossible", const("2024-02-30T10:00:00Z"))
    replace("first_name", "first_name_missing", const(""))
    replace("user_id", "user_id_not_int", lambda old: _join("u-", old))
    replace("phone", "phone_garbage", const("call me"))
    return pa.table(columns), defect


def invalid_in_first(records: int, file_records: int, seed: int = DEFAULT_SEED) -> int:
    """How many of the first ``records`` records of the ``file_records``-record file of
    ``seed`` are invalid (for a sample of a file). Generates those blocks, writes nothing."""
    invalid = 0
    for block, first in enumerate(range(0, min(records, file_records), BLOCK_RECORDS)):
        size = min(BLOCK_RECORDS, file_records - first)  # the block as the file has it
        _, defect = generate_block(np.random.default_rng([seed, block]), first + 1, size)
        invalid += int((defect[: records - first] >= 0).sum())
    return invalid


def _meta_path(path: Path) -> Path:
    return path.with_name(path.name + ".json")


def _read_meta(path: Path, records: int, seed: int) -> RecordsFile | None:
    meta = _meta_path(path)
    if not (meta.exists() and path.exists()):
        return None
    try:
        data = json.loads(meta.read_text())
        found = RecordsFile(**data)
    except (ValueError, TypeError):
        return None
    if (
        found.generator_version != GENERATOR_VERSION
        or found.records != records
        or found.seed != seed
        or found.bytes != path.stat().st_size
    ):
        return None
    found.path, found.seconds = str(path), None
    return found


def write_records(
    path: str | os.PathLike[str], records: int, seed: int = DEFAULT_SEED
) -> RecordsFile:
    """Write ``records`` records to ``path`` (through a temporary file renamed at the end) and
    its JSON sidecar; returns what was written."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    temp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    started = time.perf_counter()
    invalid = 0
    by_defect = np.zeros(len(DEFECTS), dtype=np.int64)
    schema = pa.schema([(name, pa.string()) for name in COLUMNS])
    options = pacsv.WriteOptions(include_header=True, quoting_style="none")
    starts = range(0, records, BLOCK_RECORDS)

    def make(block: int) -> tuple[pa.Table, np.ndarray]:
        first = starts[block]
        n = min(BLOCK_RECORDS, records - first)
        return generate_block(np.random.default_rng([seed, block]), first + 1, n)

    # numpy's generators and pyarrow's kernels release the GIL: blocks are built on a few
    # threads while the previous ones are written, in order, with a bounded number in flight.
    workers = max(1, min(4, os.cpu_count() or 1))
    try:
        with (
            pacsv.CSVWriter(str(temp), schema, write_options=options) as writer,
            ThreadPoolExecutor(workers) as pool,
        ):
            if records == 0:
                writer.write_table(schema.empty_table())
            pending: deque[Future[tuple[pa.Table, np.ndarray]]] = deque()
            next_block = 0
            while next_block < len(starts) or pending:
                while next_block < len(starts) and len(pending) <= workers:
                    pending.append(pool.submit(make, next_block))
                    next_block += 1
                table, defect = pending.popleft().result()
                writer.write_table(table)
                flagged = defect[defect >= 0]
                invalid += int(flagged.size)
                by_defect += np.bincount(flagged, minlength=len(DEFECTS))
        os.replace(temp, target)
    finally:
        temp.unlink(missing_ok=True)
    result = RecordsFile(
        path=str(target),
        records=records,
        invalid=invalid,
        seed=seed,
        bytes=target.stat().st_size,
        invalid_by_defect={k: int(v) for k, v in zip(DEFECTS, by_defect, strict=True)},
        seconds=time.perf_counter() - started,
    )
    meta = {k: v for k, v in asdict(result).items() if k not in ("path", "seconds")}
    meta_temp = _meta_path(temp)
    meta_temp.write_text(json.dumps(meta | {"path": str(target)}, indent=1) + "\n")
    os.replace(meta_temp, _meta_path(target))
    return result


def cached_path(
    records: int, seed: int = DEFAULT_SEED, data_dir: str | os.PathLike[str] | None = None
) -> Path:
    return Path(data_dir or DATA_DIR) / f"records-{size_label(records)}-seed{seed}.csv"


def ensure_records(
    records: int,
    seed: int = DEFAULT_SEED,
    data_dir: str | os.PathLike[str] | None = None,
    path: str | os.PathLike[str] | None = None,
) -> RecordsFile:
    """The benchmark file of ``records`` records and ``seed``: the cached one when it is there
    and complete, else written now."""
    target = Path(path) if path else cached_path(records, seed, data_dir)
    return _read_meta(target, records, seed) or write_records(target, records, seed)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.records", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("out", nargs="?", help="CSV to write (default: the cache in --data-dir)")
    parser.add_argument("--records", required=True, help="how many: 500, 10k, 1m, 60m...")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
    parser.add_argument("--data-dir", default=str(DATA_DIR), help="cache folder (no OUT given)")
    parser.add_argument("--force", action="store_true", help="write it even if cached")
    parser.add_argument("--schema", help="also write the validate options (JSON) here")
    args = parser.parse_args(argv)
    try:
        records = parse_size(args.records)
    except ValueError as exc:
        parser.error(str(exc))
    target = Path(args.out) if args.out else cached_path(records, args.seed, args.data_dir)
    if args.force:
        made = write_records(target, records, args.seed)
    else:
        made = ensure_records(records, args.seed, path=target)
    if args.schema:
        Path(args.schema).write_text(json.dumps(SCHEMA, indent=1) + "\n")
    how = "cached" if made.seconds is None else f"written in {made.seconds:.1f}s"
    rate = f" ({made.records / made.seconds:,.0f} records/s)" if made.seconds else ""
    print(
        f"{made.path}: {made.records:,} records, {made.invalid:,} invalid, "
        f"{made.bytes / 1e6:,.1f} MB, {how}{rate}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
