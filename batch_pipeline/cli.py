"""``batch-pipeline``: run ``batch_job`` from a shell, redrive and complete batches, list dead
letters, make sample data.

``run`` and ``redrive`` execute the jobs on the current Dagster instance (``DAGSTER_HOME``, or a
temporary one when unset) with a progress bar on stderr, then print a summary; with ``--json``
the last line of stdout is one JSON object. ``complete``, ``dead-letters`` and ``status`` work on
the ledger directly.
"""

import argparse
import contextlib
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

from batch_pipeline.core.common.errors import BatchPipelineError
from batch_pipeline.core.common.naming import check_batch_id
from batch_pipeline.core.common.text import shown

CLI_TAG = "batch_pipeline/cli_invocation"


def echo(text: str = "", file: Any = None) -> None:
    """Print one line of output, user-given names in it escaped (``core.text.shown``): a file
    name's newline or ESC must not forge a line or recolour the terminal."""
    print(shown(text), file=file or sys.stdout, flush=file is not None)


OPTIONS_FLAG = "--processor-options"


def processor_options(value: str | None) -> dict[str, Any]:
    """``--processor-options``: a JSON or YAML object, inline or ``@path`` to a ``.json``,
    ``.yaml`` or ``.yml`` file; {} when not given. Parsed after argparse, in the run's
    pre-check, so that a mistake is a ConfigError (one ``error:`` line, exit 2, the JSON error
    object with ``--json``) naming the file, and the line and column of a syntax error."""
    from batch_pipeline.core.common.errors import ConfigError

    if value is None:
        return {}
    where, kind = "", None
    if value.startswith("@"):
        path = value[1:]
        if not path:
            raise ConfigError(f"{OPTIONS_FLAG}: @ needs a file name (@schema.yaml)")
        try:
            with open(path, encoding="utf-8") as f:
                value = f.read()
        except OSError as exc:
            raise ConfigError(f"{OPTIONS_FLAG}: cannot read {path}: {exc.strerror}") from exc
        except UnicodeDecodeError as exc:
            raise ConfigError(f"{OPTIONS_FLAG}: cannot read {path}: not UTF-8 text") from exc
        where = f"{path}: "
        kind = {".json": "json", ".yaml": "yaml", ".yml": "yaml"}.get(os.path.splitext(path)[1])
    parsed = _parse_options(value, kind, f"{OPTIONS_FLAG}: {where}")
    if not isinstance(parsed, dict):
        found = "nothing" if parsed is None else f"a {type(parsed).__name__}"
        raise ConfigError(
            f"{OPTIONS_FLAG}: {where}must be a JSON or YAML object (a mapping of options), not "
            f"{found}"
        )
    return parsed


def _parse_options(text: str, kind: str | None, where: str) -> Any:
    """``text`` as JSON (``kind`` json), YAML (yaml), or either (None: JSON first, then YAML,
    which also reads JSON; a text opening with '{' or '[' that neither reads is reported as
    JSON). ConfigError, starting with ``where``, on a syntax error."""
    import yaml

    from batch_pipeline.core.common.errors import ConfigError

    json_error = yaml_error = None
    if kind in ("json", None):
        try:
            return json.loads(text)
        except json.JSONDecodeError as exc:
            json_error = exc
    if kind in ("yaml", None):
        try:
            return yaml.safe_load(text)
        except yaml.YAMLError as exc:
            yaml_error = exc
    if json_error is not None and (kind == "json" or text.lstrip()[:1] in ("{", "[")):
        raise ConfigError(
            f"{where}not valid JSON: {json_error.msg} at line {json_error.lineno}, column "
            f"{json_error.colno}"
        )
    mark = getattr(yaml_error, "problem_mark", None)
    at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
    problem = getattr(yaml_error, "problem", None) or str(yaml_error)
    raise ConfigError(f"{where}not valid YAML: {problem}{at}")


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


def _execution_config(args: argparse.Namespace) -> dict[str, Any]:
    if args.executor == "multiprocess":
        execution: dict[str, Any] = {"multiprocess": {"max_concurrent": args.max_concurrent}}
    else:
        execution = {"in_process": {}}
    # Dagster's console logger prints a step failure at ERROR with its whole stack trace: the
    # summary carries the error, so below --verbose only CRITICAL (nothing of ours) shows.
    level = "INFO" if args.verbose else "CRITICAL"
    # No --ledger here: run config is stored in the instance and shown in the UI, and a ledger
    # URL may hold a password. The run gets it through the environment (ledger_environment).
    return {
        "execution": {"config": execution},
        "loggers": {"console": {"config": {"log_level": level}}},
    }


@contextmanager
def ledger_environment(url: str | None) -> Iterator[None]:
    """``--ledger URL`` as ``BATCH_PIPELINE_LEDGER_URL`` of this process while the run lasts
    (steps in subprocesses inherit it); the previous value afterwards."""
    from batch_pipeline.settings import LEDGER_URL_ENV

    if not url:
        yield
        return
    before = os.environ.get(LEDGER_URL_ENV)
    os.environ[LEDGER_URL_ENV] = url
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(LEDGER_URL_ENV, None)
        else:
            os.environ[LEDGER_URL_ENV] = before


def run_config_from_args(args: argparse.Namespace) -> dict[str, Any]:
    """The run config of ``batch_job`` for ``batch-pipeline run`` arguments: the first step of
    the run's pre-check (``--processor-options`` is parsed here: ConfigError)."""
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
        "processor_options": processor_options(args.processor_options),
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


def progress_bar(file: Any = None, enabled: bool | None = None) -> Any:
    """A tqdm bar of chunks on ``file`` (default stderr), drawn only when it is a terminal,
    unless ``enabled`` says otherwise."""
    from tqdm import tqdm

    disable = None if enabled is None else not enabled
    return tqdm(total=0, unit="chunk", desc="chunks", file=file or sys.stderr, disable=disable)


def _draw(bar: Any, progress: Any) -> None:
    """Move ``bar`` to the ledger's chunks done / total."""
    if bar.total != progress.total:
        bar.total = progress.total
        bar.refresh()
    bar.update(progress.done - bar.n)


class RunProgress(threading.Thread):
    """Follows a batch in the ledger while its run executes, and draws chunks done / total on
    ``terminal``: a copy of the stderr the CLI started with, since Dagster's compute-log
    capture redirects fd 2 while a step runs (a bar drawn on stderr then lands in the step's
    log). The same figures as ``status --watch``, polled every ``interval`` seconds until
    ``done`` is set."""

    make_bar = staticmethod(progress_bar)

    def __init__(
        self,
        batch_id: str,
        ledger_url: str | None,
        terminal: Any,
        enabled: bool | None = None,
        interval: float = 0.5,
    ) -> None:
        super().__init__(daemon=True)
        self.batch_id = batch_id
        self.ledger_url = ledger_url
        self.terminal = terminal
        self.enabled = enabled
        self.interval = interval
        self.done = threading.Event()

    def run(self) -> None:
        from batch_pipeline.core.ledger import open_ledger
        from batch_pipeline.settings import default_ledger_url

        bar = self.make_bar(file=self.terminal, enabled=self.enabled)
        try:
            ledger = open_ledger(self.ledger_url or default_ledger_url())
            while True:
                stopping = self.done.is_set()
                with contextlib.suppress(Exception):  # not worth failing for: next poll
                    _draw(bar, ledger.progress(self.batch_id))
                if stopping:
                    return
                self.done.wait(self.interval)
        finally:
            bar.close()


@contextmanager
def original_stderr() -> Iterator[Any]:
    """A text file on a duplicate of fd 2 as it is now (before Dagster redirects it)."""
    stream = os.fdopen(os.dup(2), "w", buffering=1, encoding="utf-8", errors="replace")
    try:
        yield stream
    finally:
        stream.close()


def _failure_message(result: Any) -> str:
    from batch_pipeline.ops.failures import step_error_text

    messages = []
    for event in result.all_events:
        if event.is_step_failure:
            error = event.step_failure_data.error
            messages.append(f"{event.step_key}: {step_error_text(error)}")
    return "; ".join(messages) or "the run failed"


def execute(
    job_fn: Callable[[], Any], run_config: dict[str, Any], args: argparse.Namespace, batch_id: str
) -> int:
    """Run a job on the current instance with a progress bar of ``batch_id``'s chunks; print
    its summary."""
    from dagster import execute_job, reconstructable

    with original_stderr() as terminal, dagster_instance() as instance:
        follower = RunProgress(batch_id, args.ledger, terminal, args.progress)
        follower.start()
        try:
            with execute_job(
                reconstructable(job_fn),
                instance=instance,
                run_config=run_config,
                tags={CLI_TAG: uuid.uuid4().hex, "batch_pipeline/launched_by": "cli"},
                raise_on_error=False,
            ) as result:
                summary = _summary(result)
        finally:
            follower.done.set()
            follower.join()
    summary["seconds"] = round(time.time() - args.started, 3)  # start-up included
    _print_summary(summary, as_json=args.json)
    return 0 if summary["status"] == "SUCCESS" else 1


def _output(result: Any, node: str) -> Any:
    try:
        return result.output_for_node(node)
    except Exception:  # the step failed, was skipped, or is not in this job
        return None


def _manifest(spec: Any, run_id: str) -> dict[str, Any]:
    """The manifest aggregate wrote in this run when it failed the run (its totals are still
    there); nothing when the manifest is another run's (this run failed before aggregating)."""
    from batch_pipeline.core.stores.storage import Storage
    from batch_pipeline.settings import s3_settings

    try:
        manifest = json.loads(Storage(s3_settings).read_bytes(spec.manifest_uri))
    except Exception:
        return {}
    return manifest if manifest.get("run_id") == run_id else {}


def _summary(result: Any) -> dict[str, Any]:
    spec = _output(result, "initialize") or _output(result, "load_batch")
    batch = _output(result, "aggregate")
    delivered = _output(result, "deliver")
    if batch is not None:
        totals: dict[str, Any] = batch.to_dict()
    else:
        manifest = _manifest(spec, result.run_id) if spec else {}
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
        "warnings": list(spec.warnings) if spec else [],
    }
    if not result.success:
        summary["error"] = _failure_message(result)
    return summary


def _print_summary(summary: dict[str, Any], as_json: bool) -> None:
    head = f"batch {summary['batch_id'] or '?'}: {summary['status']}"
    if summary["batch_status"]:
        head += f" ({summary['batch_status']})"
    echo(f"{head} in {summary['seconds']}s")
    for warning in summary["warnings"]:
        echo(f"  warning: {warning}")
    if summary["records_in"] is not None:
        echo(
            f"  records: {summary['records_in']:,} in = {summary['records_out']:,} out + "
            f"{summary['records_rejected']:,} rejected, {summary['chunks']} chunk(s)"
        )
        for reason, count in list(summary["rejection_reasons"].items())[:5]:
            echo(f"    {count:>9,}  {reason}")
    shown_chunks = 10
    for failed in summary["failed_chunks"][:shown_chunks]:  # each with its whole reason
        echo(
            f"  chunk_{failed['chunk']:05d} {failed['status']}: {failed['category']}: "
            f"{failed['error'] or ''} ({failed['dead_letter']})"
        )
    more = len(summary["failed_chunks"]) - shown_chunks
    if more > 0:
        echo(
            f"  ... and {more} more failed chunk(s): "
            f"batch-pipeline dead-letters {summary['batch_id']}"
        )
    if summary["output"]:
        echo(f"  results:  {summary['output']}")
    if summary["manifest"]:
        echo(f"  manifest: {summary['manifest']}")
    if summary["delivered_to"]:
        echo(
            f"  delivered {summary['delivered_messages']:,} message(s) to {summary['delivered_to']}"
        )
    if summary.get("error"):
        echo(f"  {summary['error']}")
    if as_json:
        print(json.dumps(summary, default=str))


def open_ledger_checked(url: str | None) -> Any:
    """The ledger at ``url`` (default: the environment's), or ConfigError saying which ledger
    (its URL without the password) could not be opened and why."""
    from batch_pipeline.core.common.errors import BatchPipelineError, ConfigError
    from batch_pipeline.core.ledger import open_ledger, safe_url
    from batch_pipeline.settings import default_ledger_url

    resolved = url or default_ledger_url()
    try:
        return open_ledger(resolved)
    except BatchPipelineError:
        raise  # says itself which ledger and what to do (a damaged file: LedgerError)
    except Exception as exc:
        safe = safe_url(resolved)
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        reason = reason.replace(resolved, safe)
        raise ConfigError(
            f"the ledger at {safe} cannot be opened: {type(exc).__name__}: {reason} (set "
            "--ledger or BATCH_PIPELINE_LEDGER_URL)"
        ) from exc


DEMO_LEDGER = os.path.join(".dagster_home", "batch_ledger.db")  # where `make demo` keeps it


def ledger_with_batch(args: argparse.Namespace) -> Any:
    """The ledger holding ``args.batch_id``: ``--ledger``, else the environment's; when
    neither a ledger URL nor ``DAGSTER_HOME`` is set and ``./.dagster_home/batch_ledger.db``
    (``make demo``'s) has the batch, that one (saying so on stderr). Else ConfigError naming
    the ledger looked in, and where else to look."""
    from batch_pipeline.core.common.errors import ConfigError
    from batch_pipeline.settings import LEDGER_URL_ENV

    check_batch_id(args.batch_id)
    ledger = open_ledger_checked(args.ledger)
    if ledger.batch(args.batch_id) is not None:
        return ledger
    hint = ""
    chosen = args.ledger or os.environ.get(LEDGER_URL_ENV) or os.environ.get("DAGSTER_HOME")
    if not chosen:
        demo = os.path.abspath(DEMO_LEDGER)
        if os.path.isfile(demo):
            other = open_ledger_checked(f"sqlite:///{demo}")
            if other.batch(args.batch_id) is not None:
                echo(
                    f"batch {args.batch_id} is not in the ledger at {ledger.safe_url}; using "
                    f"{other.safe_url} (make demo's; set DAGSTER_HOME=.dagster_home to use it)",
                    file=sys.stderr,
                )
                return other
            hint = f", nor in {demo}"
        hint += (
            f" (set DAGSTER_HOME (make demo's ledger is under .dagster_home), --ledger or "
            f"{LEDGER_URL_ENV} to look elsewhere)"
        )
    raise ConfigError(f"batch {args.batch_id} is not in the ledger at {ledger.safe_url}{hint}")


def check_output(output: str, spec_output: str) -> None:
    """The batch's output folder can be made and written: its nearest existing parent is a
    writable folder. Skipped for s3:// (a write would be the only real check)."""
    from batch_pipeline.core.common.errors import ConfigError
    from batch_pipeline.core.stores.storage import is_s3, normalize_uri

    if is_s3(spec_output):
        return
    path = normalize_uri(spec_output)
    nearest = path
    while not os.path.exists(nearest):
        nearest = os.path.dirname(nearest)
    if not os.path.isdir(nearest):
        raise ConfigError(
            f"--output {output}: results cannot be written there: {nearest} is a file, not a "
            "folder; choose another --output"
        )
    if not os.access(nearest, os.W_OK | os.X_OK):
        raise ConfigError(
            f"--output {output}: {nearest} is not writable (permission denied); choose another "
            "--output or fix the folder's permissions"
        )


def check_run(args: argparse.Namespace, config: dict[str, Any]) -> Any:
    """What ``initialize`` would refuse, found before Dagster starts (seconds, and a hundred
    lines of stack trace, earlier): the source (exists, readable, format, delimiter, columns),
    the processor and its options, the batch id, the output folder and the ledger. Returns the
    BatchSpec; raises a BatchPipelineError naming the file, the setting and the fix."""
    from batch_pipeline.core.initialize.prepare import prepare_batch, prepare_kwargs
    from batch_pipeline.core.stores.storage import Storage
    from batch_pipeline.settings import s3_settings

    spec = prepare_batch(Storage(s3_settings), **prepare_kwargs(config))
    check_output(args.output, spec.output)
    open_ledger_checked(args.ledger)
    return spec


def run_command(args: argparse.Namespace) -> int:
    run_config = run_config_from_args(args)
    spec = check_run(args, run_config["ops"]["initialize"]["config"])
    from batch_pipeline.definitions import get_batch_job

    with ledger_environment(args.ledger):
        return execute(get_batch_job, run_config, args, spec.batch_id)


def redrive_command(args: argparse.Namespace) -> int:
    from batch_pipeline.core.ledger import DEAD_LETTERED, FAILED

    ledger = ledger_with_batch(args)
    args.ledger = ledger.url  # the run uses the ledger the batch was found in
    batch = ledger.batch(args.batch_id)
    states = ledger.chunk_states(args.batch_id)
    failed = [s for s in states if s.status in (FAILED, DEAD_LETTERED)]
    progress = ledger.progress(args.batch_id)
    finished = batch.status in ("succeeded", "completed_forced")
    if not failed and finished and progress.messages_sent >= progress.messages:
        echo(
            f"batch {args.batch_id}: nothing to redrive: no chunk failed or was dead-lettered "
            f"({batch.status}, {progress.succeeded} of {progress.total} chunk(s) succeeded, "
            f"{progress.messages_sent} of {progress.messages} message(s) sent)"
        )
        return 0
    from batch_pipeline.definitions import get_redrive_job

    run_config = {
        "ops": {"load_batch": {"config": {"batch_id": args.batch_id}}},
        **_execution_config(args),
    }
    with ledger_environment(args.ledger):
        return execute(get_redrive_job, run_config, args, args.batch_id)


def complete_command(args: argparse.Namespace) -> int:
    check_batch_id(args.batch_id)
    if not args.force:
        echo("refusing without --force: a forced completion is recorded in the ledger")
        return 2
    ledger = ledger_with_batch(args)
    # Refused (an error line, exit 2) without a reason, or while a run holds the batch.
    state = ledger.force_complete(args.batch_id, args.reason)
    progress = ledger.progress(args.batch_id)
    echo(
        f"batch {state.batch_id}: {state.status} ({state.reason}); chunks: "
        f"{progress.succeeded} succeeded, {progress.failed} failed, "
        f"{progress.dead_lettered} dead-lettered, {progress.pending + progress.running} "
        f"unfinished of {progress.total}"
    )
    return 0


def dead_letters_command(args: argparse.Namespace) -> int:
    ledger = ledger_with_batch(args)
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
        echo(
            f"chunk_{row['chunk']:05d}: {row['category']} after {row['attempts']} attempt(s): "
            f"{row['error'] or ''}"
        )
        echo(f"    {row['dead_letter']}")
    echo(f"{len(rows)} dead-lettered chunk(s) in batch {args.batch_id}")
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
                _draw(bar, progress)
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
    echo(f"batch {summary['batch_id']}: {summary['status']}")
    echo(
        f"  chunks:   {summary['chunks_done']:,} of {summary['chunks']:,} done, "
        f"{summary['percent']}% succeeded: {summary['chunks_succeeded']:,} succeeded, "
        f"{summary['chunks_failed']:,} failed, {summary['chunks_dead_lettered']:,} "
        f"dead-lettered, {summary['chunks_pending']:,} pending, "
        f"{summary['chunks_running']:,} running"
    )
    echo(
        f"  records:  {summary['records_in']:,} in = {summary['records_out']:,} out + "
        f"{summary['records_rejected']:,} rejected (succeeded chunks)"
    )
    echo(f"  rate:     {summary['records_per_second']:,} records/s")
    echo(f"  delivery: {summary['messages_sent']:,} of {summary['messages']:,} message(s) sent")
    if summary["first_started_at"]:
        echo(
            f"  times:    first chunk started {summary['first_started_at']}, last finished "
            f"{summary['last_finished_at'] or '-'}"
        )
    if summary["reason"]:
        echo(f"  reason:   {summary['reason']}")
    echo(f"  source:   {summary['source']}")
    echo(f"  ledger:   {summary['ledger']}")


def status_command(args: argparse.Namespace) -> int:
    from batch_pipeline.core.ledger import RUNNING

    ledger = ledger_with_batch(args)
    batch = ledger.batch(args.batch_id)
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
    from batch_pipeline.core.inputs.sample_data import write_sample

    csv_path, schema_path = write_sample(args.directory, args.records, args.invalid_fraction)
    echo(f"wrote {args.records:,} records to {csv_path}")
    echo(f"wrote the validate schema to {schema_path}")
    return 0


COMMANDS = {
    "run": run_command,
    "redrive": redrive_command,
    "complete": complete_command,
    "dead-letters": dead_letters_command,
    "status": status_command,
    "sample": sample_command,
}


def user_error(exc: BaseException, verbose: bool = False) -> int:
    """A mistake of the user's (a ``BatchPipelineError``: the file, the setting, the fix) on
    stderr as ``error: ...``, exit code 2; the traceback only with ``--verbose``."""
    if verbose:
        import traceback

        traceback.print_exception(exc, file=sys.stderr)
    print(f"error: {shown(exc)}", file=sys.stderr)
    return 2


def process_start() -> float:
    """When this process started (its start-up, imports included, count in a run's seconds)."""
    import psutil

    try:
        return psutil.Process().create_time()
    except psutil.Error:
        return time.time()


def main(argv: Sequence[str] | None = None) -> int:
    """The ``batch-pipeline`` command. Called without ``argv`` (as the command), a run's
    seconds count from the process's start; called with it (from Python), from this call."""
    started = process_start() if argv is None else time.time()
    args = build_parser().parse_args(argv)
    args.started = started
    try:
        return COMMANDS[args.command](args)
    except BatchPipelineError as exc:
        code = user_error(exc, getattr(args, "verbose", False))
        if args.command in ("run", "redrive") and args.json:  # stdout ends with JSON, still
            print(json.dumps({"batch_id": None, "run_id": None, "status": "ERROR",
                              "error": shown(exc)}))  # fmt: skip
        return code


if __name__ == "__main__":
    sys.exit(main())
