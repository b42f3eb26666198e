"""Many small files: one ``batch_job`` run per file against one file-set run over the folder.

A folder of ``--files`` CSV files of ``--records-per-file`` records each (default 2,000 x 500 =
1M records; ``--smoke``: 100 x 100) is generated deterministically with ``benchmarks.records``'
blocks (the files, concatenated, hold the same records as ``records-<N>-seed<S>.csv``), cached
in ``data/bench/small-<files>x<records>/`` with a JSON sidecar next to the folder, and measured,
each measurement in its own Python process (its own session and process group, killed with it
after ``--timeout``; ``benchmarks.harness`` and ``benchmarks.throughput``'s workers):

- ``raw``: ``pyarrow.csv.read_csv`` of every file, every column as text, ``--raw-threads``
  files at a time (as a file-set chunk reads its files): the practical limit;
- ``per_file``: ``batch_job`` with ``validate``, one run per file (what the nightly schedule
  cost before file sets: one run and one ``process_chunk`` step per object), for the first
  ``--per-file`` files, one after another on one temporary SQLite instance in one warm
  process. The first run (cold) is left out of the rate when there are more; the rate is
  reported as ``sampled`` and extrapolated to every file. A lower bound of the real cost: the
  daemon's run launcher starts a process per run (imports included), which is not counted;
- ``file_set``: one ``batch_job`` run with ``validate`` whose source is the folder (a file set,
  the planner's default chunking or ``--chunk-records``): wall time, records/s, Dagster steps,
  ``process_chunk`` steps and peak RSS (``benchmarks.throughput.jobs.worker_job``);
- ``file_set_passthrough``: the same with ``passthrough``.

Our runs: ``execute_job(reconstructable(get_batch_job))``, the in-process executor, delivery
``none``, a temporary SQLite instance and ledger per measurement. Peak memory: the larger of the
worker's ``VmHWM`` and its process tree polled every 50 ms.

Derived: records/s of each, ``file_set / per_file`` (the speed-up of file sets; from the
extrapolated per-file time), ``file_set / raw``, and steps. Correctness: every measurement must
see every record it reads; the file-set runs must count valid + rejected = records and reject
exactly the generator's invalid records (passthrough: none); the per-file runs must do the same
for their files. Otherwise the script exits 1.

Run it from the repository root::

    .venv/bin/python -m benchmarks.small_files --smoke     # 100 files x 100 records
    .venv/bin/python -m benchmarks.small_files             # 2,000 files x 500 records

It prints a markdown table and writes ``benchmarks/results/small_files.json`` (``--json PATH``
elsewhere).

The package: ``folder`` (the generated input), ``workers`` (the raw reads and the run per file),
``measure`` (each kind measured, checked and derived), ``report`` (the table), ``cli`` (the
options and the run). This module holds the names they share.
"""

KINDS = ("raw", "per_file", "file_set", "file_set_passthrough")
LABELS = {
    "raw": "raw Arrow read (text)",
    "per_file": "per_file: a run per file",
    "file_set": "file_set: one run (validate)",
    "file_set_passthrough": "file_set: one run (passthrough)",
}
DEFAULTS = {"files": 2_000, "records_per_file": 500, "per_file": 40}
SMOKE = {"files": 100, "records_per_file": 100, "per_file": 5}
