"""batch_job end to end with execute_in_process, on local files and the embedded defaults."""

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest
from dagster import DagsterEventType, RunConfig

from batch_pipeline.config import BatchConfig, ChunkingConfig
from batch_pipeline.core.inputs.sample_data import DEMO_SCHEMA, write_sample
from batch_pipeline.core.processing.processors import get_processor
from batch_pipeline.definitions import get_batch_job
from batch_pipeline_tests.core.helpers import carriage_return_csv


@pytest.fixture(scope="module")
def leads(tmp_path_factory) -> Path:
    """3,000 sample leads (quoted commas, quotes and line breaks in notes; ~5% invalid)."""
    directory = tmp_path_factory.mktemp("leads")
    csv_path, _ = write_sample(str(directory), 3_000, invalid_fraction=0.05)
    return Path(csv_path)


def run(config: BatchConfig, raise_on_error: bool = True):
    return get_batch_job().execute_in_process(
        run_config=RunConfig(ops={"initialize": config}), raise_on_error=raise_on_error
    )


def whole_file_validation(path: Path):
    """What validate gives on the whole file read at once: the reference for chunked runs."""
    table = pacsv.read_csv(
        path,
        parse_options=pacsv.ParseOptions(newlines_in_values=True),
        convert_options=pacsv.ConvertOptions(
            column_types={c: pa.string() for c in DEMO_SCHEMA["columns"]},
            strings_can_be_null=False,
        ),
    )
    table = table.cast(pa.schema([(n, pa.string()) for n in table.column_names]))
    return table, get_processor("validate", DEMO_SCHEMA).process(table)


def validate_config(leads: Path, tmp_path: Path, **chunking) -> BatchConfig:
    return BatchConfig(
        source=str(leads),
        processor="validate",
        processor_options=DEMO_SCHEMA,
        chunking=ChunkingConfig(**chunking),
        output=str(tmp_path / "out"),
    )


def test_chunked_run_gives_the_records_a_whole_file_validation_gives(leads, tmp_path):
    result = run(validate_config(leads, tmp_path, chunk_records=400))
    batch = result.output_for_node("aggregate")
    table, expected = whole_file_validation(leads)

    assert batch.chunks == 8
    assert batch.records_in == table.num_rows == 3_000
    assert batch.records_out == expected.valid.num_rows
    assert batch.records_rejected == len(expected.rejected)
    assert batch.records_in == batch.records_out + batch.records_rejected
    valid = pa.concat_tables(pq.read_table(f) for f in batch.valid_files)
    assert valid.column("lead_id").to_pylist() == expected.valid.column("lead_id").to_pylist()
    assert valid.equals(expected.valid.cast(valid.schema))


@pytest.mark.slow
def test_manifest_lists_results_in_chunk_order_with_totals(leads, tmp_path):
    result = run(validate_config(leads, tmp_path, chunk_records=1_000))
    batch = result.output_for_node("aggregate")
    manifest = json.loads(Path(batch.manifest_uri).read_text())

    assert manifest["batch_id"] == batch.batch_id
    assert manifest["run_id"] == result.run_id
    assert manifest["totals"]["records_in"] == 3_000
    assert manifest["totals"]["records_out"] + manifest["totals"]["records_rejected"] == 3_000
    succeeded = manifest["results"]["succeeded"]
    assert [entry["chunk"] for entry in succeeded] == [0, 1, 2]
    assert manifest["files"]["valid"] == [entry["valid"] for entry in succeeded]
    assert manifest["results"]["failed"] == [] and manifest["results"]["pending"] == []
    assert manifest["plan"]["chunks"] == 3
    assert manifest["source"]["uri"] == str(leads)
    assert sum(manifest["rejection_reasons"].values()) >= batch.records_rejected
    rejected = pa.concat_tables(pq.read_table(f) for f in manifest["files"]["rejected"])
    assert rejected.num_rows == batch.records_rejected
    assert rejected.column("_reason").null_count == 0


@pytest.mark.slow
def test_rejected_records_name_their_chunk_and_line(leads, tmp_path):
    result = run(validate_config(leads, tmp_path, chunk_records=1_000))
    batch = result.output_for_node("aggregate")
    rejected = pa.concat_tables(pq.read_table(f) for f in batch.rejected_files)
    lines = leads.read_text().split("\n")
    for row in rejected.slice(0, 50).to_pylist():
        # The record's line in the file starts with its lead id (quoted or not).
        assert lines[row["_line"] - 1].split(",")[0].strip('"') == row["lead_id"]
        assert row["_chunk"] == (int(row["lead_id"]) - 1) // 1_000


@pytest.mark.slow
def test_run_materializes_batch_results_with_totals(leads, tmp_path):
    result = run(validate_config(leads, tmp_path, chunk_records=1_000))
    materializations = [
        e for e in result.all_events if e.event_type == DagsterEventType.ASSET_MATERIALIZATION
    ]
    assert len(materializations) == 1
    materialization = materializations[0].step_materialization_data.materialization
    assert materialization.asset_key.to_user_string() == "batch_results"
    metadata = {k: v.value for k, v in materialization.metadata.items()}
    batch = result.output_for_node("aggregate")
    assert metadata["records_in"] == 3_000
    assert metadata["records_out"] == batch.records_out
    assert metadata["records_rejected"] == batch.records_rejected
    assert metadata["manifest"] == batch.manifest_uri
    assert metadata["batch_id"] == batch.batch_id


@pytest.mark.slow
def test_outbox_holds_every_valid_record_once_in_order(leads, tmp_path):
    result = run(validate_config(leads, tmp_path, chunk_records=1_000))
    batch = result.output_for_node("aggregate")
    delivered = result.output_for_node("deliver")
    outbox = sorted((Path(batch.manifest_uri).parent / "outbox").glob("chunk-*.jsonl"))
    messages = [json.loads(line) for f in outbox for line in f.read_text().splitlines()]

    assert len(outbox) == 3
    assert delivered.messages == len(messages)
    assert [m["batch_number"] for m in messages] == list(range(1, len(messages) + 1))
    assert {m["total_batches"] for m in messages} == {len(messages)}
    assert {m["batch_id"] for m in messages} == {batch.batch_id}
    assert {m["file_key"] for m in messages} == {str(leads)}
    assert all(len(m["batch_data"]) <= 100 for m in messages)
    ids = [record["lead_id"] for m in messages for record in m["batch_data"]]
    valid = pa.concat_tables(pq.read_table(f) for f in batch.valid_files)
    assert ids == valid.column("lead_id").to_pylist()


@pytest.mark.slow
def test_same_input_gets_same_batch_id_and_a_rerun_lands_on_the_same_files(leads, tmp_path):
    first = run(validate_config(leads, tmp_path, chunk_records=1_000)).output_for_node("aggregate")
    second = run(validate_config(leads, tmp_path, chunk_records=1_000)).output_for_node("aggregate")
    assert first.batch_id == second.batch_id
    assert first.valid_files == second.valid_files
    assert first.records_out == second.records_out


@pytest.mark.slow
def test_changed_input_gets_another_batch_id(tmp_path):
    source = tmp_path / "in.csv"
    source.write_text("a,b\n1,2\n")
    first = run(BatchConfig(source=str(source), output=str(tmp_path / "o")))
    source.write_text("a,b\n1,2\n3,4\n")
    second = run(BatchConfig(source=str(source), output=str(tmp_path / "o")))
    assert (
        first.output_for_node("initialize").batch_id
        != second.output_for_node("initialize").batch_id
    )
    assert second.output_for_node("aggregate").records_in == 2


@pytest.fixture
def thousand_rows(tmp_path) -> Path:
    source = tmp_path / "rows.csv"
    source.write_text("n\n" + "".join(f"{i}\n" for i in range(1_000)))
    return source


@pytest.mark.slow
def test_two_hundred_mapped_steps_complete(thousand_rows, tmp_path):
    result = run(
        BatchConfig(
            source=str(thousand_rows),
            chunking=ChunkingConfig(chunk_records=5, max_chunks=200),
            output=str(tmp_path / "out"),
        )
    )
    steps = [e for e in result.all_events if e.is_step_success]
    chunk_steps = [e for e in steps if e.step_key.startswith("process_chunk[")]
    assert len(chunk_steps) == 200
    assert not [e for e in result.all_events if e.is_step_failure]
    assert result.output_for_node("aggregate").records_out == 1_000


@pytest.mark.slow
def test_max_chunks_bounds_the_fan_out(thousand_rows, tmp_path):
    result = run(
        BatchConfig(
            source=str(thousand_rows),
            chunking=ChunkingConfig(chunk_records=1, max_chunks=12),
            output=str(tmp_path / "out"),
        )
    )
    batch = result.output_for_node("aggregate")
    assert batch.chunks <= 12
    assert batch.records_out == 1_000


def failure_message(result) -> str:
    failures = [e for e in result.all_events if e.is_step_failure]
    assert failures, "the run should have failed"
    return failures[0].step_failure_data.error.message


def test_missing_source_fails_naming_it(tmp_path):
    missing = tmp_path / "nope.csv"
    result = run(BatchConfig(source=str(missing)), raise_on_error=False)
    assert not result.success
    message = failure_message(result)
    assert str(missing) in message and "does not exist" in message


def test_unknown_processor_fails_listing_the_known_ones(leads):
    result = run(BatchConfig(source=str(leads), processor="nope"), raise_on_error=False)
    message = failure_message(result)
    assert "Unknown processor 'nope'" in message and "validate" in message


@pytest.mark.slow
def test_missing_required_column_fails_before_any_chunk(leads, tmp_path):
    options = {"columns": {"customer_ref": {"type": "string", "required": True}}}
    result = run(
        BatchConfig(source=str(leads), processor="validate", processor_options=options),
        raise_on_error=False,
    )
    message = failure_message(result)
    assert "customer_ref" in message and str(leads) in message
    assert not [e for e in result.all_events if (e.step_key or "").startswith("process_chunk")]


@pytest.mark.slow
def test_unknown_extension_asks_for_a_format(tmp_path):
    source = tmp_path / "records.dat"
    source.write_text("a,b\n1,2\n")
    message = failure_message(run(BatchConfig(source=str(source)), raise_on_error=False))
    assert "records.dat" in message and "set format" in message
    ok = run(BatchConfig(source=str(source), format="csv", output=str(tmp_path / "o")))
    assert ok.output_for_node("aggregate").records_out == 1


def test_bad_csv_delimiter_is_refused(leads):
    config = BatchConfig(source=str(leads), csv={"delimiter": ":"})
    message = failure_message(run(config, raise_on_error=False))
    assert "delimiter" in message and str(leads) in message


@pytest.mark.slow
def test_delivery_that_keeps_failing_stops_after_its_retries(leads, tmp_path):
    """SQS on a closed port: the breaker opens after the first failed call; deliver waits out
    the breaker's cool-down before its retry, retries exactly retry.max_retries times (none
    more from the op's retry policy), and the run fails saying how to deliver the rest."""
    config = BatchConfig(
        source=str(leads),
        output=str(tmp_path / "out"),
        chunking=ChunkingConfig(chunk_records=1_000),
        delivery={
            "target": "http://127.0.0.1:9/123456789012/nowhere",
            "breaker_failures": 1,
            "breaker_cooldown_seconds": 0.5,
        },
        retry={"max_retries": 1, "base_delay_seconds": 0.01, "max_delay_seconds": 0.01},
    )
    result = get_batch_job().execute_in_process(
        run_config=RunConfig(
            ops={"initialize": config}, resources={"sqs": {"config": {"max_attempts": 1}}}
        ),
        raise_on_error=False,
    )
    assert not result.success
    assert result.output_for_node("aggregate").records_out > 0
    retries = [
        e
        for e in result.all_events
        if e.step_key == "deliver" and e.event_type == DagsterEventType.STEP_UP_FOR_RETRY
    ]
    assert len(retries) == 1
    # The wait is the breaker's remaining cool-down, not the 0.01 s backoff.
    assert 0.1 < retries[0].event_specific_data.seconds_to_wait <= 0.5
    message = failure_message(result)
    assert "delivery still failing after 2 attempt(s)" in message
    assert "circuit open" in message


@pytest.mark.slow
def test_rejects_name_their_line_in_a_file_without_quoted_line_breaks(tmp_path):
    """One record per line: line numbers come straight from the record index (no re-scan)."""
    rows = ["id,amount"] + [f"{i},{-1 if i % 97 == 0 else i}" for i in range(1, 5_001)]
    source = tmp_path / "plain.csv"
    source.write_text("\n".join(rows) + "\n")
    config = BatchConfig(
        source=str(source),
        processor="validate",
        processor_options={"columns": {"amount": {"type": "int64", "min": 0}}},
        chunking=ChunkingConfig(chunk_records=700),
        output=str(tmp_path / "out"),
    )
    batch = run(config).output_for_node("aggregate")
    rejected = pa.concat_tables(pq.read_table(f) for f in batch.rejected_files).to_pylist()
    assert len(rejected) == 5_000 // 97
    for row in rejected:  # line 1 is the header: id i is on line i + 1
        assert row["_line"] == int(row["id"]) + 1


@pytest.mark.slow
def test_json_lines_keep_their_values_and_valid_reads_as_one_table(tmp_path):
    """Issue 11: an int column that turns to text in a later chunk is text in every file, a
    string that looks like a time stays a string, a field null in a whole chunk takes the
    batch's type, and a record nested deeper than Parquet reads is rejected, not written."""
    import pyarrow.dataset as ds

    deep = '{"id": 99, "x": ' + '{"a": ' * 120 + "1" + "}" * 120 + "}"
    lines = [json.dumps({"id": i, "age": i, "at": "2013-01-01T10:00:00Z", "n": None})
             for i in range(4)]  # fmt: skip
    lines += [deep, json.dumps({"id": 4, "age": "unknown", "at": "soon", "n": 7})]
    source = tmp_path / "people.jsonl"
    source.write_text("\n".join(lines) + "\n")
    config = BatchConfig(
        source=str(source), chunking=ChunkingConfig(chunk_records=2), output=str(tmp_path / "out")
    )

    result = run(config)

    batch = result.output_for_node("aggregate")
    assert (batch.status, batch.records_in, batch.records_out) == ("succeeded", 6, 5)
    valid = ds.dataset(str(tmp_path / "out" / batch.batch_id / "valid")).to_table()
    assert valid.column("age").to_pylist() == ["0", "1", "2", "3", "unknown"]
    assert valid.column("at").to_pylist() == ["2013-01-01T10:00:00Z"] * 4 + ["soon"]
    assert valid.column("n").to_pylist() == [None] * 4 + [7]
    rejected = pa.concat_tables(pq.read_table(f) for f in batch.rejected_files).to_pylist()
    assert rejected[0]["_reason"].startswith("nested 122 levels deep; Parquet reads at most 100")
    assert result.output_for_node("deliver").records == 5


@pytest.mark.slow
def test_a_file_with_carriage_return_line_endings_gives_every_record(tmp_path):
    source = tmp_path / "mac.csv"
    source.write_bytes(carriage_return_csv())
    config = BatchConfig(
        source=str(source),
        chunking=ChunkingConfig(chunk_records=150),
        output=str(tmp_path / "out"),
    )

    batch = run(config).output_for_node("aggregate")

    reference = pacsv.read_csv(
        source,
        parse_options=pacsv.ParseOptions(
            newlines_in_values=True, invalid_row_handler=lambda row: "skip"
        ),
        convert_options=pacsv.ConvertOptions(column_types={"id": pa.string()}),
    )
    assert batch.status == "succeeded"
    assert (batch.records_in, batch.records_out, batch.records_rejected) == (1_000, 999, 1)
    assert batch.chunks == 7
    valid = pa.concat_tables(pq.read_table(f) for f in batch.valid_files)
    assert valid.to_pylist() == reference.to_pylist()
    assert valid.column("note").to_pylist()[:4] == ["one\rtwo", "one\ntwo", "one\r\ntwo", "plain"]
    (rejected,) = pa.concat_tables(pq.read_table(f) for f in batch.rejected_files).to_pylist()
    # Line 1 is the header; each of the 500 records before holds one line break in every
    # value but one in four: 500 + 375 lines, so record 500 starts on line 877.
    assert (rejected["_record"], rejected["_line"]) == (500 - 3 * 150, 877)
    assert rejected["_raw"] == '500,name 500,"one\rtwo",extra'


@pytest.mark.slow
def test_a_chunk_whose_reader_and_plan_disagree_fails_the_run(tmp_path, monkeypatch):
    """A reader that loses a record (as a boundary bug would): the chunk is dead-lettered at
    once, nothing of it is written, and the run fails saying why."""
    from batch_pipeline.core.processing import run as processing

    real = processing.read_chunk

    def lossy(storage, source, chunk, check=True):
        data = real(storage, source, chunk, check)
        if chunk.index == 2:
            data.table = data.table.slice(1)
        return data

    monkeypatch.setattr(processing, "read_chunk", lossy)
    source = tmp_path / "rows.csv"
    source.write_text("n\n" + "".join(f"{i}\n" for i in range(100)))
    config = BatchConfig(
        source=str(source),
        chunking=ChunkingConfig(chunk_records=25),
        output=str(tmp_path / "out"),
    )

    result = run(config, raise_on_error=False)

    assert not result.success
    message = failure_message(result)
    assert "chunk_00002 of 4" in message and "read 24 records" in message
    assert "the plan expected 25" in message and "nothing of this chunk was written" in message
    retries = [e for e in result.all_events if e.event_type == DagsterEventType.STEP_UP_FOR_RETRY]
    assert not retries
    assert len(list((tmp_path / "out").glob("*/valid/chunk-*.parquet"))) == 3
    assert not list((tmp_path / "out").glob("*/valid/chunk-00002.parquet"))
