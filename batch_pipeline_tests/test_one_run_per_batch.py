"""Issue 11, item 5: one run per batch at a time.

Two runs of the same batch started together (two CLI processes, each with its own Dagster
instance, as two shells would; or two ``run_batch`` threads) both used to report success,
process every chunk twice and leave the local outbox with only some of the messages. Now the
batch's lease in the ledger lets exactly one of them work; the other fails at once (at
``plan_chunks``, not retried) saying which run has the batch, and the outbox holds every record
once. A killed holder's lease is taken once it has expired; a holder that this Dagster
instance knows has finished is taken over at once; a run gives the lease back when it ends,
also when a step fails for good.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from dagster import DagsterEventType, DagsterInstance, RunConfig

from batch_pipeline.config import BatchConfig, ChunkingConfig, DeliveryConfig, RetryConfig
from batch_pipeline.core.common.models import ChunkingSettings, DeliverySettings
from batch_pipeline.core.initialize import prepare_batch
from batch_pipeline.core.ledger import open_ledger
from batch_pipeline.core.pipeline import run_batch
from batch_pipeline.core.stores.storage import Storage
from batch_pipeline.definitions import get_batch_job
from batch_pipeline_tests.fault_helpers import (
    CLI,
    FAULTS_MODULE,
    cli_env,
    cli_process,
    csv_input,
    kill,
    run_cli,
    wait_for,
)

pytestmark = pytest.mark.slow

MALFORMED = (3, 777)
BUSY = "is being processed by another run"


def outbox_ids(outbox: Path) -> list[str]:
    return [
        str(record["id"])
        for path in sorted(outbox.glob("chunk-*.jsonl"))
        for line in path.read_text().splitlines()
        for record in json.loads(line)["batch_data"]
    ]


def assert_outbox_once(outbox: Path, valid_ids: list[str]) -> None:
    ids = outbox_ids(outbox)
    duplicated = [i for i, n in Counter(ids).items() if n > 1]
    assert not duplicated, f"delivered twice: {duplicated[:10]}"
    assert sorted(ids, key=int) == valid_ids, "records missing from the outbox"


def separate_env(tmp_path: Path, ledger_url: str, name: str, **extra: str) -> dict[str, str]:
    """A CLI process's environment: the test's ledger, a temporary Dagster instance of its own
    (no DAGSTER_HOME, as a user's shell), the fault processors importable."""
    env = {**cli_env(tmp_path / name, "http://127.0.0.1:9", ledger_url), **extra}
    env["PYTHONFAULTHANDLER"] = "1"  # SIGABRT prints every thread's stack
    del env["DAGSTER_HOME"]
    return env


@pytest.mark.slow
def test_two_cli_runs_of_a_batch_at_once_one_works_the_other_refuses(
    tmp_path: Path, own_ledger: str
) -> None:
    data, valid_ids = csv_input(1_500, MALFORMED)
    source = tmp_path / "leads.csv"
    source.write_bytes(data)
    for trial in range(3):
        output = tmp_path / f"out-{trial}"
        args = [
            "run", str(source), "--output", str(output), "--batch-id", f"twice-{trial}",
            "--processor", "fault_slow", "--processor-options", '{"seconds": 0.6}',
            "--processor-module", FAULTS_MODULE, "--chunk-records", "150",
            "--records-per-message", "20", "--json",
        ]  # fmt: skip
        runs = []
        for name in ("a", "b"):
            (tmp_path / name).mkdir(exist_ok=True)
            env = separate_env(tmp_path, own_ledger, name)
            log = tmp_path / f"{name}-{trial}.log"
            with open(log, "wb") as out:
                process = subprocess.Popen(
                    [CLI, *args], stdout=out, stderr=subprocess.STDOUT, env=env,
                    start_new_session=True,
                )  # fmt: skip
            runs.append((process, log))
        try:
            codes = [process.wait(timeout=180) for process, _ in runs]
        except subprocess.TimeoutExpired:  # a hang: each thread's stack into the logs
            for process, _ in runs:
                if process.poll() is None:
                    os.kill(process.pid, signal.SIGABRT)
            time.sleep(2)
            logs = [log.read_text(errors="replace")[-6000:] for _, log in runs]
            raise AssertionError(logs) from None
        finally:
            for process, _ in runs:
                kill(process)
        outputs = [log.read_text(errors="replace") for _, log in runs]
        assert sorted(codes) == [0, 1], outputs
        winner, loser = (outputs[0], outputs[1]) if codes[0] == 0 else (outputs[1], outputs[0])
        assert f"batch twice-{trial} {BUSY}: run " in loser, loser
        assert "This run did nothing" in loser
        summary = json.loads(winner.strip().splitlines()[-1])
        assert summary["records_out"] == len(valid_ids) and summary["chunks"] == 10
        assert_outbox_once(output / f"twice-{trial}" / "outbox", valid_ids)
        assert open_ledger(own_ledger).lease(f"twice-{trial}") is None  # given back
        progress = open_ledger(own_ledger).progress(f"twice-{trial}")
        assert progress.succeeded == 10 and progress.messages_sent == progress.messages


def test_two_run_batch_threads_of_a_batch_one_works(tmp_path: Path, own_ledger: str) -> None:
    from batch_pipeline.core.common.errors import BatchBusyError

    data, valid_ids = csv_input(600, MALFORMED)
    source = tmp_path / "leads.csv"
    source.write_bytes(data)
    storage = Storage()
    spec = prepare_batch(
        storage, str(source), processor="fault_slow", processor_options={"seconds": 0.2},
        processor_modules=(FAULTS_MODULE,), chunking=ChunkingSettings(chunk_records=100),
        output=str(tmp_path / "out"), delivery=DeliverySettings("local", records_per_message=7),
        batch_id="threads",
    )  # fmt: skip
    ledger = open_ledger(own_ledger)
    barrier = threading.Barrier(2)
    outcomes: list[Any] = [None, None]

    def run(i: int) -> None:
        barrier.wait()
        try:
            outcomes[i] = run_batch(storage, spec, ledger, holder=f"thread-{i}")
        except BatchBusyError as exc:
            outcomes[i] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    refused = [o for o in outcomes if isinstance(o, BatchBusyError)]
    done = [o for o in outcomes if not isinstance(o, BatchBusyError)]
    assert len(refused) == len(done) == 1, outcomes
    assert "batch threads is being processed by another run: run thread-" in str(refused[0])
    assert done[0].result.records_out == len(valid_ids)
    assert_outbox_once(tmp_path / "out" / "threads" / "outbox", valid_ids)
    assert all(s.attempts == 1 for s in ledger.chunk_states("threads"))  # each chunk once
    assert ledger.lease("threads") is None


@pytest.mark.slow
def test_a_killed_holders_lease_is_taken_once_it_expired(
    tmp_path: Path, own_ledger: str, capsys: pytest.CaptureFixture[str], monkeypatch: Any
) -> None:
    from batch_pipeline.core.common.errors import BatchBusyError

    data, valid_ids = csv_input(1_000, MALFORMED)
    source = tmp_path / "leads.csv"
    source.write_bytes(data)
    lease_env = {
        "BATCH_PIPELINE_LEASE_TTL_SECONDS": "4",
        "BATCH_PIPELINE_LEASE_HEARTBEAT_SECONDS": "0.5",
    }
    args = [
        "run", str(source), "--output", str(tmp_path / "out"), "--batch-id", "killed",
        "--processor", "fault_slow", "--processor-options", '{"seconds": 0.5}',
        "--processor-module", FAULTS_MODULE, "--chunk-records", "100",
    ]  # fmt: skip
    ledger = open_ledger(own_ledger)
    log = tmp_path / "killed.log"
    (tmp_path / "first").mkdir()
    env = separate_env(tmp_path, own_ledger, "first", **lease_env)
    with cli_process(args, env, log) as process:
        wait_for(lambda: ledger.progress("killed").succeeded >= 2, "2 chunks done", process, log)
        kill(process)
    lease = ledger.lease("killed")
    assert lease is not None and lease.expires_at > lease.heartbeat_at
    # Its holder is gone, but nobody can know that before its lease expires.
    with pytest.raises(BatchBusyError, match=f"run {lease.holder}"):
        ledger.acquire_lease("killed", "another-run", ttl=60)
    wait_for(lambda: time.time() > lease.expires_at, "the killed run's lease to expire")
    for key, value in lease_env.items():
        monkeypatch.setenv(key, value)
    code, summary, out = run_cli(capsys, *args)
    assert code == 0, out
    assert summary["records_out"] == len(valid_ids) and summary["chunks"] == 10
    assert_outbox_once(tmp_path / "out" / "killed" / "outbox", valid_ids)
    assert ledger.lease("killed") is None


# Under Dagster: takeover of a finished holder, refusal, release on failure --------------------


def job_config(source: Path, output: Path, batch_id: str, **extra: Any) -> BatchConfig:
    return BatchConfig(
        source=str(source), output=str(output), batch_id=batch_id,
        chunking=ChunkingConfig(chunk_records=200), retry=RetryConfig(base_delay_seconds=0.01),
        **extra,
    )  # fmt: skip


def execute(instance: DagsterInstance, config: BatchConfig) -> Any:
    return get_batch_job().execute_in_process(
        run_config=RunConfig(ops={"initialize": config}), instance=instance, raise_on_error=False
    )


def step_failures(result: Any, step: str) -> list[str]:
    return [
        e.step_failure_data.error.message
        for e in result.all_events
        if e.event_type == DagsterEventType.STEP_FAILURE and e.step_key == step
    ]


def test_finished_holders_are_taken_over_and_unknown_ones_refused(
    tmp_path: Path, own_ledger: str
) -> None:
    data, valid_ids = csv_input(1_000, MALFORMED)
    source = tmp_path / "leads.csv"
    source.write_bytes(data)
    ledger = open_ledger(own_ledger)
    with DagsterInstance.ephemeral() as instance:
        first = execute(instance, job_config(source, tmp_path / "out", "leased"))
        assert first.success and ledger.lease("leased") is None  # given back at the end
        # A run that ended without giving the lease back (stopped from the UI, say): this
        # instance knows it has finished, so the next run takes the lease at once.
        ledger.acquire_lease("leased", first.run_id, ttl=3600)
        second = execute(instance, job_config(source, tmp_path / "out", "leased", force=True))
        assert second.success, step_failures(second, "plan_chunks")
        assert ledger.lease("leased") is None
        # A holder this instance does not know (a CLI run elsewhere) must expire first.
        ledger.acquire_lease("leased", "run-elsewhere", ttl=3600)
        third = execute(instance, job_config(source, tmp_path / "out", "leased"))
        assert not third.success
        [failure] = step_failures(third, "plan_chunks")  # one attempt: not retried
        assert f"batch leased {BUSY}: run run-elsewhere" in failure
        lease = ledger.lease("leased")  # the failure hook gives back only its own run's
        assert lease is not None and lease.holder == "run-elsewhere"
        assert [e.step_key for e in third.all_events if e.is_step_start] == [
            "initialize", "plan_chunks"
        ]  # fmt: skip
    assert_outbox_once(tmp_path / "out" / "leased" / "outbox", valid_ids)


def test_a_step_that_fails_for_good_gives_the_lease_back(
    tmp_path: Path, own_ledger: str, aws_endpoint: str
) -> None:
    source = tmp_path / "leads.csv"
    source.write_bytes(csv_input(300)[0])
    ledger = open_ledger(own_ledger)
    with DagsterInstance.ephemeral() as instance:
        config = job_config(
            source, tmp_path / "out", "no-queue",
            delivery=DeliveryConfig(target="sqs://no-such-queue"),
        )  # fmt: skip
        result = execute(instance, config)
        assert not result.success
        assert "no-such-queue" in step_failures(result, "deliver")[0]
        assert ledger.lease("no-queue") is None


def test_a_retried_step_keeps_the_lease(tmp_path: Path, own_ledger: str) -> None:
    """A chunk that fails twice with a transient error and then succeeds: its retries renew
    the lease the run still holds (a retry is not a failure for good)."""
    data, valid_ids = csv_input(600)
    source = tmp_path / "leads.csv"
    source.write_bytes(data)
    counter = tmp_path / "attempts"
    options = {"column": "id", "value": "250", "kind": "transient", "times": 2,
               "counter": str(counter)}  # fmt: skip
    with DagsterInstance.ephemeral() as instance:
        result = execute(instance, job_config(
            source, tmp_path / "out", "flaky", processor="fault_fail_when",
            processor_options=options, processor_modules=[FAULTS_MODULE],
        ))  # fmt: skip
    assert result.success
    assert counter.read_text() == "3"
    assert_outbox_once(tmp_path / "out" / "flaky" / "outbox", valid_ids)
    assert open_ledger(own_ledger).lease("flaky") is None


def test_lease_settings_come_from_the_environment(monkeypatch: Any) -> None:
    from batch_pipeline.core.common.errors import ConfigError
    from batch_pipeline.core.ledger import LeaseSettings
    from batch_pipeline.settings import lease_settings

    assert lease_settings() == LeaseSettings(60.0, 10.0)
    monkeypatch.setenv("BATCH_PIPELINE_LEASE_TTL_SECONDS", "6")
    assert lease_settings() == LeaseSettings(6.0, 2.0)
    monkeypatch.setenv("BATCH_PIPELINE_LEASE_HEARTBEAT_SECONDS", "6")
    with pytest.raises(ConfigError, match="must be shorter than"):
        lease_settings()
    monkeypatch.setenv("BATCH_PIPELINE_LEASE_TTL_SECONDS", "soon")
    with pytest.raises(ConfigError, match="not a number of seconds"):
        lease_settings()
    assert os.environ["BATCH_PIPELINE_LEASE_HEARTBEAT_SECONDS"] == "6"
