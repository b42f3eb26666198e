"""Records per second of ``batch_job`` against the practical limit, a naive loop and pandas.

For each size (``--sizes``, default ``10k,1m,10m``) a deterministic CSV is generated (or taken
from the cache, see ``benchmarks.records``) and measured, each measurement in its own Python process
(its own session and process group, killed with it after ``--timeout``):

- ``raw``: ``pyarrow.csv.read_csv`` of the whole file, all columns as they come (types
  inferred, all threads): the practical limit of reading the file; ``raw_text``: the same with
  every column read as text, which is what our reader does with each chunk. Above
  ``--raw-max`` records (20M: a 60M table would take ~18 GB) both read the file's first
  ``--raw-max`` records, held in memory, and their rate is reported as ``sampled``;
- ``naive``: the Lambda handler's way: ``csv.reader``, a dict per record and the checks that
  ``validate`` makes (strip, required, int/float/ISO timestamp parsing, min, pattern, length),
  one record at a time on one core. It writes nothing (a generous baseline). Above
  ``--naive-max`` records (2M) it runs on the first ``--naive-max`` records and its rate is
  reported as ``sampled``;
- ``pandas``: a plain whole-file pandas script doing the same processing: ``read_csv`` (text),
  vectorized checks, reasons, split valid/rejected, both written to Parquet. Skipped above
  ``--pandas-max`` (10M) records (``skipped (memory)``);
- ``passthrough`` and ``validate``: ``batch_job`` end to end through Dagster:
  ``execute_job(reconstructable(get_batch_job))`` on a fresh temporary SQLite instance, the
  default (in-process) executor and the planner's default chunking (``--chunk-records`` to
  change it), delivery ``none``, a temporary SQLite ledger. Per-chunk seconds and peak RSS come
  from the ledger; wall time is around ``execute_job``.

Peak memory of a measurement is the larger of the worker's own high-water mark (``VmHWM``) and
the resident memory of its process tree polled (psutil, every 50 ms) by this driver. Per step
(ours): the highest chunk peak RSS from the ledger (the step's process, Dagster included).

Derived per size: rates, ours/naive and ours/raw, ours vs pandas (time and peak memory), the
orchestration share ``(wall - sum of chunk seconds) / wall`` (chunks run one after another
in-process; planning's scan of the file counts as orchestration here, and the table shows it
apart) and per step ``(wall - sum of chunk seconds) / steps``. Two more cases: a 500-record
file through the whole job (cold, in a fresh process, and again warm), and
``core.planning.plan_batch`` cutting a file into 10,000 chunks.

``--repeats N`` runs each measurement N times and keeps the fastest (the machine is shared).

Correctness: every measurement must see every record; ours must count valid + rejected =
records and rejected = the generator's invalid records (passthrough: 0 rejected); the naive
loop and pandas must find the same invalid records. Otherwise the script exits 1. Goals that are
missed are reported, not failures.

Run it from the repository root::

    .venv/bin/python -m benchmarks.throughput --smoke        # 10k only, ~15 s
    .venv/bin/python -m benchmarks.throughput                # 10k, 1m, 10m: ~3 minutes
    .venv/bin/python -m benchmarks.throughput --sizes 60m    # the 60M goal (~6 GB of input)

It prints a markdown table and the goals, and writes ``benchmarks/results/throughput.json``
(``--json PATH`` elsewhere). Generated inputs stay cached in ``data/bench/`` (``--data-dir``).

The package: ``competitors`` (the raw reads, the naive loop, the pandas script), ``jobs`` (our
job end to end, and planning), ``measure`` (a size measured, counted and derived), ``report``
(the tables and the goals), ``cli`` (the options and the run); ``benchmarks.harness`` runs each
measurement in its own process. This module holds the names they share and imports nothing at
module level: every worker process imports it first.
"""

SMALL_JOB_RECORDS = 500
PLAN_CHUNKS = 10_000
KINDS = (
    "raw",
    "raw_text",
    "naive",
    "pandas",
    "duckdb",
    "polars",
    "passthrough",
    "validate",
    "cli_passthrough",
    "cli_validate",
)
PEERS = ("duckdb", "polars")
OURS = ("passthrough", "validate", "cli_passthrough", "cli_validate")
LABELS = {
    "raw": "raw Arrow read",
    "raw_text": "raw read as text",
    "naive": "naive loop",
    "pandas": "pandas",
    "duckdb": "DuckDB script",
    "polars": "polars script",
    "passthrough": "ours passthrough",
    "validate": "ours validate",
    "cli_passthrough": "CLI passthrough",
    "cli_validate": "CLI validate",
}
