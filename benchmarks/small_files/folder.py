"""The small-files benchmark's input: a folder of ``files`` CSV files of ``records_per_file``
records each, ``benchmarks.records``' blocks cut into files in order, cached in
``data/bench/small-<files>x<records>/`` with a JSON sidecar next to the folder (its seed and
each file's number of invalid records), and written again when the sidecar does not match.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from benchmarks.records import BLOCK_RECORDS, COLUMNS, DATA_DIR, DEFAULT_SEED, generate_block

GENERATOR_VERSION = 1


@dataclass
class SmallFiles:
    """A generated folder of small CSV files and what it holds."""

    folder: str
    files: int
    records_per_file: int
    records: int
    invalid: int
    invalid_per_file: list[int]
    seed: int
    bytes: int
    generator_version: int = GENERATOR_VERSION
    seconds: float | None = None  # how long generating took (None: taken from the cache)

    def paths(self) -> list[str]:
        return [os.path.join(self.folder, _name(i, self.files)) for i in range(self.files)]


def _name(index: int, files: int) -> str:
    return f"part-{index:0{max(5, len(str(files - 1)))}d}.csv"


def small_files_folder(
    files: int, records_per_file: int, data_dir: str | os.PathLike[str] | None = None
) -> Path:
    return Path(data_dir or DATA_DIR) / f"small-{files}x{records_per_file}"


def _meta_path(folder: Path) -> Path:
    """The sidecar sits next to the folder: inside, it would be a member of the file set."""
    return folder.with_name(folder.name + ".json")


def _folder_bytes(folder: Path) -> tuple[int, int]:
    entries = list(os.scandir(folder))
    return len(entries), sum(e.stat().st_size for e in entries)


def _read_meta(folder: Path, files: int, records_per_file: int, seed: int) -> SmallFiles | None:
    meta = _meta_path(folder)
    if not (meta.exists() and folder.is_dir()):
        return None
    try:
        found = SmallFiles(**json.loads(meta.read_text()))
    except (ValueError, TypeError):
        return None
    if (
        found.generator_version != GENERATOR_VERSION
        or (found.files, found.records_per_file, found.seed) != (files, records_per_file, seed)
        or _folder_bytes(folder) != (files, found.bytes)
    ):
        return None
    found.folder, found.seconds = str(folder), None
    return found


def write_small_files(folder: Path, files: int, records_per_file: int, seed: int) -> SmallFiles:
    """Write ``files`` CSV files of ``records_per_file`` records: ``benchmarks.records``' blocks of
    ``seed`` (block ``k`` from ``default_rng([seed, k])``, ids from 1) cut into files in order.
    Written into a hidden folder renamed at the end, then the sidecar."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.csv as pacsv

    folder.parent.mkdir(parents=True, exist_ok=True)
    temp = folder.with_name(f".{folder.name}.{os.getpid()}.tmp")
    shutil.rmtree(temp, ignore_errors=True)
    temp.mkdir()
    started = time.perf_counter()
    total = files * records_per_file
    options = pacsv.WriteOptions(include_header=True, quoting_style="none")
    blocks: dict[int, tuple[pa.Table, np.ndarray]] = {}

    def block(k: int) -> tuple[pa.Table, np.ndarray]:
        if k not in blocks:
            for old in [b for b in blocks if b < k]:
                del blocks[old]
            first = k * BLOCK_RECORDS
            n = min(BLOCK_RECORDS, total - first)
            blocks[k] = generate_block(np.random.default_rng([seed, k]), first + 1, n)
        return blocks[k]

    invalid_per_file = []
    try:
        for i in range(files):
            start, end = i * records_per_file, (i + 1) * records_per_file
            tables, bad = [], 0
            for k in range(start // BLOCK_RECORDS, (end - 1) // BLOCK_RECORDS + 1):
                table, defect = block(k)
                a = max(start, k * BLOCK_RECORDS) - k * BLOCK_RECORDS
                b = min(end, (k + 1) * BLOCK_RECORDS) - k * BLOCK_RECORDS
                tables.append(table.slice(a, b - a))
                bad += int((defect[a:b] >= 0).sum())
            table = tables[0] if len(tables) == 1 else pa.concat_tables(tables)
            pacsv.write_csv(table.select(list(COLUMNS)), temp / _name(i, files), options)
            invalid_per_file.append(bad)
        shutil.rmtree(folder, ignore_errors=True)
        _meta_path(folder).unlink(missing_ok=True)
        os.replace(temp, folder)
    finally:
        shutil.rmtree(temp, ignore_errors=True)
    result = SmallFiles(
        folder=str(folder),
        files=files,
        records_per_file=records_per_file,
        records=total,
        invalid=sum(invalid_per_file),
        invalid_per_file=invalid_per_file,
        seed=seed,
        bytes=_folder_bytes(folder)[1],
        seconds=time.perf_counter() - started,
    )
    meta_temp = folder.with_name(f".{folder.name}.{os.getpid()}.json.tmp")
    meta_temp.write_text(json.dumps(asdict(result) | {"seconds": None}) + "\n")
    os.replace(meta_temp, _meta_path(folder))
    return result


def ensure_small_files(
    files: int,
    records_per_file: int,
    seed: int = DEFAULT_SEED,
    data_dir: str | os.PathLike[str] | None = None,
) -> SmallFiles:
    """The folder of ``files`` x ``records_per_file`` records of ``seed``: the cached one when
    it is there and complete, else written now."""
    folder = small_files_folder(files, records_per_file, data_dir)
    found = _read_meta(folder, files, records_per_file, seed)
    return found or write_small_files(folder, files, records_per_file, seed)
