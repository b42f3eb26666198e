"""The command line: ``batch-pipeline``'s subcommands and their flags (argparse)."""

import argparse

from batch_pipeline.cli.run_config import OPTIONS_FLAG


def _positive(value: str) -> float:
    number = float(value)
    if not number > 0:
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds, not {value}")
    return number


def _add_execution_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--executor", default="in_process", choices=["in_process", "multiprocess"])
    parser.add_argument(
        "--max-concurrent",
        type=int,
        default=None,
        help="steps at once with --executor multiprocess (default: CPU count)",
    )
    parser.add_argument(
        "--ledger",
        help="ledger URL (default: BATCH_PIPELINE_LEDGER_URL, else SQLite in DAGSTER_HOME); "
        "handed to the run through the environment, never stored in the run's config",
    )
    parser.add_argument("--json", action="store_true", help="end with one JSON line on stdout")
    parser.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="draw a bar of chunks done / total on stderr (default: when stderr is a terminal)",
    )
    parser.add_argument("--verbose", "-v", action="store_true", help="show Dagster's INFO logs")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="batch-pipeline", description="Process big record files in parallel chunks."
    )
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run batch_job on a source file (again: resume it)")
    run.add_argument(
        "source",
        help="local path or s3://bucket/key; a folder or s3://bucket/prefix/ is a file set "
        "(its small files processed as one batch, whole files grouped into chunks)",
    )
    run.add_argument(
        "--format", default="auto", choices=["auto", "csv", "jsonl", "json", "parquet", "excel"]
    )
    run.add_argument("--compression", default="auto", choices=["auto", "none", "gzip"])
    run.add_argument("--delimiter", default=",", help="CSV delimiter (, ; | tab space)")
    run.add_argument("--no-header", action="store_true", help="the CSV has no header row")
    run.add_argument("--column-names", help="comma-separated CSV column names")
    run.add_argument("--json-records-path", default="item")
    run.add_argument("--sheet", action="append", dest="sheets", help="Excel sheet (repeatable)")
    run.add_argument("--processor", default="passthrough")
    run.add_argument(
        OPTIONS_FLAG,
        default=None,
        help="a JSON or YAML object, inline or @FILE (.json, .yaml, .yml)",
    )
    run.add_argument(
        "--processor-module",
        action="append",
        dest="processor_modules",
        default=[],
        help="module that registers a custom processor (repeatable)",
    )
    run.add_argument("--chunk-records", type=int, default=500_000)
    run.add_argument("--max-chunks", type=int, default=200)
    run.add_argument(
        "--auto-chunk-records",
        action="store_true",
        help="pick the chunk size from the ledger's history of similar batches "
        "(--chunk-records is the cold-start size)",
    )
    run.add_argument("--chunk-bytes", type=int, default=None)
    run.add_argument(
        "--no-scan",
        action="store_true",
        help="plan CSV/JSONL by byte estimates instead of reading the file once",
    )
    run.add_argument("--output", default="output", help="local folder or s3://bucket/prefix")
    run.add_argument(
        "--deliver", default="local", help="local, none, sqs://QUEUE_NAME or a queue URL"
    )
    run.add_argument("--records-per-message", type=int, default=100)
    run.add_argument("--batch-id")
    for name in ("customer-id", "tenant-id", "deployment", "snapshot-id"):
        run.add_argument(f"--{name}")
    run.add_argument("--max-retries", type=int, default=3, help="retries of transient failures")
    run.add_argument("--retry-delay", type=float, default=1.0, help="first retry delay (s)")
    run.add_argument("--retry-max-delay", type=float, default=30.0, help="longest delay (s)")
    run.add_argument("--tolerated-failure-count", type=int, default=None)
    run.add_argument("--tolerated-failure-percentage", type=float, default=None)
    run.add_argument("--dead-letter-queue", help="also send dead letters to this SQS queue")
    run.add_argument(
        "--force", action="store_true", help="process every chunk again (nothing is re-sent)"
    )
    run.add_argument(
        "--redeliver",
        action="store_true",
        help="deliver every record again, even what the sink already has (after a lost ledger, "
        "or changed settings to the same queue)",
    )
    _add_execution_options(run)

    redrive = sub.add_parser(
        "redrive", help="process a batch's failed and dead-lettered chunks again"
    )
    redrive.add_argument("batch_id")
    _add_execution_options(redrive)

    complete = sub.add_parser("complete", help="mark a stuck batch complete (needs --force)")
    complete.add_argument("batch_id")
    complete.add_argument("--force", action="store_true", help="required: you mean it")
    complete.add_argument("--reason", required=True, help="why, for the ledger")
    complete.add_argument("--ledger", help="ledger URL")

    dead = sub.add_parser("dead-letters", help="list a batch's dead-lettered chunks")
    dead.add_argument("batch_id")
    dead.add_argument("--ledger", help="ledger URL")
    dead.add_argument("--json", action="store_true")

    status = sub.add_parser(
        "status", help="a batch's progress from the ledger (follows a running batch live)"
    )
    status.add_argument("batch_id")
    status.add_argument("--ledger", help="ledger URL")
    status.add_argument("--json", action="store_true", help="print one JSON object")
    status.add_argument(
        "--watch",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="follow a running batch with a progress bar until no chunk is pending or running "
        "(default: on when stdout is a terminal)",
    )
    status.add_argument(
        "--interval", type=_positive, default=1.0, help="seconds between polls (default 1)"
    )

    sample = sub.add_parser("sample", help="write a sample leads CSV and its validate schema")
    sample.add_argument("directory")
    sample.add_argument("--records", type=int, default=300_000)
    sample.add_argument("--invalid-fraction", type=float, default=0.03)
    return parser
