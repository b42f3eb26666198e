"""Records per second of ``batch_job`` and ``batch-pipeline run`` against the practical limit, a
naive loop, pandas, and the DuckDB and polars scripts a user would write (issue 16).

For each size (``--sizes``, default ``10k,1m,10m``; ``make bench``: ``10m,60m``) a deterministic
CSV is generated (or taken from the cache, see ``benchmarks.records``) and measured, each
measurement in its own Python process (its own session and process group, killed with it after
``--timeout``). The kinds (``--kinds``/``--only``, default all):

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
- ``duckdb`` and ``polars`` (the peers, ``peers``): the script a competent user writes, ~20
  lines each, for the same work: DuckDB ``read_csv(all_varchar = true)`` into a table with
  each record's reasons (``TRY_CAST``, ``regexp_full_match``/``regexp_matches``, length and
  minimum checks), then two ``COPY ... TO (FORMAT parquet)``; polars ``scan_csv(infer_schema=
  False)`` with the checks as expressions (``str.contains``, ``str.to_datetime(strict=False)``,
  casts with ``strict=False``), one ``collect``, two ``write_parquet``. Timed from the
  connection / scan to the second file written. A peer whose process tree passes
  ``--peer-memory-limit`` (16g) resident is killed and reported ``stopped (memory)`` with the
  seconds and memory where it stopped; after ``--peer-timeout`` (900 s) it is reported
  ``timeout``; neither fails the benchmark;
- ``passthrough`` and ``validate``: ``batch_job`` end to end through Dagster:
  ``execute_job(reconstructable(get_batch_job))`` on a fresh temporary SQLite instance, the
  default (in-process) executor and the planner's default chunking (``--chunk-records`` to
  change it), delivery ``none``, a temporary SQLite ledger. Per-chunk seconds and peak RSS come
  from the ledger; wall time is around ``execute_job`` (the worker's imports not included);
- ``cli_passthrough`` and ``cli_validate``: our CLI, cold, as the user runs it: a worker starts
  ``batch-pipeline run FILE --processor validate --processor-options @schema.json --deliver
  none --output TMP --batch-id bench --json --no-progress`` (the console script beside the
  venv's Python, with this checkout first on ``PYTHONPATH``; the schema file written from
  ``benchmarks.records.SCHEMA``), without ``DAGSTER_HOME`` (an in-memory instance) and with a
  temporary SQLite ledger through ``BATCH_PIPELINE_LEDGER_URL``. Wall time is from spawn to
  exit (interpreter start-up, imports, pre-checks and Dagster included); peak memory is the
  CLI's process tree (polled every 20 ms, and its ``ru_maxrss``), not the worker's; records
  in/out/rejected come from the run's JSON summary, chunk seconds and peaks from the ledger.

Peak memory of a measurement is the larger of the worker's own high-water mark (``VmHWM``) and
the resident memory of its process tree polled (psutil, every 50 ms) by this driver. Per step
(ours): the highest chunk peak RSS from the ledger (the step's process, Dagster included).

Derived per size: rates, ours/naive and ours/raw (in-process and CLI), ours vs pandas (time
and peak memory), ours (the CLI if measured) against the faster peer's rate and the peers' peak
memory (for a peer stopped at the memory limit or timed out: bounds, its rate up to where it
stopped and its memory then), the orchestration share ``(wall - sum of chunk seconds) / wall``
(chunks run one after another in-process; planning's scan of the file counts as orchestration
here, and so do the CLI's start-up and imports) and per step ``(wall - sum of chunk seconds) /
steps`` (in-process only: the CLI keeps no event log). Three more cases: a 500-record file
through the whole job (cold, in a fresh process, and again warm) and through ``batch-pipeline
run`` (``small_cli``: a cold process, spawn to exit), and ``core.planning.plan_batch`` cutting a
file into 10,000 chunks.

``--repeats N`` runs each measurement N times and keeps the fastest (the machine is shared).

Correctness: every measurement must see every record; ours (in-process and CLI) must count
valid + rejected = records and rejected = the generator's invalid records (passthrough: 0
rejected); the naive loop, pandas, DuckDB and polars must find the same invalid records (and
give them the pandas script's reasons). Otherwise the script exits 1. Goals that are missed are
reported, not failures.

Run it from the repository root::

    .venv/bin/python -m benchmarks.throughput --smoke        # 10k only, ~30 s
    .venv/bin/python -m benchmarks.throughput                # 10k, 1m, 10m: ~6 minutes
    .venv/bin/python -m benchmarks.throughput --sizes 10m,60m --kinds all   # make bench:
                                         # ~10 minutes (+70 s to generate ~8 GB of input)

It prints a markdown table and the goals, and writes ``benchmarks/results/throughput.json``
(``--json PATH`` elsewhere). Generated inputs stay cached in ``data/bench/`` (``--data-dir``).

The package: ``competitors`` (the raw reads, the naive loop, the pandas script), ``peers`` (the
DuckDB and polars scripts), ``jobs`` (our job end to end in process and through the CLI, and
planning), ``measure`` (a size measured, counted and derived), ``report``
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
