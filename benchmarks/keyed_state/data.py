"""The measurements the keyed benchmark processes: a CSV of ``user_id``, ``ts`` (ISO 8601 UTC
text) and ``weight``, made with numpy and pyarrow.compute in blocks (bounded memory at any size).

Record ``i`` is user ``i % users``'s measurement ``i // users`` (users interleaved), taken at
``day0 + i // users`` days plus the user's own second of the day: a user's measurements are a
day apart, in input order. Weight: a level per user (50 to 100 kg) plus uniform noise of at
most 0.5 kg, rounded to 10 g; every ``outlier_every``-th record gains 20 kg, except a user's
first measurement ever (``fresh``: the batch is the users' first), which sets the level.

With ``KALMAN``'s options (gate 4 sigma, r = 0.25) the gate rejects every outlier and nothing
else: an innovation of a normal measurement is at most about 1 kg (the level and the
measurement are both within 0.5 kg of the truth) against a gate of at least 2 kg, an
outlier's at least 19 kg against a gate of a few kg unless the user was silent for years.

``ensure_measurements`` keeps a file in a folder with a JSON sidecar (written last), for a
``--data-dir`` that caches the job's input between runs.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

GENERATOR_VERSION = 1
BLOCK_RECORDS = 500_000
EPOCH = np.datetime64("2026-01-01T00:00:00", "s")
OUTLIER_AT = 5  # records i with i % outlier_every == OUTLIER_AT
OUTLIER_KG = 20.0
SCHEMA = pa.schema([("user_id", pa.string()), ("ts", pa.string()), ("weight", pa.float64())])


@dataclass(frozen=True)
class Measurements:
    """A generated file: its path, records, users, outliers (what the gate must reject),
    bytes and the seconds it took to write (None: it was there already)."""

    path: str
    records: int
    users: int
    outliers: int
    bytes: int
    seconds: float | None = None


def block(
    first: int,
    n: int,
    users: int,
    *,
    prefix: str = "",
    day0: int = 0,
    fresh: bool = True,
    outlier_every: int,
    seed: int,
) -> tuple[pa.Table, int]:
    """Records ``first`` to ``first + n - 1`` of a file (see the module), and their outliers."""
    i = np.arange(first, first + n, dtype=np.int64)
    user = i % users
    day = i // users
    digits = max(7, len(str(users - 1)))
    ids = pc.utf8_lpad(pc.cast(pa.array(user), pa.string()), digits, "0")
    ids = pc.binary_join_element_wise(f"{prefix}u", ids, "")
    seconds = EPOCH + (day0 + day) * 86_400 + user % 86_400
    ts = pc.strftime(pa.array(seconds, pa.timestamp("s")), format="%Y-%m-%dT%H:%M:%SZ")
    rng = np.random.default_rng([seed, first // BLOCK_RECORDS])
    weight = 50.0 + (user % 500) * 0.1 + rng.uniform(-0.5, 0.5, n)
    outlier = i % outlier_every == OUTLIER_AT
    if fresh:
        outlier &= i >= users
    weight[outlier] += OUTLIER_KG
    table = pa.table([ids, ts, np.round(weight, 2)], schema=SCHEMA)
    return table, int(outlier.sum())


def write_measurements(
    path: str | Path,
    records: int,
    users: int,
    *,
    prefix: str = "",
    day0: int = 0,
    fresh: bool = True,
    outlier_every: int,
    seed: int,
) -> Measurements:
    """Write the file (see the module) block by block; what it holds."""
    if not 1 <= users <= records:
        raise ValueError(f"{users} users for {records} records: need 1 <= users <= records")
    started = time.perf_counter()
    outliers = 0
    partial = f"{path}.partial"
    with pacsv.CSVWriter(partial, SCHEMA) as writer:
        for first in range(0, records, BLOCK_RECORDS):
            table, found = block(
                first,
                min(BLOCK_RECORDS, records - first),
                users,
                prefix=prefix,
                day0=day0,
                fresh=fresh,
                outlier_every=outlier_every,
                seed=seed,
            )
            writer.write_table(table)
            outliers += found
    os.replace(partial, path)
    return Measurements(
        str(path), records, users, outliers, os.path.getsize(path), time.perf_counter() - started
    )


def ensure_measurements(
    folder: str | Path, records: int, users: int, *, outlier_every: int, seed: int
) -> Measurements:
    """The file of ``records`` over ``users`` in ``folder``: the one there when its sidecar
    says it is this one, else written (the sidecar last)."""
    os.makedirs(folder, exist_ok=True)
    path = Path(folder) / f"keyed-{records}x{users}-every{outlier_every}-seed{seed}.csv"
    sidecar = path.with_suffix(".json")
    with_version = {"generator_version": GENERATOR_VERSION}
    if path.exists() and sidecar.exists():
        meta = json.loads(sidecar.read_text())
        if meta.pop("generator_version", None) == GENERATOR_VERSION and meta.get(
            "bytes"
        ) == os.path.getsize(path):
            return Measurements(**(meta | {"path": str(path), "seconds": None}))
    made = write_measurements(path, records, users, outlier_every=outlier_every, seed=seed)
    sidecar.write_text(json.dumps(asdict(made) | with_version) + "\n")
    return made
