"""``run`` and ``redrive``: the pre-checks that refuse a bad run before Dagster starts, then the
job executed on the current instance with a progress bar, then its summary: built from the run's
outputs (or, when it failed before aggregating, from the manifest it wrote) and printed as
lines, with ``--json`` ending in one JSON object.
"""

import argparse
import json
import os
import shutil
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from batch_pipeline.cli import startup
from batch_pipeline.cli.ledger_commands import (
    ledger_environment,
    ledger_with_batch,
    open_ledger_checked,
)
from batch_pipeline.cli.run_config import execution_config, run_config_from_args
from batch_pipeline.cli.terminal import RunProgress, echo

CLI_TAG = "batch_pipeline/cli_invocation"


@contextmanager
def dagster_instance(in_process: bool = False) -> Iterator[Any]:
    """The instance of ``DAGSTER_HOME``; without one, an in-memory instance for a run whose
    steps all run in this process (nothing outlives the command either way, and the event log
    in memory spares a SQLite write per event: about 5 ms each, ten or more per chunk), else
    a temporary SQLite instance that step processes can open, removed afterwards."""
    from dagster import DagsterInstance

    if os.environ.get("DAGSTER_HOME"):
        with DagsterInstance.get() as instance:
            yield instance
        return
    if in_process:
        with DagsterInstance.ephemeral(settings={"telemetry": {"enabled": False}}) as instance:
            yield instance
        return
    directory = tempfile.mkdtemp(prefix="batch-pipeline-")
    try:
        overrides = {"telemetry": {"enabled": False}}
        with DagsterInstance.local_temp(directory, overrides=overrides) as instance:
            yield instance
    finally:
        shutil.rmtree(directory, ignore_errors=True)


@contextmanager
def original_stderr() -> Iterator[Any]:
    """A text file on a duplicate of fd 2 as it is now (before Dagster redirects it)."""
    stream = os.fdopen(os.dup(2), "w", buffering=1, encoding="utf-8", errors="replace")
    try:
        yield stream
    finally:
        stream.close()


def execute(
    job_fn: Callable[[], Any], run_config: dict[str, Any], args: argparse.Namespace, batch_id: str
) -> int:
    """Run a job on the current instance with a progress bar of ``batch_id``'s chunks; print
    its summary."""
    from dagster import execute_job, reconstructable

    in_process = args.executor != "multiprocess"
    with original_stderr() as terminal, dagster_instance(in_process) as instance:
        startup.release()  # the job runs with the garbage collector on
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
                summary = summarize_run(result)
        finally:
            follower.done.set()
            follower.join()
    summary["seconds"] = round(time.time() - args.started, 3)  # start-up included
    print_summary(summary, as_json=args.json)
    return 0 if summary["status"] == "SUCCESS" else 1


def _failure_message(result: Any) -> str:
    from batch_pipeline.ops.failures import step_error_text

    messages = []
    for event in result.all_events:
        if event.is_step_failure:
            error = event.step_failure_data.error
            messages.append(f"{event.step_key}: {step_error_text(error)}")
    return "; ".join(messages) or "the run failed"


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


def summarize_run(result: Any) -> dict[str, Any]:
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
            "counts": manifest.get("counts", {}),
            "failed_chunks": manifest.get("results", {}).get("failed", []),
            "failed_buckets": manifest.get("results", {}).get("buckets", {}).get("failed", []),
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
        "counts": totals.get("counts", {}),
        "failed_chunks": totals.get("failed_chunks", []),
        "failed_buckets": totals.get("failed_buckets", []),
        "delivered_messages": delivered.messages if delivered else None,
        "delivered_to": delivered.target if delivered else None,
        "warnings": list(spec.warnings) if spec else [],
    }
    if not result.success:
        summary["error"] = _failure_message(result)
    return summary


def print_summary(summary: dict[str, Any], as_json: bool) -> None:
    head = f"batch {summary['batch_id'] or '?'}: {summary['status']}"
    if summary["batch_status"]:
        head += f" ({summary['batch_status']})"
    echo(f"{head} in {summary['seconds']}s")
    for warning in summary["warnings"]:
        echo(f"  warning: {warning}")
    if summary["records_in"] is not None:
        held = sum(b.get("records_in", 0) for b in summary["failed_buckets"])
        echo(
            f"  records: {summary['records_in']:,} in = {summary['records_out']:,} out + "
            f"{summary['records_rejected']:,} rejected"
            + (f" + {held:,} in failed bucket(s)" if summary["failed_buckets"] else "")
            + f", {summary['chunks']} chunk(s)"
        )
        for reason, count in list(summary["rejection_reasons"].items())[:5]:
            echo(f"    {count:>9,}  {reason}")
    if summary.get("counts"):
        echo("  " + ", ".join(f"{name} {count:,}" for name, count in summary["counts"].items()))
    shown_chunks = 10
    for failed in summary["failed_chunks"][:shown_chunks]:  # each with its whole reason
        echo(
            f"  chunk_{failed['chunk']:05d} {failed['status']}: {failed['category']}: "
            f"{failed['error'] or ''} ({failed['dead_letter']})"
        )
    for failed in summary["failed_buckets"][:shown_chunks]:
        echo(
            f"  bucket_{failed['bucket']:05d} {failed['status']}: {failed['category']}: "
            f"{failed['error'] or ''} ({failed['dead_letter']}); "
            f"{failed.get('records_in', 0):,} records held for a redrive"
        )
    more = max(len(summary["failed_chunks"]), len(summary["failed_buckets"])) - shown_chunks
    if more > 0:
        echo(
            f"  ... and {more} more failed chunk(s) or bucket(s): "
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
    check_state_store(spec, args.state_store)
    return spec


def check_state_store(spec: Any, url: str | None) -> None:
    """A keyed batch's state store opens (its table made if missing), else the error that says
    why, before Dagster starts."""
    from batch_pipeline.core.shuffle.stage import is_keyed, keyed_processor

    if is_keyed(spec):
        from batch_pipeline.resources import StateStoreResource  # imports Dagster

        StateStoreResource(url=url).open(spec.retry, keyed_processor(spec).store_kind).close()


def run_command(args: argparse.Namespace) -> int:
    run_config = run_config_from_args(args)
    spec = check_run(args, run_config["ops"]["initialize"]["config"])
    from batch_pipeline.bound_jobs import get_batch_job

    with ledger_environment(args.ledger, args.state_store):
        return execute(get_batch_job, run_config, args, spec.batch_id)


def redrive_command(args: argparse.Namespace) -> int:
    from batch_pipeline.core.ledger import DEAD_LETTERED, FAILED, BatchStatus

    ledger = ledger_with_batch(args)
    args.ledger = ledger.url  # the run uses the ledger the batch was found in
    batch = ledger.batch(args.batch_id)
    # A keyed batch's buckets fail and are dead-lettered like its chunks.
    states = ledger.chunk_states(args.batch_id) + ledger.buckets.chunk_states(args.batch_id)
    failed = [s for s in states if s.status in (FAILED, DEAD_LETTERED)]
    progress = ledger.progress(args.batch_id)
    finished = batch.status in (BatchStatus.SUCCEEDED, BatchStatus.COMPLETED_FORCED)
    if not failed and finished and progress.messages_sent >= progress.messages:
        echo(
            f"batch {args.batch_id}: nothing to redrive: no chunk (or bucket) failed or was "
            "dead-lettered "
            f"({batch.status}, {progress.succeeded} of {progress.total} chunk(s) succeeded, "
            f"{progress.messages_sent} of {progress.messages} message(s) sent)"
        )
        return 0
    from batch_pipeline.bound_jobs import get_redrive_job

    run_config = {
        "ops": {"load_batch": {"config": {"batch_id": args.batch_id}}},
        **execution_config(args),
    }
    with ledger_environment(args.ledger, args.state_store):
        return execute(get_redrive_job, run_config, args, args.batch_id)
