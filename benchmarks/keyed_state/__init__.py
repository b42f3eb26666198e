"""Seed 002's figures for the keyed stage: ``kalman`` per user with its state in a store.

Seed 002 processed measurements per user with a Kalman filter and state in DynamoDB, with these
targets: latency < 200 ms for 10 measurements, < 1 s for 100 and < 5 s for 500 (over 5-50
users); peak memory < 512 MB; fewer than 10 store operations per 100 measurements. Two parts,
each measurement in a Python process of its own (``benchmarks.harness``: its own session and
process group, killed after ``--timeout``, its peak memory polled):

- ``core`` (no Dagster), per store: a SQLite file, a Postgres database of its own (created on
  127.0.0.1:5432 and dropped by the benchmark) and DynamoDB on a moto server (started on
  127.0.0.1 and stopped by the benchmark). For 10, 100 and 500 measurements over 5, 20 and 50
  users (no more users than measurements), a batch of them goes through ``run_batch`` (the
  local run of every stage) with the store, in one chunk and one bucket, then a second batch
  of the same users (later measurements: the bulk load finds their states). Figures: the
  bucket step (``run_bucket`` as the ledger records it: its parts read, one bulk load,
  ``kalman``, the checks, valid and rejected records written, one bulk save), the whole local
  run (``run_batch``: plan, partition, bucket, aggregate), the store's own load and save, and
  the store's operations (``store.operations``) per 100 measurements. Each combination runs
  ``--core-repeats`` + 1 times, every repetition with users of its own (a first batch finds no
  state); the first repetition is left out (the process's first pays imports and table
  creation) and the median of the others reported. Peak RSS: the worker process's, over all
  combinations of its store.
- ``job``: the whole keyed job through ``run_batch`` with the SQLite store on ``--records``
  measurements (10M) over ``--job-users`` users (records / 10), in ``--chunks`` chunks (20;
  as many buckets): wall time, records/s, peak memory, and the time of stage 1 (the
  partition, the chunk rows' seconds), of stage 2 (the buckets, the bucket rows' seconds; the
  store's load and save timed within) and the rest (plan, ledger, aggregation).

The input is a CSV (``user_id``, ``ts`` as ISO 8601 text, ``weight``) generated with numpy:
users interleaved (record ``i`` is user ``i % users``'s measurement ``i // users``, a day
apart), a weight per user with bounded noise, and one outlier (+20 kg) every ``outlier_every``
records (never a user's very first measurement, which sets its level): ``kalman``'s gate
rejects exactly those, so every batch must count records in = out + rejected = the records
written, and rejected = the outliers. The job's input goes to a temporary folder, written once
(``--data-dir`` keeps it there for the next run instead); any miscount exits 1.

Run it from the repository root::

    .venv/bin/python -m benchmarks.keyed_state               # both parts (~3 min)
    .venv/bin/python -m benchmarks.keyed_state --smoke       # core, 10 over 5, SQLite only
    .venv/bin/python -m benchmarks.keyed_state --only job --records 1m

It prints a table per part and writes ``benchmarks/results/keyed_state.json``.

The package: ``data`` (the generated measurements), ``services`` (the moto server, the
Postgres database), ``workers`` (the two measurements), ``report`` (the checks, the tables and
the targets), ``cli`` (the options and the run). This module holds what they share.
"""

KINDS = ("core", "job")
STORES = ("sqlite", "postgres", "dynamodb")
LABELS = {"sqlite": "SQLite file", "postgres": "Postgres", "dynamodb": "DynamoDB (moto server)"}
SIZES = (10, 100, 500)
USERS = (5, 20, 50)
CORE_REPEATS = 5  # timed repetitions per combination, after one left out
JOB_RECORDS = 10_000_000
JOB_CHUNKS = 20
MEASUREMENTS_PER_USER = 10  # the job's default: --job-users = records / 10
CORE_OUTLIER_EVERY = 37
JOB_OUTLIER_EVERY = 997

#: kalman's options: a gate of 4 sigma with r = 0.25 (a measurement's sd 0.5 kg).
KALMAN = {
    "key": "user_id",
    "time": "ts",
    "value": "weight",
    "process_noise": 0.01,
    "measurement_noise": 0.25,
    "gate": 4,
}

#: Seed 002's targets: latency by measurements in the batch, peak memory, operations.
LATENCY_TARGET_SECONDS = {10: 0.2, 100: 1.0, 500: 5.0}
PEAK_TARGET_BYTES = 512 * 2**20
OPS_PER_100_TARGET = 10
