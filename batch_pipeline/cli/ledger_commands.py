"""The commands that work on the ledger alone: ``complete --force``, ``dead-letters`` and
``status`` (once, or following a running batch with ``--watch``); and the ledger a command works
on (``--ledger``, ``BATCH_PIPELINE_LEDGER_URL``, else the instance's, else ``make demo``'s when
it holds the batch), opened with an error that names it, and handed to a run through the
environment (never through its stored run config).
"""

import argparse
import json
import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from batch_pipeline.cli.terminal import BatchFollower, echo
from batch_pipeline.core.common.naming import check_batch_id


@contextmanager
def ledger_environment(url: str | None, state_store: str | None = None) -> Iterator[None]:
    """``--ledger URL`` as ``BATCH_PIPELINE_LEDGER_URL`` (and ``--state-store URL`` as
    ``BATCH_PIPELINE_STATE_STORE_URL``) of this process while the run lasts (steps in
    subprocesses inherit them): URLs that may hold a password never go into run config. The
    previous values afterwards."""
    from batch_pipeline.settings import LEDGER_URL_ENV, STATE_STORE_URL_ENV

    given = {LEDGER_URL_ENV: url, STATE_STORE_URL_ENV: state_store}
    before = {name: os.environ.get(name) for name, value in given.items() if value}
    for name in before:
        os.environ[name] = str(given[name])
    try:
        yield
    finally:
        for name, value in before.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


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
    # A keyed batch's buckets are dead-lettered as its chunks are ("bucket" rows).
    letters = [("chunk", s) for s in ledger.dead_letters(args.batch_id)] + [
        ("bucket", s) for s in ledger.buckets.dead_letters(args.batch_id)
    ]
    rows = [
        {
            unit: s.chunk,
            "attempts": s.attempts,
            "category": s.error_category,
            "error": s.error_message,
            "dead_letter": s.dead_letter,
        }
        for unit, s in letters
    ]
    for (unit, state), row in zip(letters, rows, strict=True):
        echo(
            f"{unit}_{state.chunk:05d}: {row['category']} after {row['attempts']} attempt(s): "
            f"{row['error'] or ''}"
        )
        echo(f"    {row['dead_letter']}")
    buckets = sum(unit == "bucket" for unit, _ in letters)
    echo(
        f"{len(rows) - buckets} dead-lettered chunk(s)"
        + (f" and {buckets} bucket(s)" if buckets else "")
        + f" in batch {args.batch_id}"
    )
    if args.json:
        print(json.dumps(rows))
    return 0


def _iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    from datetime import UTC, datetime

    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _status_summary(ledger: Any, batch: Any, progress: Any) -> dict[str, Any]:
    from batch_pipeline.core.ledger import BatchStatus

    live = progress.status == BatchStatus.RUNNING and not progress.finished
    buckets = ledger.buckets.progress(progress.batch_id)
    keyed = (
        {  # a keyed batch's second stage: its buckets and the records they kept or rejected
            "buckets": buckets.total,
            "buckets_succeeded": buckets.succeeded,
            "buckets_failed": buckets.failed,
            "buckets_dead_lettered": buckets.dead_lettered,
            "buckets_unfinished": buckets.pending + buckets.running,
            "bucket_records_out": buckets.records_out,
            "bucket_records_rejected": buckets.records_rejected,
        }
        if buckets.total
        else {}
    )
    return {
        **keyed,
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
    if "buckets" in summary:
        echo(
            f"  buckets:  {summary['buckets_succeeded']:,} of {summary['buckets']:,} succeeded, "
            f"{summary['buckets_failed']:,} failed, {summary['buckets_dead_lettered']:,} "
            f"dead-lettered, {summary['buckets_unfinished']:,} unfinished; "
            f"{summary['bucket_records_out']:,} records out + "
            f"{summary['bucket_records_rejected']:,} rejected"
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
    from batch_pipeline.core.ledger import BatchStatus

    ledger = ledger_with_batch(args)
    batch = ledger.batch(args.batch_id)
    progress = ledger.progress(args.batch_id)
    watch = args.watch if args.watch is not None else sys.stdout.isatty()
    if watch and progress.status == BatchStatus.RUNNING and not progress.finished:
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
