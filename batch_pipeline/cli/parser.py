"""The command line: ``batch-pipeline``'s subcommands and their flags (argparse). A flag that
sets a batch's setting takes its default, choices and help from the setting's declaration in
``core.common.settings`` (as the launchpad does); every option's help ends with its default.
"""

import argparse
from typing import Any

from batch_pipeline.cli.run_config import OPTIONS_FLAG
from batch_pipeline.cli.terminal import WATCH_INTERVAL
from batch_pipeline.core.common.settings import (
    Batch,
    Chunking,
    Csv,
    Delivery,
    Failures,
    Retry,
    Setting,
)
from batch_pipeline.core.inputs.sample_data import INVALID_FRACTION


class DefaultsShown(argparse.ArgumentDefaultsHelpFormatter):
    """Help whose options end with ``(default: ...)``, unless their text already says
    ``default:`` in words, or the option is required."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.required or "default:" in (action.help or "").lower():
            return action.help
        return super()._get_help_string(action)


def _setting(setting: Setting, prefix: str = "", **kwargs: Any) -> dict[str, Any]:
    """``add_argument``'s keywords for a flag that sets ``setting``: its default, its choices
    and its description as the help (after ``prefix``); ``kwargs`` add to them or replace
    them."""
    options: dict[str, Any] = {
        "default": setting.default,
        "help": prefix + setting.description.replace("%", "%%"),  # argparse %-formats help
    }
    if setting.choices is not None:
        options["choices"] = setting.choices
    return {**options, **kwargs}


LEDGER_HELP = "ledger URL (default: BATCH_PIPELINE_LEDGER_URL, else SQLite in DAGSTER_HOME)"


def _positive(value: str) -> float:
    number = float(value)
    if not number > 0:
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds, not {value}")
    return number


def _add_execution_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--executor",
        default="in_process",
        choices=["in_process", "multiprocess"],
        help="run the steps in this process, or each in a process of its own",
    )
    parser.add_argument(
        "--max-concurrent",
        type=int,
        default=None,
        help="steps at once with --executor multiprocess (default: CPU count)",
    )
    parser.add_argument(
        "--ledger",
        help=f"{LEDGER_HELP}; handed to the run through the environment, never stored in the "
        "run's config",
    )
    parser.add_argument(
        "--state-store",
        "--lead-store",
        dest="state_store",
        metavar="URL",
        help="where keyed processors keep each key's state (kalman), or the leads processor "
        "its leads (table leads): sqlite:///PATH, postgresql+psycopg2://USER@HOST/DB or "
        "dynamodb://TABLE (default: BATCH_PIPELINE_STATE_STORE_URL, else SQLite beside the "
        "default ledger); handed to the run through the environment, never stored in the "
        "run's config",
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

    run = sub.add_parser(
        "run",
        help="run batch_job on a source file (again: resume it)",
        formatter_class=DefaultsShown,
    )
    run.add_argument(
        "source",
        help="local path or s3://bucket/key; a folder or s3://bucket/prefix/ is a file set "
        "(its small files processed as one batch, whole files grouped into chunks)",
    )
    run.add_argument("--format", **_setting(Batch.format))
    run.add_argument("--compression", **_setting(Batch.compression))
    run.add_argument("--delimiter", **_setting(Csv.delimiter))
    run.add_argument(
        "--no-header",
        action="store_true",
        default=not Csv.has_header.default,
        help="the CSV has no header row",
    )
    run.add_argument("--column-names", **_setting(Csv.column_names, "Comma-separated. "))
    run.add_argument("--json-records-path", **_setting(Batch.json_records_path))
    run.add_argument(
        "--sheet",
        action="append",
        dest="sheets",
        **_setting(Batch.excel_sheets, "Repeatable. "),
    )
    run.add_argument("--processor", **_setting(Batch.processor))
    run.add_argument(
        OPTIONS_FLAG,
        default=None,
        help="a JSON or YAML object, inline or @FILE (.json, .yaml, .yml)",
    )
    run.add_argument(
        "--processor-module",
        action="append",
        dest="processor_modules",
        **_setting(
            Batch.processor_modules,
            "Repeatable. ",
            default=list(Batch.processor_modules.default),
        ),
    )
    run.add_argument("--chunk-records", type=int, **_setting(Chunking.chunk_records))
    run.add_argument("--max-chunks", type=int, **_setting(Chunking.max_chunks))
    run.add_argument("--max-buckets", type=int, **_setting(Chunking.max_buckets))
    run.add_argument("--auto-chunk-records", action="store_true", **_setting(Chunking.auto))
    run.add_argument("--chunk-bytes", type=int, **_setting(Chunking.chunk_bytes))
    run.add_argument("--heavy-records", type=int, **_setting(Chunking.heavy_records))
    run.add_argument(
        "--no-scan",
        action="store_true",
        default=not Chunking.scan.default,
        help="plan CSV/JSONL by byte estimates instead of reading the file once",
    )
    run.add_argument("--output", **_setting(Batch.output))
    run.add_argument("--deliver", **_setting(Delivery.target))
    run.add_argument("--records-per-message", type=int, **_setting(Delivery.records_per_message))
    run.add_argument("--deliver-key", metavar="COLUMN", **_setting(Delivery.key_column))
    for name in ("batch-id", "customer-id", "tenant-id", "deployment", "snapshot-id"):
        run.add_argument(f"--{name}", **_setting(getattr(Batch, name.replace("-", "_"))))
    run.add_argument("--max-retries", type=int, **_setting(Retry.max_retries))
    run.add_argument("--retry-delay", type=float, **_setting(Retry.base_delay_seconds))
    run.add_argument("--retry-max-delay", type=float, **_setting(Retry.max_delay_seconds))
    run.add_argument(
        "--tolerated-failure-count", type=int, **_setting(Failures.tolerated_failure_count)
    )
    run.add_argument(
        "--tolerated-failure-percentage",
        type=float,
        **_setting(Failures.tolerated_failure_percentage),
    )
    run.add_argument("--dead-letter-queue", **_setting(Failures.dead_letter_queue))
    run.add_argument("--force", action="store_true", **_setting(Batch.force))
    run.add_argument("--redeliver", action="store_true", **_setting(Batch.redeliver))
    _add_execution_options(run)

    redrive = sub.add_parser(
        "redrive",
        help="process a batch's failed and dead-lettered chunks again",
        formatter_class=DefaultsShown,
    )
    redrive.add_argument("batch_id")
    _add_execution_options(redrive)

    complete = sub.add_parser(
        "complete",
        help="mark a stuck batch complete (needs --force)",
        formatter_class=DefaultsShown,
    )
    complete.add_argument("batch_id")
    complete.add_argument("--force", action="store_true", help="required: you mean it")
    complete.add_argument("--reason", required=True, help="why, for the ledger")
    complete.add_argument("--ledger", help=LEDGER_HELP)

    dead = sub.add_parser(
        "dead-letters", help="list a batch's dead-lettered chunks", formatter_class=DefaultsShown
    )
    dead.add_argument("batch_id")
    dead.add_argument("--ledger", help=LEDGER_HELP)
    dead.add_argument("--json", action="store_true", help="end with one JSON list on stdout")

    status = sub.add_parser(
        "status",
        help="a batch's progress from the ledger (follows a running batch live)",
        formatter_class=DefaultsShown,
    )
    status.add_argument("batch_id")
    status.add_argument("--ledger", help=LEDGER_HELP)
    status.add_argument("--json", action="store_true", help="print one JSON object")
    status.add_argument(
        "--watch",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="follow a running batch with a progress bar until no chunk is pending or running "
        "(default: on when stdout is a terminal)",
    )
    status.add_argument(
        "--interval", type=_positive, default=WATCH_INTERVAL, help="seconds between polls"
    )

    worker = sub.add_parser(
        "worker",
        help="a celery worker that runs batch_job's steps (the celery executor's runs)",
        formatter_class=DefaultsShown,
        description="Runs `celery -A batch_pipeline.workers worker` with these options; the "
        "broker and result backend come from BATCH_PIPELINE_CELERY_BROKER / _BACKEND, the "
        "instance, ledger and AWS settings from the same environment as the runs. Arguments "
        "after -- go to celery as they are.",
    )
    worker.add_argument(
        "--queues",
        default="dagster,heavy",
        help="the queues it serves, comma-separated: dagster (every step but heavy chunks), "
        "heavy (process_heavy_chunk)",
    )
    worker.add_argument(
        "--concurrency", type=int, default=1, help="steps at once (one process each)"
    )
    worker.add_argument("--name", default=None, help="the worker's name (celery's -n)")
    worker.add_argument("celery_args", nargs=argparse.REMAINDER, help="-- then celery's own")

    sample = sub.add_parser(
        "sample",
        help="write a sample leads CSV and its validate schema",
        formatter_class=DefaultsShown,
    )
    sample.add_argument("directory")
    sample.add_argument("--records", type=int, default=300_000, help="records to write")
    sample.add_argument(
        "--invalid-fraction",
        type=float,
        default=INVALID_FRACTION,
        help="share of records made invalid",
    )
    return parser
