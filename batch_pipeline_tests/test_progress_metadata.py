"""Progress and results as metadata: each finished chunk reports the batch's counters from the
ledger (exact, reaching the totals), and the file's partition of ``batch_results`` carries the
totals, rejection reasons, chunk timings, throughput, chunk size and links, typed so that the
UI plots them."""

from pathlib import Path

import pytest
from dagster import (
    DagsterEventType,
    DagsterInstance,
    PathMetadataValue,
    RunConfig,
    TableMetadataValue,
)

from batch_pipeline.config import BatchConfig, ChunkingConfig, FailureConfig
from batch_pipeline.core.inputs.sample_data import DEMO_SCHEMA, write_sample
from batch_pipeline.definitions import get_batch_job
from batch_pipeline.partitions import SOURCE_FILES

pytestmark = pytest.mark.slow

RECORDS = 2_000
CHUNK = 250
COUNTERS = (
    "chunks_total",
    "chunks_pending",
    "chunks_running",
    "chunks_succeeded",
    "chunks_failed",
    "chunks_dead_lettered",
    "records_processed",
    "records_rejected",
)


@pytest.fixture(scope="module")
def leads(tmp_path_factory) -> Path:
    csv_path, _ = write_sample(str(tmp_path_factory.mktemp("leads")), RECORDS, 0.05)
    return Path(csv_path)


def run(config: BatchConfig, instance: DagsterInstance, raise_on_error: bool = True):
    return get_batch_job().execute_in_process(
        run_config=RunConfig(ops={"initialize": config}),
        instance=instance,
        raise_on_error=raise_on_error,
    )


def validate_config(leads: Path, tmp_path: Path) -> BatchConfig:
    return BatchConfig(
        source=str(leads),
        processor="validate",
        processor_options=DEMO_SCHEMA,
        chunking=ChunkingConfig(chunk_records=CHUNK),
        output=str(tmp_path / "out"),
    )


def chunk_outputs(result) -> list[dict]:
    """The output metadata of the process_chunk steps, in the order they finished."""
    found = []
    for event in result.all_events:
        if event.event_type == DagsterEventType.STEP_OUTPUT and (event.step_key or "").startswith(
            "process_chunk["
        ):
            found.append(event.event_specific_data.metadata)
    return found


def test_each_chunk_reports_the_batch_counters_up_to_the_totals(leads, tmp_path):
    config = validate_config(leads, tmp_path)
    with DagsterInstance.ephemeral() as instance:
        result = run(config, instance)
    batch = result.output_for_node("aggregate")
    outputs = chunk_outputs(result)
    total = RECORDS // CHUNK
    assert len(outputs) == total
    processed = 0
    for done, metadata in enumerate(outputs, start=1):
        values = {k: metadata[k].value for k in (*COUNTERS, "percent_complete")}
        for key in COUNTERS:
            assert isinstance(values[key], int), key
        assert isinstance(values["percent_complete"], float)
        assert isinstance(metadata["records_per_second"].value, float)
        # The in-process executor runs chunks one after another: the k-th sees k done.
        processed += metadata["chunk_records_in"].value
        assert values == {
            "chunks_total": total,
            "chunks_pending": total - done,
            "chunks_running": 0,
            "chunks_succeeded": done,
            "chunks_failed": 0,
            "chunks_dead_lettered": 0,
            "records_processed": processed,
            "records_rejected": values["records_rejected"],
            "percent_complete": round(100.0 * done / total, 2),
        }
        assert metadata["records_per_second"].value > 0
    last = {k: outputs[-1][k].value for k in COUNTERS}
    assert last["records_processed"] == RECORDS == batch.records_in
    assert last["records_rejected"] == batch.records_rejected > 0
    assert outputs[-1]["percent_complete"].value == 100.0


def test_the_files_partition_carries_totals_tables_and_links(leads, tmp_path):
    config = validate_config(leads, tmp_path)
    with DagsterInstance.ephemeral() as instance:
        result = run(config, instance)
        assert instance.get_dynamic_partitions(SOURCE_FILES.name) == [str(leads)]
    batch = result.output_for_node("aggregate")
    (event,) = [
        e for e in result.all_events if e.event_type == DagsterEventType.ASSET_MATERIALIZATION
    ]
    materialization = event.step_materialization_data.materialization
    assert materialization.partition == str(leads)
    metadata = materialization.metadata
    numbers = {
        "records_in": RECORDS,
        "records_out": batch.records_out,
        "records_rejected": batch.records_rejected,
        "records_processed": RECORDS,
        "chunks_total": RECORDS // CHUNK,
        "chunks_succeeded": RECORDS // CHUNK,
        "chunks_failed": 0,
        "chunks_dead_lettered": 0,
        "chunks_processed_this_run": RECORDS // CHUNK,
        "chunk_records": CHUNK,
        "bytes_read": batch.bytes_read,
        "peak_rss_bytes": batch.peak_rss_bytes,
    }
    assert {k: metadata[k].value for k in numbers} == numbers
    for key in ("percent_complete", "records_per_second", "processing_seconds", "wall_seconds",
                "rejection_rate"):  # fmt: skip
        assert isinstance(metadata[key].value, float), key
    assert metadata["percent_complete"].value == 100.0
    assert metadata["records_per_second"].value > 0
    assert metadata["rejection_rate"].value == pytest.approx(batch.records_rejected / RECORDS)
    reasons = metadata["rejection_reasons"]
    assert isinstance(reasons, TableMetadataValue)
    assert {r.data["reason"]: r.data["records"] for r in reasons.records} == (
        batch.rejection_reasons
    )
    timings = metadata["chunk_timings"]
    assert isinstance(timings, TableMetadataValue)
    assert [r.data["chunk"] for r in timings.records] == list(range(RECORDS // CHUNK))
    assert sum(r.data["records_in"] for r in timings.records) == RECORDS
    assert all(r.data["status"] == "succeeded" and r.data["seconds"] > 0 for r in timings.records)
    out = tmp_path / "out" / batch.batch_id
    links = {
        "manifest": out / "manifest.json",
        "results": out / "valid",
        "rejected": out / "rejected",
        "dead_letters": out / "dead_letters",
    }
    for key, path in links.items():
        assert isinstance(metadata[key], PathMetadataValue), key
        assert metadata[key].value == str(path)
    assert (out / "manifest.json").exists() and any((out / "valid").iterdir())


def test_a_failed_batch_is_observed_on_its_partition(leads, tmp_path):
    """A batch beyond its tolerance fails the run; its partition still shows what happened."""
    config = BatchConfig(
        source=str(leads),
        processor="fault_fail_when",
        processor_options={"column": "lead_id", "value": "300"},
        processor_modules=["batch_pipeline_tests.fault_processors"],
        chunking=ChunkingConfig(chunk_records=CHUNK),
        output=str(tmp_path / "out"),
        failures=FailureConfig(tolerated_failure_count=0),
    )
    with DagsterInstance.ephemeral() as instance:
        result = run(config, instance, raise_on_error=False)
    assert not result.success
    outputs = chunk_outputs(result)
    assert outputs[-1]["chunks_dead_lettered"].value == 1
    assert outputs[-1]["chunks_succeeded"].value == RECORDS // CHUNK - 1
    observations = [
        e for e in result.all_events if e.event_type == DagsterEventType.ASSET_OBSERVATION
    ]
    assert len(observations) == 1
    observation = observations[0].asset_observation_data.asset_observation
    assert observation.partition == str(leads)
    assert observation.metadata["status"].value == "failed"
    assert observation.metadata["chunks_dead_lettered"].value == 1
    assert not [
        e for e in result.all_events if e.event_type == DagsterEventType.ASSET_MATERIALIZATION
    ]
