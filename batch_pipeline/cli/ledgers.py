"""Which ledger a command works on (``--ledger``, ``BATCH_PIPELINE_LEDGER_URL``, else the
instance's, else ``make demo``'s when it holds the batch), opened with an error that names it,
and handed to a run through the environment (never through its stored run config).
"""

import argparse
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from batch_pipeline.cli.output import echo
from batch_pipeline.core.common.naming import check_batch_id


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
