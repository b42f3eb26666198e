"""Leads per second: the ``leads`` processor on N leads (1M) with 20% duplicates, end to end.

The input is a CRM export (``data``): N records over 0.8·N people, the duplicates written in
other spellings (e-mail case and spaces, phone formats, company suffixes, title acronyms,
industry synonyms), about 1% of the records with a broken e-mail; its counts are known, so
every run is checked exactly: records in = N, rejected = the broken e-mails, leads inserted
= the people, merged in batch = the valid records - the people (a second batch of the same
file: every lead unchanged, none inserted or updated). Each measurement is a Python process
of its own (``benchmarks.harness``: its own process group, killed after ``--timeout``, the
peak memory of its process tree polled); each runs batch 1 against a fresh lead store, then
batch 2 of the same file against the store batch 1 filled (a process each):

- ``job_mp``: ``batch-pipeline run FILE --processor leads --lead-store sqlite:///...
  --executor multiprocess --max-concurrent 2`` as a user types it (the Dagster job, a process
  per step, the CLI's start-up included);
- ``job_inproc``: the same with ``--executor in_process`` (every step in the CLI's process);
- ``core``: ``prepare_batch`` + ``run_batch`` in one process with the SQLite lead store (the
  core without Dagster: the job's overhead is the difference);
- ``core_pg``: the same with a Postgres lead store (a database of its own on 127.0.0.1:5432,
  created and dropped by the benchmark);
- ``pandas``: the baseline a user might write: ``pandas.read_csv``, the same ``rules``
  functions, ``groupby(email).last()``, an ``executemany`` upsert into SQLite. It does not
  keep per-record reasons or the records' output files, retry, resume, or make the upsert
  exactly-once across a crash.

Figures: wall seconds, leads (records) per second, peak RSS, and for our runs the ledger's
stage 1 (the chunk rows' seconds: read, standardize, shuffle) and stage 2 (the bucket rows'
seconds: merge, the store's load and save) seconds.

Run it from the repository root::

    .venv/bin/python -m benchmarks.leads                 # 1M leads (~10 min)
    .venv/bin/python -m benchmarks.leads --smoke         # 2,000 leads, SQLite only (~30 s)
    .venv/bin/python -m benchmarks.leads --records 100k --only core --profile /tmp/leads

The package: ``data`` (the generated leads), ``workers`` (the measurements), ``report`` (the
checks and the tables), ``cli`` (the options and the run).
"""

KINDS = ("job_mp", "job_inproc", "core", "core_pg", "pandas")
SMOKE_KINDS = ("job_inproc", "core", "pandas")
LABELS = {
    "job_mp": "batch-pipeline run, multiprocess x2 (Dagster)",
    "job_inproc": "batch-pipeline run, in_process (Dagster)",
    "core": "run_batch, SQLite store (no Dagster)",
    "core_pg": "run_batch, Postgres store (no Dagster)",
    "pandas": "baseline: pandas + rules + executemany upsert",
}
RECORDS = 1_000_000
SMOKE_RECORDS = 2_000
MAX_CONCURRENT = 2
