"""``batch-pipeline``: run ``batch_job`` from a shell, redrive and complete batches, list dead
letters, make sample data.

``run`` and ``redrive`` execute the jobs on the current Dagster instance (``DAGSTER_HOME``, or a
temporary one when unset) with a progress bar on stderr, then print a summary; with ``--json``
the last line of stdout is one JSON object. ``complete``, ``dead-letters`` and ``status`` work on
the ledger directly.
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
from collections.abc import Callable, Iterator, Sequence
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
    parser.add_argument("--ledger", help="ledger URL (default: BATCH_PIPELINE_LEDGER_URL, ...)")
    parser.add_argument("--json", action="store_true", help="end with one JSON line on stdout")
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
        "--processor-options", type=_options, default={}, help="JSON object or @file.json"
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


def _execution_config(args: argparse.Namespace) -> dict[str, Any]:
    if args.executor == "multiprocess":
        execution: dict[str, Any] = {"multiprocess": {"max_concurrent": args.max_concurrent}}
    else:
        execution = {"in_process": {}}
    level = "INFO" if args.verbose else "WARNING"
    config: dict[str, Any] = {
        "execution": {"config": execution},
        "loggers": {"console": {"config": {"log_level": level}}},
    }
    if args.ledger:
        config["resources"] = {"ledger": {"config": {"url": args.ledger}}}
    return config


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
        "processor_modules": args.processor_modules,
        "chunking": {
            "chunk_records": args.chunk_records,
            "auto": args.auto_chunk_records,
            "max_chunks": args.max_chunks,
            "chunk_bytes": args.chunk_bytes,
            "scan": not args.no_scan,
        },
        "output": args.output,
        "delivery": {"target": args.deliver, "records_per_message": args.records_per_message},
        "retry": {
            "max_retries": args.max_retries,
            "base_delay_seconds": args.retry_delay,
            "max_delay_seconds": args.retry_max_delay,
        },
        "failures": {
            "tolerated_failure_count": args.tolerated_failure_count,
            "tolerated_failure_percentage": args.tolerated_failure_percentage,
            "dead_letter_queue": args.dead_letter_queue,
        },
        "force": args.force,
        "redeliver": args.redeliver,
        "batch_id": args.batch_id,
        "customer_id": args.customer_id,
        "tenant_id": args.tenant_id,
        "deployment": args.deployment,
        "snapshot_id": args.snapshot_id,
    }
    return {"ops": {"initialize": {"config": config}}, **_execution_config(args)}


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
    from batch_pipeline.ops.failures import step_error_text

    messages = []
    for event in result.all_events:
        if event.is_step_failure:
            error = event.step_failure_data.error
            messages.append(f"{event.step_key}: {step_error_text(error)}")
    return "; ".join(messages) or "the run failed"


def execute(job_fn: Callable[[], Any], run_config: dict[str, Any], as_json: bool) -> int:
    """Run a job on the current instance with a progress bar; print its summary."""
    from dagster import execute_job, reconstructable

    token = uuid.uuid4().hex
    started = time.perf_counter()
    with dagster_instance() as instance:
        watcher = ProgressWatcher(instance, token)
        watcher.start()
        try:
            with execute_job(
                reconstructable(job_fn),
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
    _print_summary(summary, as_json=as_json)
    return 0 if summary["status"] == "SUCCESS" else 1


def _output(result: Any, node: str) -> Any:
    try:
        return result.output_for_node(node)
    except Exception:  # the step failed, was skipped, or is not in this job
        return None


def _manifest(spec: Any) -> dict[str, Any]:
    """The manifest aggregate wrote, when it failed the run (its totals are still there)."""
    from batch_pipeline.core.storage import Storage

    try:
        return json.loads(Storage().read_bytes(spec.manifest_uri))
    except Exception:
        return {}


def _summary(result: Any) -> dict[str, Any]:
    spec = _output(result, "initialize") or _output(result, "load_batch")
    batch = _output(result, "aggregate")
    delivered = _output(result, "deliver")
    if batch is not None:
        totals: dict[str, Any] = batch.to_dict()
    else:
        manifest = _manifest(spec) if spec else {}
        totals = {
            **manifest.get("totals", {}),
            "status": manifest.get("status"),
            "manifest_uri": spec.manifest_uri if manifest else None,
            "rejection_reasons": manifest.get("rejection_reasons", {}),
            "failed_chunks": manifest.get("results", {}).get("failed", []),
        }
    summary: dict[str, Any] = {
        "batch_id": spec.batch_id if spec else None,
        "run_id": result.run_id,
        "status": "SUCCESS" if result.success else "FAILURE",
        "batch_status": totals.get("status"),
        "records_in": totals.get("records_in"),
        "records_out": totals.get("records_out"),
        "records_rejected": totals.get("records_rejected"),
        "chunks": totals.get("chunks"),
        "chunks_failed": totals.get("chunks_failed"),
        "manifest": totals.get("manifest_uri"),
        "output": spec.output if spec else None,
        "rejection_reasons": totals.get("rejection_reasons", {}),
        "failed_chunks": totals.get("failed_chunks", []),
        "delivered_messages": delivered.messages if delivered else None,
        "delivered_to": delivered.target if delivered else None,
    }
    if not result.success:
        summary["error"] = _failure_message(result)
    return summary


def _print_summary(summary: dict[str, Any], as_json: bool) -> None:
    head = f"batch {summary['batch_id'] or '?'}: {summary['status']}"
    if summary["batch_status"]:
        head += f" ({summary['batch_status']})"
    print(f"{head} in {summary['seconds']}s")
    if summary["records_in"] is not None:
        print(
            f"  records: {summary['records_in']:,} in = {summary['records_out']:,} out + "
            f"{summary['records_rejected']:,} rejected, {summary['chunks']} chunk(s)"
        )
        for reason, count in list(summary["rejection_reasons"].items())[:5]:
            print(f"    {count:>9,}  {reason}")
    for failed in summary["failed_chunks"][:10]:
        print(
            f"  chunk_{failed['chunk']:05d} {failed['status']}: {failed['category']}: "
            f"{(failed['error'] or '')[:120]} ({failed['dead_letter']})"
        )
    if summary["output"]:
        print(f"  results:  {summary['output']}")
    if summary["manifest"]:
        print(f"  manifest: {summary['manifest']}")
    if summary["delivered_to"]:
        print(
            f"  delivered {summary['delivered_messages']:,} message(s) to {summary['delivered_to']}"
        )
    if summary.get("error"):
        print(f"  {summary['error']}")
    if as_json:
        print(json.dumps(summary, default=str))


def run_command(args: argparse.Namespace) -> int:
    from batch_pipeline.definitions import get_batch_job

    return execute(get_batch_job, run_config_from_args(args), args.json)


def redrive_command(args: argparse.Namespace) -> int:
    from batch_pipeline.definitions import get_redrive_job

    run_config = {
        "ops": {"load_batch": {"config": {"batch_id": args.batch_id}}},
        **_execution_config(args),
    }
    return execute(get_redrive_job, run_config, args.json)


def complete_command(args: argparse.Namespace) -> int:
    from batch_pipeline.core.errors import ConfigError
    from batch_pipeline.core.ledger import open_ledger

    if not args.force:
        print("refusing without --force: a forced completion is recorded in the ledger")
        return 2
    ledger = open_ledger(args.ledger)
    try:
        state = ledger.force_complete(args.batch_id, args.reason)
    except ConfigError as exc:
        print(str(exc))
        return 1
    progress = ledger.progress(args.batch_id)
    print(
        f"batch {state.batch_id}: {state.status} ({state.reason}); chunks: "
        f"{progress.succeeded} succeeded, {progress.failed} failed, "
        f"{progress.dead_lettered} dead-lettered, {progress.pending + progress.running} "
        f"unfinished of {progress.total}"
    )
    return 0


def dead_letters_command(args: argparse.Namespace) -> int:
    from batch_pipeline.core.ledger import open_ledger

    ledger = open_ledger(args.ledger)
    if ledger.batch(args.batch_id) is None:
        print(f"batch {args.batch_id} is not in the ledger at {ledger.safe_url}")
        return 1
    letters = ledger.dead_letters(args.batch_id)
    rows = [
        {
            "chunk": s.chunk,
            "attempts": s.attempts,
            "category": s.error_category,
            "error": s.error_message,
            "dead_letter": s.dead_letter,
        }
        for s in letters
    ]
    for row in rows:
        print(
            f"chunk_{row['chunk']:05d}: {row['category']} after {row['attempts']} attempt(s): "
            f"{(row['error'] or '')[:160]}\n    {row['dead_letter']}"
        )
    print(f"{len(rows)} dead-lettered chunk(s) in batch {args.batch_id}")
    if args.json:
        print(json.dumps(rows))
    return 0


def _iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    from datetime import UTC, datetime

    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


class BatchFollower:
    """Polls a running batch's progress in the ledger and draws chunks done / total as a
    progress bar, until no chunk is pending or running or the batch stops running."""

    make_bar = staticmethod(progress_bar)

    def __init__(self, ledger: Any, batch_id: str, interval: float = 1.0) -> None:
        self.ledger = ledger
        self.batch_id = batch_id
        self.interval = interval

    def follow(self) -> Any:
        """The batch's progress once it stopped running (KeyboardInterrupt passes through)."""
        from batch_pipeline.core.ledger import RUNNING

        bar = self.make_bar()
        try:
            while True:
                progress = self.ledger.progress(self.batch_id)
                if bar.total != progress.total:
                    bar.total = progress.total
                    bar.refresh()
                bar.update(progress.done - bar.n)
                if progress.finished or progress.status != RUNNING:
                    return progress
                time.sleep(self.interval)
        finally:
            bar.close()


def _status_summary(ledger: Any, batch: Any, progress: Any) -> dict[str, Any]:
    from batch_pipeline.core.ledger import RUNNING

    live = progress.status == RUNNING and not progress.finished
    return {
        "batch_id": progress.batch_id,
        "status": progress.status,
        "finished": progress.finished,
        "percent": progress.percent,
        "chunks": progress.total,
        "chunks_done": progress.done,
        "chunks_pending": progress.pending,
        "chunks_running": progress.running,
        "chunks_succeeded": progress.succeeded,
        "chunks_failed": progress.failed,
        "chunks_dead_lettered": progress.dead_lettered,
        "records_in": progress.records_in,
        "records_out": progress.records_out,
        "records_rejected": progress.records_rejected,
        "records_per_second": progress.records_per_second(now=time.time() if live else None),
        "messages": progress.messages,
        "messages_sent": progress.messages_sent,
        "first_started_at": _iso(progress.first_started_at),
        "last_finished_at": _iso(progress.last_finished_at),
        "source": batch.source_uri,
        "run_id": batch.run_id,
        "reason": batch.reason,
        "ledger": ledger.safe_url,
    }


def _print_status(summary: dict[str, Any]) -> None:
    print(f"batch {summary['batch_id']}: {summary['status']}")
    print(
        f"  chunks:   {summary['chunks_done']:,} of {summary['chunks']:,} done, "
        f"{summary['percent']}% succeeded: {summary['chunks_succeeded']:,} succeeded, "
        f"{summary['chunks_failed']:,} failed, {summary['chunks_dead_lettered']:,} "
        f"dead-lettered, {summary['chunks_pending']:,} pending, "
        f"{summary['chunks_running']:,} running"
    )
    print(
        f"  records:  {summary['records_in']:,} in = {summary['records_out']:,} out + "
        f"{summary['records_rejected']:,} rejected (succeeded chunks)"
    )
    print(f"  rate:     {summary['records_per_second']:,} records/s")
    print(f"  delivery: {summary['messages_sent']:,} of {summary['messages']:,} message(s) sent")
    if summary["first_started_at"]:
        print(
            f"  times:    first chunk started {summary['first_started_at']}, last finished "
            f"{summary['last_finished_at'] or '-'}"
        )
    if summary["reason"]:
        print(f"  reason:   {summary['reason']}")
    print(f"  source:   {summary['source']}")
    print(f"  ledger:   {summary['ledger']}")


def status_command(args: argparse.Namespace) -> int:
    from batch_pipeline.core.ledger import RUNNING, open_ledger

    ledger = open_ledger(args.ledger)
    batch = ledger.batch(args.batch_id)
    if batch is None:
        print(f"batch {args.batch_id} is not in the ledger at {ledger.safe_url}", file=sys.stderr)
        return 2
    progress = ledger.progress(args.batch_id)
    watch = args.watch if args.watch is not None else sys.stdout.isatty()
    if watch and progress.status == RUNNING and not progress.finished:
        print(
            f"following batch {args.batch_id} every {args.interval:g}s "
            f"({progress.done} of {progress.total} chunk(s) done); Ctrl-C to stop",
            file=sys.stderr,
            flush=True,
        )
        try:
            progress = BatchFollower(ledger, args.batch_id, args.interval).follow()
        except KeyboardInterrupt:
            print("interrupted", file=sys.stderr)
            return 130
        batch = ledger.batch(args.batch_id) or batch
    summary = _status_summary(ledger, batch, progress)
    if args.json:
        print(json.dumps(summary))
    else:
        _print_status(summary)
    return 0


def sample_command(args: argparse.Namespace) -> int:
    from batch_pipeline.core.sample_data import write_sample

    csv_path, schema_path = write_sample(args.directory, args.records, args.invalid_fraction)
    print(f"wrote {args.records:,} records to {csv_path}")
    print(f"wrote the validate schema to {schema_path}")
    return 0


COMMANDS = {
    "run": run_command,
    "redrive": redrive_command,
    "complete": complete_command,
    "dead-letters": dead_letters_command,
    "status": status_command,
    "sample": sample_command,
}


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return COMMANDS[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
