"""``batch-pipeline status``: a finished batch (made by running the CLI) as text and JSON with
exact counts, an unknown batch, a running batch followed live while another thread completes
its chunks, a batch that stops running while followed, and Ctrl-C. Every test has its own
SQLite ledger (the autouse ``own_ledger`` fixture)."""

from __future__ import annotations

import json
import os
import pty
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from batch_pipeline.cli import main
from batch_pipeline.cli.terminal import BatchFollower
from batch_pipeline.core.ledger import Ledger
from batch_pipeline_tests.core.ledger.test_ledger import make_plan, make_spec, summary_for

SCHEMA = {"columns": {"email": {"type": "string", "required": True, "pattern": "^[^@ ]+@[^@ ]+$"}}}
INVALID = (1, 5, 9)  # one invalid email in each chunk of 4 records


class RecordingBar:
    """Stands in for the tqdm bar: records every position it is moved to."""

    def __init__(self) -> None:
        self.total = 0
        self.n = 0
        self.positions: list[int] = []
        self.closed = False

    def update(self, delta: int) -> None:
        self.n += delta
        self.positions.append(self.n)

    def refresh(self) -> None:
        pass

    def close(self) -> None:
        self.closed = True


@pytest.fixture
def bars(monkeypatch: pytest.MonkeyPatch) -> list[RecordingBar]:
    """The bars ``status`` draws, recorded."""
    made: list[RecordingBar] = []

    def make() -> RecordingBar:
        made.append(RecordingBar())
        return made[-1]

    monkeypatch.setattr(BatchFollower, "make_bar", staticmethod(make))
    return made


def status(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(["status", *args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture
def finished_batch(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> dict[str, Any]:
    """``batch-pipeline run`` on 10 records (3 invalid) in 3 chunks; its JSON summary."""
    source = tmp_path / "in.csv"
    rows = [f"{i},{'not-an-email' if i in INVALID else f'user{i}@example.com'}" for i in range(10)]
    source.write_text("id,email\n" + "\n".join(rows) + "\n")
    code = main(
        [
            "run", str(source), "--processor", "validate",
            "--processor-options", json.dumps(SCHEMA), "--chunk-records", "4",
            "--output", str(tmp_path / "out"), "--batch-id", "status-1", "--json",
        ]
    )  # fmt: skip
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert code == 0, summary
    assert (summary["chunks"], summary["records_rejected"]) == (3, 3)
    return summary


@pytest.mark.slow
def test_status_of_a_finished_batch_as_json(
    finished_batch: dict[str, Any],
    own_ledger: str,
    bars: list[RecordingBar],
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, out, _ = status(capsys, "status-1", "--json", "--watch")
    assert code == 0
    got = json.loads(out)
    assert bars == []  # nothing to follow: the batch is not running
    assert {k: got[k] for k in got if k not in ("first_started_at", "last_finished_at")} == {
        "batch_id": "status-1",
        "status": "succeeded",
        "finished": True,
        "percent": 100.0,
        "chunks": 3,
        "chunks_done": 3,
        "chunks_pending": 0,
        "chunks_running": 0,
        "chunks_succeeded": 3,
        "chunks_failed": 0,
        "chunks_dead_lettered": 0,
        "records_in": 10,
        "records_out": 7,
        "records_rejected": 3,
        "records_per_second": got["records_per_second"],
        "messages": finished_batch["delivered_messages"],
        "messages_sent": finished_batch["delivered_messages"],
        "source": str(Path(finished_batch["output"]).parents[1] / "in.csv"),
        "run_id": finished_batch["run_id"],
        "reason": None,
        "ledger": own_ledger,
    }
    assert finished_batch["delivered_messages"] == 3
    assert got["records_per_second"] > 0
    assert got["first_started_at"].endswith("Z") and got["last_finished_at"].endswith("Z")
    assert got["first_started_at"] <= got["last_finished_at"]


@pytest.mark.slow
def test_status_of_a_finished_batch_as_text(
    finished_batch: dict[str, Any], own_ledger: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = status(capsys, "status-1")
    assert code == 0
    lines = out.splitlines()
    assert lines[0] == "batch status-1: succeeded"
    assert lines[1] == (
        "  chunks:   3 of 3 done, 100.0% succeeded: 3 succeeded, 0 failed, 0 dead-lettered, "
        "0 pending, 0 running"
    )
    assert lines[2] == "  records:  10 in = 7 out + 3 rejected (succeeded chunks)"
    assert lines[3].startswith("  rate:     ") and lines[3].endswith(" records/s")
    assert lines[4] == "  delivery: 3 of 3 message(s) sent"
    assert lines[5].startswith("  times:    first chunk started 20")
    assert lines[-1] == f"  ledger:   {own_ledger}"


def test_unknown_batch_exits_2_naming_the_ledger(
    own_ledger: str, ledger: Ledger, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = status(capsys, "no-such-batch", "--json")
    assert code == 2
    assert out == ""
    assert err.strip() == f"error: batch no-such-batch is not in the ledger at {own_ledger}"


def in_background(work: Callable[[], None]) -> tuple[threading.Thread, list[BaseException]]:
    errors: list[BaseException] = []

    def target() -> None:
        try:
            work()
        except BaseException as exc:  # reported by the test
            errors.append(exc)

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    return thread, errors


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_watch_follows_a_running_batch_to_the_end(
    ledger: Ledger, bars: list[RecordingBar], capsys: pytest.CaptureFixture[str]
) -> None:
    chunks = 8
    ledger.register_batch(make_spec("live-1"), make_plan(chunks))

    # Without --watch and with stdout not a terminal: one snapshot, no bar.
    code, out, _ = status(capsys, "live-1", "--json")
    assert code == 0 and bars == []
    snapshot = json.loads(out)
    assert (snapshot["status"], snapshot["chunks_pending"], snapshot["finished"]) == (
        "running",
        chunks,
        False,
    )

    def complete_chunks() -> None:
        time.sleep(0.2)
        for i in range(chunks):
            ledger.mark_running("live-1", i)
            time.sleep(0.05)
            ledger.mark_succeeded("live-1", summary_for(i, chunks, records=10, rejected=1), "fp")
            time.sleep(0.05)

    thread, errors = in_background(complete_chunks)
    try:
        code, out, err = status(capsys, "live-1", "--watch", "--interval", "0.05", "--json")
    finally:
        thread.join(timeout=30)
    assert not thread.is_alive() and errors == []
    assert code == 0
    assert "following batch live-1 every 0.05s (0 of 8 chunk(s) done)" in err
    (bar,) = bars
    assert bar.total == chunks
    assert bar.closed
    assert bar.positions[-1] == chunks == bar.n
    assert bar.positions == sorted(bar.positions)
    assert any(0 < p < chunks for p in bar.positions)  # it followed, not only read the end
    final = json.loads(out)
    assert final["chunks_succeeded"] == chunks and final["finished"] is True
    assert (final["records_in"], final["records_out"], final["records_rejected"]) == (80, 72, 8)
    assert final["status"] == "running"  # the ledger's word: nothing aggregated the batch


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_watch_stops_when_the_batch_stops_running(
    ledger: Ledger, bars: list[RecordingBar], capsys: pytest.CaptureFixture[str]
) -> None:
    ledger.register_batch(make_spec("stuck-1"), make_plan(4))

    def succeed_one_then_force_complete() -> None:
        time.sleep(0.2)
        ledger.mark_running("stuck-1", 0)
        ledger.mark_succeeded("stuck-1", summary_for(0, 4, records=5), "fp")
        time.sleep(0.2)
        ledger.force_complete("stuck-1", "source withdrawn")

    thread, errors = in_background(succeed_one_then_force_complete)
    try:
        code, out, _ = status(capsys, "stuck-1", "--watch", "--interval", "0.05")
    finally:
        thread.join(timeout=30)
    assert not thread.is_alive() and errors == []
    assert code == 0
    (bar,) = bars
    assert (bar.total, bar.n, bar.closed) == (4, 1, True)
    lines = out.splitlines()
    assert lines[0] == "batch stuck-1: completed_forced"
    assert "1 of 4 done, 25.0% succeeded" in lines[1] and "3 pending" in lines[1]
    assert "  reason:   source withdrawn" in lines


@pytest.mark.slow
def test_ctrl_c_while_watching_exits_130_without_a_traceback(
    ledger: Ledger, own_ledger: str, tmp_path: Path
) -> None:
    """In a terminal (stdout is a pty here), ``status`` follows a running batch without
    ``--watch``; Ctrl-C (SIGINT) ends it cleanly."""
    ledger.register_batch(make_spec("forever-1"), make_plan(3))
    stderr_path = tmp_path / "stderr.txt"
    env = {**os.environ, "BATCH_PIPELINE_LEDGER_URL": own_ledger}
    terminal, stdout = pty.openpty()
    try:
        with stderr_path.open("w") as stderr:
            # Ctrl-C as a terminal delivers it: SIGINT at its default disposition, also when
            # pytest itself runs in the background (a shell starts background jobs with SIGINT
            # ignored, an ignored signal stays ignored across exec, and Python then keeps it so).
            process = subprocess.Popen(
                [sys.executable, "-m", "batch_pipeline.cli", "status", "forever-1",
                 "--interval", "0.05"],
                stdout=stdout, stderr=stderr, env=env,
                preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
            )  # fmt: skip
        try:
            deadline = time.monotonic() + 60
            while "following batch forever-1" not in stderr_path.read_text():
                assert process.poll() is None, stderr_path.read_text()
                assert time.monotonic() < deadline, "status did not start following"
                time.sleep(0.05)
            time.sleep(0.2)  # a few polls
            process.send_signal(signal.SIGINT)
            process.wait(timeout=30)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
    finally:
        os.close(stdout)
        os.close(terminal)
    err = stderr_path.read_text()
    assert process.returncode == 130, err
    assert err.splitlines()[-1] == "interrupted"
    assert "Traceback" not in err and "KeyboardInterrupt" not in err
