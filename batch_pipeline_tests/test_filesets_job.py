"""A folder of small files through ``batch_job``: a few mapped steps, each reading many whole
files; the folder's partition materialized; a redrive reads the same files even after new ones
arrived."""

from __future__ import annotations

from pathlib import Path

import pytest
from dagster import DagsterEventType, RunConfig

from batch_pipeline.config import BatchConfig, ChunkingConfig, DeliveryConfig, RedriveConfig
from batch_pipeline.core.ledger import open_ledger
from batch_pipeline.definitions import get_batch_job, get_redrive_job
from batch_pipeline.partitions import partition_key
from batch_pipeline.settings import default_ledger_url

pytestmark = pytest.mark.slow


def write_files(folder: Path, first: int, end: int, rows: int = 20) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(first, end):
        body = "id,amount\n" + "".join(f"{i * 1000 + j},{j}\n" for j in range(rows))
        (folder / f"part-{i:04d}.csv").write_text(body)


def steps_of(result, op: str) -> list[str]:
    return [
        e.step_key
        for e in result.all_events
        if e.event_type == DagsterEventType.STEP_SUCCESS and e.step_key.startswith(op)
    ]


def test_sixty_small_files_take_a_few_steps_and_a_redrive_reads_the_same_files(tmp_path):
    folder = tmp_path / "drop"
    write_files(folder, 0, 60)
    config = BatchConfig(
        source=str(folder),
        processor="validate",
        processor_options={"columns": {"id": {"type": "int64"}, "amount": {"type": "int64"}}},
        chunking=ChunkingConfig(chunk_records=400),
        output=str(tmp_path / "out"),
        delivery=DeliveryConfig(target="none"),
    )
    result = get_batch_job().execute_in_process(run_config=RunConfig(ops={"initialize": config}))
    assert result.success
    batch = result.output_for_node("aggregate")
    assert batch.records_in == batch.records_out == 1_200
    chunks = steps_of(result, "process_chunk")
    assert len(chunks) == batch.chunks and 2 <= len(chunks) <= 6  # not 60 steps
    spec = result.output_for_node("initialize")
    assert spec.source.layout["files"] == 60 and spec.source.uri == str(folder) + "/"
    materialization = next(
        e.step_materialization_data.materialization
        for e in result.all_events
        if e.event_type == DagsterEventType.ASSET_MATERIALIZATION
    )
    assert materialization.partition == partition_key(str(folder) + "/")

    # New files arrive; the batch's own files are what a redrive reads.
    write_files(folder, 60, 70)
    ledger = open_ledger(default_ledger_url())
    assert len(ledger.batch(batch.batch_id).config_dict()["members"]) == 60
    redrive = get_redrive_job().execute_in_process(
        run_config=RunConfig(ops={"load_batch": RedriveConfig(batch_id=batch.batch_id)})
    )
    assert redrive.success
    again = redrive.output_for_node("aggregate")
    assert again.batch_id == batch.batch_id and again.records_in == 1_200
