"""Issue 11, item 13: re-running a batch with changed settings.

Any change used to be refused once messages went out, even with ``--force``, even for the
README's own launchpad example pointed at the demo file. Now a changed output folder, the local
outbox, delivery none or another queue is a new destination and the run proceeds; ``--force``
processes every chunk with the new settings (the local outbox is regenerated, stale files go);
only a change that would send other messages to the queue that has the batch's messages is
refused, saying which setting changed and what to do, and ``--redeliver`` sends them again.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from dagster import RunConfig

from batch_pipeline.config import BatchConfig, ChunkingConfig
from batch_pipeline.core.inputs.sample_data import DEMO_SCHEMA, write_sample
from batch_pipeline.definitions import get_batch_job
from batch_pipeline_tests.fault_helpers import csv_input, drain_messages, run_cli

pytestmark = pytest.mark.slow

# The README's launchpad example (section "Running"), pointed at the demo file.
README_OPTIONS = {
    "columns": {
        "email": {"type": "string", "required": True, "pattern": "^[^@ ]+@[^@ ]+$"},
        "amount": {"type": "float64", "min": 0},
    }
}


def outbox_records(outbox: Path) -> list[dict[str, Any]]:
    return [
        record
        for path in sorted(outbox.glob("chunk-*.jsonl"))
        for line in path.read_text().splitlines()
        for record in json.loads(line)["batch_data"]
    ]


def test_the_readme_launchpad_example_runs_on_the_demo_file_after_the_demo(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    csv_path, schema_path = write_sample(str(tmp_path / "demo" / "input"), 3_000)
    code, demo, out = run_cli(
        capsys, "run", csv_path, "--processor", "validate",
        "--processor-options", f"@{schema_path}", "--chunk-records", "250",
        "--output", str(tmp_path / "demo" / "output"),
    )  # fmt: skip
    assert code == 0 and demo["delivered_messages"], out
    config = BatchConfig(
        source=csv_path,
        processor="validate",
        processor_options=README_OPTIONS,
        chunking=ChunkingConfig(chunk_records=500_000, max_chunks=200),
        output=str(tmp_path / "results"),
        customer_id="customer123",
        tenant_id="tenant456",
    )
    result = get_batch_job().execute_in_process(
        run_config=RunConfig(ops={"initialize": config}), raise_on_error=False
    )
    assert result.success, [
        e.step_failure_data.error.message for e in result.all_events if e.is_step_failure
    ]
    batch = result.output_for_node("aggregate")
    assert batch.batch_id == demo["batch_id"] and batch.chunks == 1
    assert batch.records_in == 3_000 == batch.records_out + batch.records_rejected
    delivered = outbox_records(tmp_path / "results" / batch.batch_id / "outbox")
    assert len(delivered) == batch.records_out
    # The demo's own results and outbox are untouched.
    demo_outbox = outbox_records(Path(demo["output"]) / "outbox")
    assert len(demo_outbox) == demo["records_out"]


def test_force_after_changing_processor_options_reprocesses_and_regenerates_the_outbox(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    csv_path, schema_path = write_sample(str(tmp_path / "input"), 2_000, invalid_fraction=0.05)
    args = ["run", csv_path, "--processor", "validate", "--chunk-records", "300",
            "--records-per-message", "25", "--output", str(tmp_path / "out")]  # fmt: skip
    code, first, out = run_cli(capsys, *args, "--processor-options", f"@{schema_path}")
    assert code == 0, out
    outbox = Path(first["output"]) / "outbox"
    assert len(outbox_records(outbox)) == first["records_out"]
    # Stricter: only leads of one industry are valid now.
    stricter = json.loads(json.dumps(DEMO_SCHEMA))
    stricter["columns"]["industry"]["allowed"] = stricter["columns"]["industry"]["allowed"][:1]
    stricter["columns"]["industry"]["required"] = True
    code, forced, out = run_cli(
        capsys, *args, "--processor-options", json.dumps(stricter), "--force"
    )
    assert code == 0, out
    assert forced["batch_id"] == first["batch_id"]
    assert 0 < forced["records_out"] < first["records_out"]
    assert forced["records_in"] == 2_000 == forced["records_out"] + forced["records_rejected"]
    delivered = outbox_records(outbox)
    assert len(delivered) == forced["records_out"]  # only the new valid records, once each
    industry = stricter["columns"]["industry"]["allowed"][0]
    assert {r["industry"] for r in delivered} == {industry}
    assert len({r["lead_id"] for r in delivered}) == len(delivered)
    assert sorted(p.name for p in outbox.iterdir()) == [f"chunk-{i:05d}.jsonl" for i in range(7)]


def test_changed_settings_to_the_same_queue_are_refused_and_another_queue_is_delivered(
    tmp_path: Path,
    sqs_client: Any,
    sqs_queue: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    data, valid_ids = csv_input(900, (4, 500))
    source = tmp_path / "leads.csv"
    source.write_bytes(data)

    def args(queue: str, *extra: str) -> list[str]:
        return ["run", str(source), "--output", str(tmp_path / "out"), "--deliver", queue,
                "--batch-id", "queued", "--chunk-records", "300", *extra]  # fmt: skip

    def ids(messages: list[dict[str, Any]]) -> list[str]:
        return sorted((str(r["id"]) for m in messages for r in m["batch_data"]), key=int)

    code, _, out = run_cli(capsys, *args(sqs_queue, "--records-per-message", "50"))
    assert code == 0, out
    assert ids(drain_messages(sqs_client, sqs_queue)) == valid_ids

    # Other packing to the same queue: its messages would carry the records again.
    changed = args(sqs_queue, "--records-per-message", "20")
    code, summary, out = run_cli(capsys, *changed)
    assert code == 1
    assert f"batch queued delivered 18 message(s) to {sqs_queue}" in summary["error"]
    packing = "the message packing (records_per_message, max_message_bytes, key_column)"
    assert packing in summary["error"]
    assert "--redeliver" in summary["error"] and "--batch-id" in summary["error"]
    assert drain_messages(sqs_client, sqs_queue) == []
    code, summary, out = run_cli(capsys, *changed, "--force")  # --force does not change that
    assert code == 1 and "changed since" in summary["error"], out

    code, redelivered, out = run_cli(capsys, *changed, "--redeliver")
    assert code == 0 and redelivered["delivered_messages"] == 45, out
    assert ids(drain_messages(sqs_client, sqs_queue)) == valid_ids

    # Another queue is a new destination: delivered there, whatever the settings.
    other = sqs_client.create_queue(QueueName=f"{sqs_queue.rsplit('/', 1)[1]}-other")["QueueUrl"]
    try:
        code, moved, out = run_cli(capsys, *args(other, "--records-per-message", "30"))
        assert code == 0 and moved["delivered_messages"] == 30, out
        assert ids(drain_messages(sqs_client, other)) == valid_ids
        assert drain_messages(sqs_client, sqs_queue) == []
    finally:
        sqs_client.delete_queue(QueueUrl=other)
