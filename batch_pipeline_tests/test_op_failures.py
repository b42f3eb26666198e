"""How ops fail: a permanent error (a full disk, a corrupt ledger) ends the step at once with its
own message, in the step's failure and in the CLI's summary; a transient one is retried, and when
the retries run out the message still says what failed, never only Dagster's "Exceeded
max_retries"."""

from __future__ import annotations

import socket
import sqlite3
from pathlib import Path

import pytest
from dagster import DagsterEventType, Failure, RetryPolicy, RunConfig, job, op

from batch_pipeline.cli.run import _failure_message
from batch_pipeline.config import BatchConfig
from batch_pipeline.core.ledger import Ledger
from batch_pipeline.definitions import get_batch_job
from batch_pipeline.ops.failures import core_failures, step_error_text
from batch_pipeline_tests.core.helpers import full_device


def write_full(path: Path) -> None:
    with open(path, "wb") as f:
        f.write(b"x" * 10)


def refuse() -> None:
    with socket.create_connection(("127.0.0.1", 9), timeout=5):
        pass


def test_a_full_disk_is_a_failure_without_retries_that_says_so(tmp_path: Path) -> None:
    device = full_device(tmp_path)

    with pytest.raises(Failure) as info, core_failures("writing the results failed"):
        write_full(device)

    failure = info.value
    assert not failure.allow_retries
    assert failure.description.startswith("writing the results failed: OSError: [Errno 28]")
    assert "No space left on device" in failure.description
    assert failure.metadata["category"].value == "disk_full"


def test_a_refused_connection_is_a_failure_that_may_be_retried() -> None:
    with pytest.raises(Failure) as info, core_failures("reading"):
        refuse()

    assert info.value.allow_retries
    assert info.value.metadata["category"].value == "connection"


def failures_of(result) -> list:
    return [e for e in result.all_events if e.is_step_failure]


def retries_of(result) -> list:
    return [e for e in result.all_events if e.event_type == DagsterEventType.STEP_UP_FOR_RETRY]


@op(retry_policy=RetryPolicy(max_retries=2))
def keeps_being_refused() -> None:
    with core_failures("fetching the source failed"):
        refuse()


@op(retry_policy=RetryPolicy(max_retries=2))
def escapes_with_an_unknown_error() -> None:
    raise LookupError("the thing was not where it was expected")


@job
def refused_job() -> None:
    keeps_being_refused()


@job
def escaping_job() -> None:
    escapes_with_an_unknown_error()


@pytest.mark.parametrize(
    ("job_def", "expected"),
    [
        (refused_job, "fetching the source failed: ConnectionRefusedError: [Errno 111]"),
        (escaping_job, "LookupError: the thing was not where it was expected"),
    ],
)
def test_a_step_out_of_retries_still_says_what_failed(job_def, expected: str) -> None:
    result = job_def.execute_in_process(raise_on_error=False)

    assert len(retries_of(result)) == 2
    (failure,) = failures_of(result)
    text = step_error_text(failure.step_failure_data.error)
    assert text.startswith(expected), text
    assert "after 2 retries" in text
    assert expected in _failure_message(result)


def full_database_error(tmp_path: Path) -> sqlite3.OperationalError:
    """The real error of a SQLite database that cannot grow (as on a full disk)."""
    path = tmp_path / "tiny.db"
    with sqlite3.connect(path) as db:
        db.execute("pragma max_page_count = 3")
        db.execute("create table t (v text)")
        try:
            db.executemany("insert into t values (?)", [("x" * 1000,) for _ in range(100)])
        except sqlite3.OperationalError as exc:
            return exc
    raise AssertionError("the database should be full")


@pytest.mark.slow
def test_a_full_ledger_when_the_batch_ends_fails_the_run_at_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A permanent error after the op's own work (recording the batch's status): no retry by
    the op's retry policy, and the failure carries the database's message."""
    error = full_database_error(tmp_path)

    def set_batch_status(self, *args, **kwargs) -> None:
        raise error

    monkeypatch.setattr(Ledger, "set_batch_status", set_batch_status)
    source = tmp_path / "rows.csv"
    source.write_text("id\n1\n2\n")
    config = BatchConfig(source=str(source), output=str(tmp_path / "out"))

    result = get_batch_job().execute_in_process(
        run_config=RunConfig(ops={"initialize": config}), raise_on_error=False
    )

    assert not result.success
    assert retries_of(result) == []
    (failure,) = failures_of(result)
    assert failure.step_key == "aggregate"
    text = step_error_text(failure.step_failure_data.error)
    assert "database or disk is full" in text and "Exceeded max_retries" not in text
