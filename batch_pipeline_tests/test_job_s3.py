"""batch_job against S3 and SQS over HTTP (a moto server on 127.0.0.1)."""

import io
import json

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest
from dagster import RunConfig

from batch_pipeline.config import BatchConfig, ChunkingConfig, DeliveryConfig
from batch_pipeline.core.inputs.sample_data import DEMO_SCHEMA, generate_leads
from batch_pipeline.definitions import get_batch_job
from batch_pipeline_tests.conftest import drain_queue
from batch_pipeline_tests.core.helpers import carriage_return_csv

pytestmark = pytest.mark.slow


def put_leads_csv(s3_client, bucket: str, key: str, records: int) -> pa.Table:
    table = generate_leads(records, invalid_fraction=0.05, seed=11)
    buffer = io.BytesIO()
    pacsv.write_csv(table, buffer)
    s3_client.put_object(Bucket=bucket, Key=key, Body=buffer.getvalue())
    return table


def read_s3_parquet(s3_client, uri: str) -> pa.Table:
    bucket, _, key = uri[len("s3://") :].partition("/")
    body = s3_client.get_object(Bucket=bucket, Key=key)["Body"].read()
    return pq.read_table(io.BytesIO(body))


def test_s3_source_results_and_sqs_delivery(s3_client, s3_bucket, sqs_client, sqs_queue):
    put_leads_csv(s3_client, s3_bucket, "incoming/leads.csv", 2_000)
    config = BatchConfig(
        source=f"s3://{s3_bucket}/incoming/leads.csv",
        processor="validate",
        processor_options=DEMO_SCHEMA,
        chunking=ChunkingConfig(chunk_records=500),
        output=f"s3://{s3_bucket}/results",
        delivery=DeliveryConfig(target=sqs_queue, records_per_message=50),
        customer_id="customer123",
        tenant_id="tenant456",
    )
    result = get_batch_job().execute_in_process(run_config=RunConfig(ops={"initialize": config}))
    batch = result.output_for_node("aggregate")
    delivered = result.output_for_node("deliver")

    assert batch.chunks == 4
    assert batch.records_in == 2_000 == batch.records_out + batch.records_rejected
    assert batch.manifest_uri == f"s3://{s3_bucket}/results/{batch.batch_id}/manifest.json"
    manifest = json.loads(
        s3_client.get_object(Bucket=s3_bucket, Key=f"results/{batch.batch_id}/manifest.json")[
            "Body"
        ].read()
    )
    assert manifest["ids"]["customer_id"] == "customer123"
    assert manifest["source"]["etag"]
    valid = pa.concat_tables(read_s3_parquet(s3_client, uri) for uri in manifest["files"]["valid"])
    assert valid.num_rows == batch.records_out

    bodies = [json.loads(b) for b in drain_queue(sqs_client, sqs_queue)]
    assert len(bodies) == delivered.messages
    bodies.sort(key=lambda m: m["batch_number"])
    assert [m["batch_number"] for m in bodies] == list(range(1, len(bodies) + 1))
    assert {m["file_key"] for m in bodies} == {"incoming/leads.csv"}
    ids = [r["lead_id"] for m in bodies for r in m["batch_data"]]
    assert ids == valid.column("lead_id").to_pylist()


def test_s3_batch_id_follows_the_etag(s3_client, s3_bucket):
    s3_client.put_object(Bucket=s3_bucket, Key="a.csv", Body=b"x\n1\n")
    config = BatchConfig(source=f"s3://{s3_bucket}/a.csv", output=f"s3://{s3_bucket}/out")
    run_config = RunConfig(ops={"initialize": config})
    first = get_batch_job().execute_in_process(run_config=run_config)
    again = get_batch_job().execute_in_process(run_config=run_config)
    s3_client.put_object(Bucket=s3_bucket, Key="a.csv", Body=b"x\n1\n2\n")
    changed = get_batch_job().execute_in_process(run_config=run_config)
    ids = [r.output_for_node("initialize").batch_id for r in (first, again, changed)]
    assert ids[0] == ids[1] != ids[2]
    assert changed.output_for_node("aggregate").records_in == 2


def test_missing_s3_object_fails_naming_it(s3_bucket):
    config = BatchConfig(source=f"s3://{s3_bucket}/missing.csv")
    result = get_batch_job().execute_in_process(
        run_config=RunConfig(ops={"initialize": config}), raise_on_error=False
    )
    failure = next(e for e in result.all_events if e.is_step_failure)
    message = failure.step_failure_data.error.message
    assert f"s3://{s3_bucket}/missing.csv does not exist" in message


def test_s3_json_and_excel_values_keep_their_kind_in_one_table(s3_client, s3_bucket, tmp_path):
    """Issue 11 on S3: values of mixed kinds come out as their own text, and valid/ reads as
    one table when chunks (JSON parts, Excel sheets) disagree on a column's type."""
    import datetime as dt

    import openpyxl
    import pyarrow.dataset as ds
    from pyarrow import fs

    records = [{"id": 1, "flag": 1.5, "when": "2013-01-01T10:00:00Z"}, {"id": 2, "flag": 2.5},
               {"id": 3, "flag": True, "when": 45000}]  # fmt: skip
    s3_client.put_object(Bucket=s3_bucket, Key="in/m.json", Body=json.dumps(records).encode())
    book = openpyxl.Workbook()
    book.active.title = "north"
    for row in [["name", "age", "seen"], ["ann", 30, dt.datetime(2020, 1, 2)], ["bob", 41, 45000]]:
        book.active.append(row)
    south = book.create_sheet("south")
    for row in [["name", "age"], ["cid", "unknown"]]:
        south.append(row)
    book.save(tmp_path / "ages.xlsx")
    s3_client.put_object(
        Bucket=s3_bucket, Key="in/ages.xlsx", Body=(tmp_path / "ages.xlsx").read_bytes()
    )

    s3 = fs.S3FileSystem(endpoint_override=s3_client.meta.endpoint_url, region="us-east-1")
    tables = {}
    for key in ("m.json", "ages.xlsx"):
        config = BatchConfig(
            source=f"s3://{s3_bucket}/in/{key}",
            chunking=ChunkingConfig(chunk_records=2),
            output=f"s3://{s3_bucket}/out",
        )
        result = get_batch_job().execute_in_process(
            run_config=RunConfig(ops={"initialize": config})
        )
        batch = result.output_for_node("aggregate")
        assert batch.status == "succeeded" and batch.chunks == 2
        folder = f"{s3_bucket}/out/{batch.batch_id}/valid"
        tables[key] = ds.dataset(folder, filesystem=s3, format="parquet").to_table()
    assert tables["m.json"].column("flag").to_pylist() == ["1.5", "2.5", "true"]
    assert tables["m.json"].column("when").to_pylist() == ["2013-01-01T10:00:00Z", None, "45000"]
    assert tables["ages.xlsx"].column("age").to_pylist() == ["30", "41", "unknown"]
    assert tables["ages.xlsx"].column("seen").to_pylist() == ["2020-01-02T00:00:00", "45000", None]


def test_s3_file_with_carriage_return_line_endings_gives_every_record(s3_client, s3_bucket):
    data = carriage_return_csv()
    s3_client.put_object(Bucket=s3_bucket, Key="in/mac.csv", Body=data)
    config = BatchConfig(
        source=f"s3://{s3_bucket}/in/mac.csv",
        chunking=ChunkingConfig(chunk_records=150),
        output=f"s3://{s3_bucket}/out",
    )

    result = get_batch_job().execute_in_process(run_config=RunConfig(ops={"initialize": config}))
    batch = result.output_for_node("aggregate")

    assert batch.status == "succeeded"
    assert (batch.records_in, batch.records_out, batch.records_rejected, batch.chunks) == (
        1_000,
        999,
        1,
        7,
    )
    valid = pa.concat_tables(read_s3_parquet(s3_client, uri) for uri in batch.valid_files)
    assert valid.column("id").to_pylist() == [str(i) for i in range(1_000) if i != 500]
    assert valid.column("note").to_pylist()[:3] == ["one\rtwo", "one\ntwo", "one\r\ntwo"]
    (rejected,) = pa.concat_tables(
        read_s3_parquet(s3_client, uri) for uri in batch.rejected_files
    ).to_pylist()
    assert rejected["_line"] == 877
