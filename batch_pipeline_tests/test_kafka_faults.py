"""A CLI run killed with SIGKILL while it delivers to Kafka (Tansu), then run again: every
message on the topic, duplicates only from the one call in flight, recognisable by key."""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import pytest

from batch_pipeline.core.ledger import open_ledger
from batch_pipeline_tests.conftest import DEAD_ENDPOINT, read_topic
from batch_pipeline_tests.fault_helpers import (
    SHORT_LEASE,
    cli_env,
    cli_process,
    csv_input,
    kill,
    run_cli,
    wait_for,
    wait_for_lease_to_expire,
)

pytestmark = pytest.mark.slow
CALL = 100  # messages in one KafkaSink call (its default call_messages)


def test_kill_9_while_delivering_to_kafka_then_run_again(
    tmp_path: Path, own_ledger: str, kafka_topic: str, capsys: pytest.CaptureFixture[str]
) -> None:
    data, valid_ids = csv_input(20_000)
    source = tmp_path / "in.csv"
    source.write_bytes(data)
    batch_id = "killed-delivering-kafka"
    args = [
        "run", str(source), "--output", str(tmp_path / "out"), "--deliver", kafka_topic,
        "--batch-id", batch_id, "--chunk-records", "5000", "--records-per-message", "1",
    ]  # fmt: skip
    ledger = open_ledger(own_ledger)

    def sent() -> int:
        return sum(s.messages_sent for s in ledger.chunk_states(batch_id))

    log = tmp_path / "killed.log"
    env = {**cli_env(tmp_path, DEAD_ENDPOINT, own_ledger), **SHORT_LEASE}
    with cli_process(args, env, log) as process:
        wait_for(lambda: sent() > 0, "the first messages acknowledged", process, log)
        kill(process)
    recorded = sent()
    assert 0 < recorded < 20_000, "the run was not killed mid-delivery"

    wait_for_lease_to_expire(ledger, batch_id)  # the killed run's
    code, resumed, _ = run_cli(capsys, *args)  # the same command again
    assert code == 0, resumed
    assert sent() == 20_000

    found = read_topic(kafka_topic)
    bodies: dict[str, set[str]] = defaultdict(set)
    for key, value in found:
        bodies[key].add(value)
    assert set(bodies) == {f"{batch_id}:{n}" for n in range(1, 20_001)}  # every message
    assert all(len(values) == 1 for values in bodies.values())  # a key, one body
    counts: dict[str, int] = defaultdict(int)
    for key, _ in found:
        counts[key] += 1
    twice = sorted(int(key.rsplit(":", 1)[1]) for key, n in counts.items() if n > 1)
    assert all(n <= 2 for n in counts.values())
    # Duplicates, if any, are messages of the one call in flight at the kill: a run of at most
    # one call's numbers after what the ledger had recorded (per chunk, numbered in order).
    assert len(twice) <= CALL
    if twice:
        assert twice == list(range(twice[0], twice[0] + len(twice)))
    records = [r["id"] for _, value in sorted(
        ((k, v) for k, v in found), key=lambda kv: int(kv[0].rsplit(":", 1)[1])
    ) for r in json.loads(value)["batch_data"]]  # fmt: skip
    assert list(dict.fromkeys(str(r) for r in records)) == valid_ids
