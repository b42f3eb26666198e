"""Issue 11, item 7: a ledger that is lost or damaged is noticed.

- Truncated to 0 bytes (or replaced by an empty one) between two runs: the next run used to
  reprocess and redeliver everything without a word. Now ``delivery.json`` beside the results
  says the batch went to the queue, and the run refuses before doing anything; with
  ``--redeliver`` it delivers again, as asked.
- Overwritten with garbage: one clear message naming the ledger and what to do, before Dagster
  starts (exit 2; it used to be ``Exceeded max_retries of 3``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from batch_pipeline.core.ledger import store as ledger_module
from batch_pipeline_tests.fault_helpers import csv_input, drain_messages, run_cli

pytestmark = pytest.mark.slow

RECORDS = 1_000


def forget_open_ledgers() -> None:
    """Close this process's ledger connections, as a new CLI process would not have them."""
    with ledger_module._LEDGERS_LOCK:
        for opened in ledger_module._LEDGERS.values():
            opened.dispose()
        ledger_module._LEDGERS.clear()


def ledger_file(own_ledger: str) -> Path:
    return Path(own_ledger.split("///", 1)[1])


def records_in(messages: list[dict[str, Any]]) -> list[str]:
    return sorted((str(r["id"]) for m in messages for r in m["batch_data"]), key=int)


def test_a_truncated_ledger_does_not_redeliver_without_being_asked(
    tmp_path: Path,
    own_ledger: str,
    sqs_client: Any,
    sqs_queue: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    data, valid_ids = csv_input(RECORDS, (10,))
    source = tmp_path / "leads.csv"
    source.write_bytes(data)
    args = ["run", str(source), "--output", str(tmp_path / "out"), "--deliver", sqs_queue,
            "--chunk-records", "250", "--records-per-message", "50"]  # fmt: skip
    code, first, out = run_cli(capsys, *args)
    assert code == 0, out
    assert records_in(drain_messages(sqs_client, sqs_queue)) == valid_ids

    forget_open_ledgers()
    ledger_file(own_ledger).write_bytes(b"")  # truncated to 0 bytes
    code, _, out = run_cli(capsys, *args)
    assert code == 1, out  # it used to send every message again
    assert f"batch {first['batch_id']} was delivered to {sqs_queue} on" in out
    assert "the ledger at sqlite:///" in out and "has no record of it" in out
    assert "run with --redeliver" in out
    assert drain_messages(sqs_client, sqs_queue) == []  # the queue got nothing more
    valid_dir = Path(first["output"], "valid")
    assert sorted(p.name for p in valid_dir.iterdir()) == [
        f"chunk-{i:05d}.parquet" for i in range(4)
    ]  # outputs left as they were

    code, again, out = run_cli(capsys, *args, "--redeliver")
    assert code == 0, out
    assert again["delivered_messages"] == 20
    assert records_in(drain_messages(sqs_client, sqs_queue)) == valid_ids
    code, after, out = run_cli(capsys, *args)  # the ledger knows again: nothing more is sent
    assert code == 0 and after["delivered_messages"] == 0, out
    assert drain_messages(sqs_client, sqs_queue) == []
    # What the record beside the results says: the latest delivery there.
    record = json.loads(Path(first["output"], "delivery.json").read_text())
    [entry] = record["deliveries"].values()
    assert (entry["target"], entry["destination"]) == (sqs_queue, sqs_queue)
    assert (entry["messages"], entry["records"], entry["run_id"]) == (20, 999, after["run_id"])


def test_a_ledger_overwritten_with_garbage_fails_once_with_a_clear_message(
    tmp_path: Path, own_ledger: str, capsys: pytest.CaptureFixture[str]
) -> None:
    source = tmp_path / "leads.csv"
    source.write_bytes(csv_input(300)[0])
    args = ["run", str(source), "--output", str(tmp_path / "out"), "--chunk-records", "100"]
    code, _, out = run_cli(capsys, *args)
    assert code == 0, out

    forget_open_ledgers()
    path = ledger_file(own_ledger)
    for leftover in path.parent.glob(path.name + "-*"):
        leftover.unlink()
    path.write_bytes(b"\x00garbage, not a database\n" * 2000)
    code, summary, out = run_cli(capsys, *args)
    assert code == 2  # refused before Dagster starts (test_bad_input runs a job into it)
    assert summary["status"] == "ERROR" and summary["run_id"] is None
    assert f"the ledger at {own_ledger} is unusable: file is not a database" in summary["error"]
    assert "Restore it from a backup, or move it away" in summary["error"]
    assert "max_retries" not in out
    assert summary["error"].count("is unusable") == 1
