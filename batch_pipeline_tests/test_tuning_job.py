"""chunking.auto through the job: a cold start uses the configured size, later batches of the
same workload get the optimizer's size with its reasons in the metadata, and a batch run before
keeps the size it was planned with."""

from pathlib import Path

import pytest
from dagster import DagsterEventType, DagsterInstance, RunConfig

from batch_pipeline.config import BatchConfig, ChunkingConfig, DeliveryConfig
from batch_pipeline.core.inputs.sample_data import DEMO_SCHEMA, write_sample
from batch_pipeline.core.ledger import open_ledger
from batch_pipeline.definitions import get_batch_job

pytestmark = pytest.mark.slow

RECORDS = 4_000
COLD = 500


def run(source: Path, out: Path, instance: DagsterInstance):
    config = BatchConfig(
        source=str(source),
        processor="validate",
        processor_options=DEMO_SCHEMA,
        chunking=ChunkingConfig(chunk_records=COLD, auto=True),
        output=str(out),
        delivery=DeliveryConfig(target="none"),
    )
    return get_batch_job().execute_in_process(
        run_config=RunConfig(ops={"initialize": config}), instance=instance
    )


def initialize_metadata(result) -> dict:
    (event,) = [
        e
        for e in result.all_events
        if e.event_type == DagsterEventType.STEP_OUTPUT and e.step_key == "initialize"
    ]
    return {k: v.value for k, v in event.event_specific_data.metadata.items()}


def materialization(result) -> dict:
    (event,) = [
        e for e in result.all_events if e.event_type == DagsterEventType.ASSET_MATERIALIZATION
    ]
    metadata = event.step_materialization_data.materialization.metadata
    return {k: v.value for k, v in metadata.items()}


def test_auto_chunk_size_starts_cold_then_follows_the_history(tmp_path, own_ledger):
    sources = []
    for name in ("a", "b"):
        folder = tmp_path / name
        folder.mkdir()
        csv_path, _ = write_sample(str(folder), RECORDS, 0.05)
        sources.append(Path(csv_path))
    out = tmp_path / "out"
    with DagsterInstance.ephemeral() as instance:
        first = run(sources[0], out, instance)
        cold = initialize_metadata(first)
        assert cold["tuning_cold_start"] == 1
        assert cold["tuning_chunk_records"] == COLD
        assert materialization(first)["chunk_records"] == COLD
        assert first.output_for_node("aggregate").chunks == RECORDS // COLD

        # Eight chunks of 500 records last milliseconds each: far below the 2.1 s a step needs
        # for the in-process step cost to stay under 5%, so the next batch gets bigger chunks.
        second = run(sources[1], out, instance)
        warm = initialize_metadata(second)
        assert warm["tuning_cold_start"] == 0
        assert warm["tuning_chunk_records"] == 2 * COLD, warm["tuning_reasons"]  # x2 at most
        assert "grow" in warm["tuning_reasons"], warm
        assert isinstance(warm["tuning_rate_records_per_second"], float)
        done = materialization(second)
        assert done["chunk_records"] == warm["tuning_chunk_records"]
        assert done["tuning_chunk_records"] == warm["tuning_chunk_records"]
        batch = second.output_for_node("aggregate")
        assert batch.records_in == RECORDS

        # The first file again: the same batch keeps the size it was planned with.
        again = run(sources[0], out, instance)
        assert "tuning_chunk_records" not in initialize_metadata(again)
        assert materialization(again)["chunk_records"] == COLD
    stored = open_ledger(own_ledger).batch(batch.batch_id)
    assert stored is not None
    assert stored.config_dict()["tuning"]["tuning_chunk_records"] == warm["tuning_chunk_records"]
