"""``batch-pipeline``: run ``batch_job`` from a shell, and make sample data.

``batch-pipeline run SOURCE`` runs the job on the current Dagster instance (``DAGSTER_HOME``, or
a temporary one when unset) with a progress bar on stderr, then prints a summary; with
``--json`` the last line of stdout is one JSON object.
"""

import argparse
import json
import os
import shutil
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

CLI_TAG = "batch_pipeline/cli_invocation"


def _options(value: str) -> dict[str, Any]:
    """Processor options: a JSON object, or @path to a JSON file."""
    if value.startswith("@"):
        with open(value[1:]) as f:
            value = f.read()
    parsed = json.loads(value)
    if not isinstance(parsed, dict):
        raise argparse.ArgumentTypeError("processor options must be a JSON object")
    return parsed


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="batch-pipeline", description="Process big record files in parallel chunks."
    )
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run batch_job on a source file")
    run.add_argument("source", help="local path or s3://bucket/key")
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
        "--processor-options", type=_options, default={}, help="JSON object or @file.json"
    )
    run.add_argument("--chunk-records", type=int, default=500_000)
    run.add_argument("--max-chunks", type=int, default=200)
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
    run.add_argument("--executor", default="in_process", choices=["in_process", "multiprocess"])
    run.add_argument(
        "--max-concurrent",
        type=int,
        default=None,
        help="steps at once with --executor multiprocess (default: CPU count)",
    )
    run.add_argument("--json", action="store_true", help="end with one JSON line on stdout")
    run.add_argument("--verbose", "-v", action="store_true", help="show Dagster's INFO logs")

    sample = sub.add_parser("sample", help="write a sample leads CSV and its validate schema")
    sample.add_argument("directory")
    sample.add_argument("--records", type=int, default=300_000)
    sample.add_argument("--invalid-fraction", type=float, default=0.03)
    return parser


def run_config_from_args(args: argparse.Namespace) -> dict[str, Any]:
    """The run config of ``batch_job`` for ``batch-pipeline run`` arguments."""
    names = [n.strip() for n in args.column_names.split(",")] if args.column_names else None
    config: dict[str, Any] = {
        "source": args.source,
        "format": args.format,
        "compression": args.compression,
        "csv": {
            "delimiter": args.delimiter,
            "has_header": not args.no_header,
            "column_names": names,
        },
        "json_records_path": args.json_records_path,
        "excel_sheets": args.sheets,
        "processor": args.processor,
        "processor_options": args.processor_options,
        "chunking": {
            "chunk_records": args.chunk_records,
            "max_chunks": args.max_chunks,
            "chunk_bytes": args.chunk_bytes,
            "scan": not args.no_scan,
        },
        "output": args.output,
        "delivery": {"target": args.deliver, "records_per_message": args.records_per_message},
        "batch_id": args.batch_id,
        "customer_id": args.customer_id,
        "tenant_id": args.tenant_id,
        "deployment": args.deployment,
        "snapshot_id": args.snapshot_id,
    }
    if args.executor == "multiprocess":
        execution: dict[str, Any] = {"multiprocess": {"max_concurrent": args.max_concurrent}}
    else:
        execution = {"in_process": {}}
    level = "INFO" if args.verbose else "WARNING"
    return {
        "ops": {"initialize": {"config": config}},
        "execution": {"config": execution},
        "loggers": {"console": {"config": {"log_level": level}}},
    }


@contextmanager
def dagster_instance() -> Iterator[Any]:
    """The instance of ``DAGSTER_HOME``, or a temporary one removed afterwards."""
    from dagster import DagsterInstance

    if os.environ.get("DAGSTER_HOME"):
        with DagsterInstance.get() as instance:
            yield instance
        return
    directory = tempfile.mkdtemp(prefix="batch-pipeline-")
    try:
        overrides = {"telemetry": {"enabled": False}}
        with DagsterInstance.local_temp(directory, overrides=overrides) as instance:
            yield instance
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def progress_bar() -> Any:
    """A tqdm bar of chunks on stderr (drawn only when stderr is a terminal)."""
    from tqdm import tqdm

    return tqdm(total=0, unit="chunk", desc="chunks", file=sys.stderr, disable=None)


class ProgressWatcher(threading.Thread):
    """Follows the run's event log and draws chunks done / planned as a progress bar."""

    make_bar = staticmethod(progress_bar)

    def __init__(self, instance: Any, token: str, interval: float = 0.5) -> None:
        super().__init__(daemon=True)
        self.instance = instance
        self.token = token
        self.interval = interval
        self.done = threading.Event()

    def run(self) -> None:
        from dagster import DagsterEventType, RunsFilter

        run_id = None
        while run_id is None and not self.done.is_set():
            runs = self.instance.get_runs(filters=RunsFilter(tags={CLI_TAG: self.token}), limit=1)
            run_id = runs[0].run_id if runs else None
            self.done.wait(self.interval)
        if run_id is None:
            return
        kinds = {
            DagsterEventType.STEP_OUTPUT,
            DagsterEventType.STEP_SUCCESS,
            DagsterEventType.STEP_FAILURE,
        }
        planned = finished = 0
        cursor = None
        bar = self.make_bar()
        while True:
            stopping = self.done.is_set()
            page = self.instance.get_records_for_run(run_id, cursor=cursor, of_type=kinds)
            cursor = page.cursor
            for record in page.records:
                event = record.event_log_entry.dagster_event
                step = event.step_key or ""
                if step == "plan_chunks" and event.event_type == DagsterEventType.STEP_OUTPUT:
                    planned += 1
                elif step.startswith("process_chunk[") and event.event_type in (
                    DagsterEventType.STEP_SUCCESS,
                    DagsterEventType.STEP_FAILURE,
                ):
                    finished += 1
            if bar.total != planned:
                bar.total = planned
                bar.refresh()
            bar.update(finished - bar.n)
            if stopping and not page.has_more:
                break
            if not page.has_more:
                self.done.wait(self.interval)
        bar.close()


def _failure_message(result: Any) -> str:
    messages = []
    for event in result.all_events:
        if event.is_step_failure:
            error = event.step_failure_data.error
            messages.append(f"{event.step_key}: {error.message.strip() if error else 'failed'}")
    return "; ".join(messages) or "the run failed"


def run_command(args: argparse.Namespace) -> int:
    from dagster import execute_job, reconstructable

    from batch_pipeline.definitions import get_batch_job

    token = uuid.uuid4().hex
    run_config = run_config_from_args(args)
    started = time.perf_counter()
    with dagster_instance() as instance:
        watcher = ProgressWatcher(instance, token)
        watcher.start()
        try:
            with execute_job(
                reconstructable(get_batch_job),
                instance=instance,
                run_config=run_config,
                tags={CLI_TAG: token, "batch_pipeline/launched_by": "cli"},
                raise_on_error=False,
            ) as result:
                summary = _summary(result)
        finally:
            watcher.done.set()
            watcher.join()
    summary["seconds"] = round(time.perf_counter() - started, 3)
    _print_summary(summary, as_json=args.json)
    return 0 if summary["status"] == "SUCCESS" else 1


def _output(result: Any, node: str) -> Any:
    try:
        return result.output_for_node(node)
    except Exception:  # the step failed or was skipped
        return None


def _summary(result: Any) -> dict[str, Any]:
    spec = _output(result, "initialize")
    batch = _output(result, "aggregate")
    delivered = _output(result, "deliver")
    summary: dict[str, Any] = {
        "batch_id": spec.batch_id if spec else None,
        "run_id": result.run_id,
        "status": "SUCCESS" if result.success else "FAILURE",
        "records_in": batch.records_in if batch else None,
        "records_out": batch.records_out if batch else None,
        "records_rejected": batch.records_rejected if batch else None,
        "chunks": batch.chunks if batch else None,
        "manifest": batch.manifest_uri if batch else None,
        "output": spec.output if spec else None,
        "rejection_reasons": batch.rejection_reasons if batch else {},
        "delivered_messages": delivered.messages if delivered else None,
        "delivered_to": delivered.target if delivered else None,
    }
    if not result.success:
        summary["error"] = _failure_message(result)
    return summary


def _print_summary(summary: dict[str, Any], as_json: bool) -> None:
    if summary["status"] == "SUCCESS":
        print(f"batch {summary['batch_id']}: {summary['status']} in {summary['seconds']}s")
        print(
            f"  records: {summary['records_in']:,} in = {summary['records_out']:,} out + "
            f"{summary['records_rejected']:,} rejected, {summary['chunks']} chunk(s)"
        )
        for reason, count in list(summary["rejection_reasons"].items())[:5]:
            print(f"    {count:>9,}  {reason}")
        print(f"  results:  {summary['output']}")
        print(f"  manifest: {summary['manifest']}")
        if summary["delivered_to"]:
            print(
                f"  delivered {summary['delivered_messages']:,} message(s) to "
                f"{summary['delivered_to']}"
            )
    else:
        print(f"batch {summary['batch_id'] or '?'}: FAILURE after {summary['seconds']}s")
        print(f"  {summary['error']}")
    if as_json:
        print(json.dumps(summary, default=str))


def sample_command(args: argparse.Namespace) -> int:
    from batch_pipeline.core.sample_data import write_sample

    csv_path, schema_path = write_sample(args.directory, args.records, args.invalid_fraction)
    print(f"wrote {args.records:,} records to {csv_path}")
    print(f"wrote the validate schema to {schema_path}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "run":
        return run_command(args)
    return sample_command(args)


if __name__ == "__main__":
    sys.exit(main())
