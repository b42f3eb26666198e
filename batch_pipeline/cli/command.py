"""The ``batch-pipeline`` command: its arguments parsed, the subcommand run, and a user's mistake
(a ``BatchPipelineError``) turned into one ``error:`` line and exit code 2.
"""

import argparse
import json
import os
import sys
import time
from collections.abc import Sequence

from batch_pipeline.cli import startup
from batch_pipeline.cli.ledger_commands import (
    complete_command,
    dead_letters_command,
    status_command,
)
from batch_pipeline.cli.parser import build_parser
from batch_pipeline.cli.run import redrive_command, run_command
from batch_pipeline.cli.terminal import echo
from batch_pipeline.core.common.errors import BatchPipelineError
from batch_pipeline.core.common.text import shown


def sample_command(args: argparse.Namespace) -> int:
    from batch_pipeline.core.inputs.sample_data import write_sample

    csv_path, schema_path = write_sample(args.directory, args.records, args.invalid_fraction)
    echo(f"wrote {args.records:,} records to {csv_path}")
    echo(f"wrote the validate schema to {schema_path}")
    return 0


def worker_command(args: argparse.Namespace) -> int:
    """A celery worker of ``batch_pipeline.workers`` (runs until stopped)."""
    from batch_pipeline.core.common.errors import ConfigError

    queues = [q.strip() for q in args.queues.split(",") if q.strip()]
    if not queues or args.concurrency < 1:
        raise ConfigError("worker: give at least one queue and a concurrency of at least 1")
    try:
        from batch_pipeline.workers import worker_app
    except ImportError as exc:
        raise ConfigError(
            f"worker: the celery extra is not installed ({exc}): pip install "
            "'batch-pipeline[celery]'"
        ) from exc
    argv = ["worker", "-Q", ",".join(queues), "--concurrency", str(args.concurrency)]
    if args.name:
        argv += ["-n", args.name]
    extra = [a for a in args.celery_args if a != "--"]
    worker_app().worker_main(argv + extra)
    return 0


COMMANDS = {
    "run": run_command,
    "redrive": redrive_command,
    "complete": complete_command,
    "dead-letters": dead_letters_command,
    "status": status_command,
    "sample": sample_command,
    "worker": worker_command,
}


def process_start() -> float:
    """When this process started (its start-up, imports included, count in a run's seconds):
    on Linux its age (``/proc/self/stat``'s start in clock ticks since boot against
    ``/proc/uptime``, both to a hundredth of a second) taken from now. psutil's
    ``create_time`` adds the boot time in whole seconds, up to a second early. Elsewhere
    psutil's, or now."""
    try:
        with open("/proc/self/stat") as stat, open("/proc/uptime") as uptime:
            ticks = int(stat.read().rpartition(")")[2].split()[19])  # field 22, starttime
            age = float(uptime.read().split()[0]) - ticks / os.sysconf("SC_CLK_TCK")
        return time.time() - max(age, 0.0)
    except (OSError, ValueError, IndexError):
        pass
    import psutil

    try:
        return psutil.Process().create_time()
    except psutil.Error:
        return time.time()


def user_error(exc: BaseException, verbose: bool = False) -> int:
    """A mistake of the user's (a ``BatchPipelineError``: the file, the setting, the fix) on
    stderr as ``error: ...``, exit code 2; the traceback only with ``--verbose``."""
    if verbose:
        import traceback

        traceback.print_exception(exc, file=sys.stderr)
    print(f"error: {shown(exc)}", file=sys.stderr)
    return 2


def main(argv: Sequence[str] | None = None) -> int:
    """The ``batch-pipeline`` command. Called without ``argv`` (as the command), a run's
    seconds count from the process's start; called with it (from Python), from this call."""
    as_command = argv is None
    if as_command:
        startup.hold()  # the collector off while modules load (cli.startup)
    started = process_start() if as_command else time.time()
    args = build_parser().parse_args(argv)
    args.started = started
    if args.command not in ("run", "redrive"):  # these release it before their job runs
        startup.release()
    try:
        return COMMANDS[args.command](args)
    except BatchPipelineError as exc:
        code = user_error(exc, getattr(args, "verbose", False))
        if args.command in ("run", "redrive") and args.json:  # stdout ends with JSON, still
            print(json.dumps({"batch_id": None, "run_id": None, "status": "ERROR",
                              "error": shown(exc)}))  # fmt: skip
        return code
    finally:
        if as_command:
            startup.before_exit()
