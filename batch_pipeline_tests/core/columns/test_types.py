"""Column types (issue 11): a value keeps its type or becomes its own text, never another
value; a column null in a whole chunk is processed like any other; one schema per batch, so
``valid/`` reads back as one table; records nested deeper than Parquet reads are rejected."""

from __future__ import annotations

import datetime as dt
import gzip
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest

from batch_pipeline.core import columns
from batch_pipeline.core.columns import tables
from batch_pipeline.core.stores.storage import Storage
from batch_pipeline_tests.core.helpers import rejected_rows, run, valid_rows, workbook


def succeeded(result, records: int) -> None:
    batch = result.result
    assert batch.status == "succeeded", batch.failure
    assert (batch.records_in, batch.records_out + batch.records_rejected) == (records, records)


# Item 2: a column null in a whole chunk ---------------------------------------------------------


def test_a_jsonl_field_null_in_every_record_is_processed(storage: Storage, tmp_path: Path) -> None:
    source = tmp_path / "n.jsonl"
    source.write_text("".join(json.dumps({"id": i, "gone": None}) + "\n" for i in range(5)))

    result = run(storage, source, tmp_path / "out", chunk_records=2)

    succeeded(result, 5)
    assert result.result.records_out == 5
    assert [r["gone"] for r in valid_rows(storage, result)] == [None] * 5


def test_a_blank_excel_column_and_a_formula_column_without_cached_values_are_processed(
    storage: Storage, tmp_path: Path
) -> None:
    rows = [["name", "blank", "total"]] + [[f"n{i}", None, f"=1+{i}"] for i in range(3)]
    source = workbook(tmp_path / "f.xlsx", {"s": rows})  # openpyxl caches no formula values

    result = run(storage, source, tmp_path / "out")

    succeeded(result, 3)
    assert result.result.records_out == 3
    assert [(r["blank"], r["total"]) for r in valid_rows(storage, result)] == [(None, None)] * 3


def test_a_parquet_column_of_nulls_is_processed(storage: Storage, tmp_path: Path) -> None:
    source = tmp_path / "n.parquet"
    pq.write_table(pa.table({"id": [1, 2, 3], "gone": pa.nulls(3)}), source)

    result = run(storage, source, tmp_path / "out")

    succeeded(result, 3)
    assert result.result.records_out == 3


# Item 3: values of mixed types come out as they went in -----------------------------------------


def test_excel_numbers_in_a_date_column_become_their_own_text(
    storage: Storage, tmp_path: Path
) -> None:
    rows = [["when", "flag", "n"], [dt.datetime(2020, 1, 2, 3, 4, 5), True, 1]]
    rows += [[45000, 1.5, 2.5], ["soon", None, 3]]
    source = workbook(tmp_path / "m.xlsx", {"s": rows})

    result = run(storage, source, tmp_path / "out")

    succeeded(result, 3)
    got = [(r["when"], r["flag"], r["n"]) for r in valid_rows(storage, result)]
    assert got == [("2020-01-02T03:04:05", "true", 1.0), ("45000", "1.5", 2.5), ("soon", None, 3.0)]


def test_json_values_of_mixed_types_become_their_own_text(storage: Storage, tmp_path: Path) -> None:
    records = [
        {"flag": 1.5, "when": "2013-01-01T10:00:00Z", "big": 2**63, "mix": {"a": 1}},
        {"flag": True, "when": 45000, "big": 1, "mix": [1, "x"]},
        {"flag": 10, "when": None, "big": None, "mix": "plain"},
    ]
    source = tmp_path / "m.json"
    source.write_text(json.dumps(records))

    result = run(storage, source, tmp_path / "out")

    succeeded(result, 3)
    rows = valid_rows(storage, result)
    assert [r["flag"] for r in rows] == ["1.5", "true", "10"]
    assert [r["when"] for r in rows] == ["2013-01-01T10:00:00Z", "45000", None]
    assert [r["big"] for r in rows] == [str(2**63), "1", None]
    assert [r["mix"] for r in rows] == ['{"a": 1}', '[1, "x"]', "plain"]


@pytest.mark.parametrize("gzipped", [False, True])
def test_jsonl_strings_that_look_like_times_stay_strings(
    storage: Storage, tmp_path: Path, gzipped: bool
) -> None:
    records = [
        {"at": "2013-01-01T10:00:00Z", "day": "2013-01-01", "deep": {"at": ["2013-01-01 10:00"]}},
        {"at": "2013-01-02T10:00:00.250+02:00", "day": "2013-01-02", "deep": {"at": []}},
    ]
    text = "".join(json.dumps(r) + "\n" for r in records).encode()
    source = tmp_path / ("t.jsonl.gz" if gzipped else "t.jsonl")
    source.write_bytes(gzip.compress(text) if gzipped else text)

    result = run(storage, source, tmp_path / "out")

    succeeded(result, 2)
    assert valid_rows(storage, result) == records


def test_jsonl_integers_beyond_a_double_are_kept_exactly(storage: Storage, tmp_path: Path) -> None:
    # pyarrow's JSON reader makes a column of ints and floats double, and an int beyond int64
    # a double: 2**53 + 1 and 10**20 would come out as other numbers.
    lines = ['{"n": 9007199254740993, "f": 1.5}', '{"n": 0.5, "f": 100000000000000000000}']
    source = tmp_path / "big.jsonl"
    source.write_text("\n".join(lines) + "\n")

    result = run(storage, source, tmp_path / "out")

    succeeded(result, 2)
    rows = valid_rows(storage, result)
    assert [r["n"] for r in rows] == ["9007199254740993", "0.5"]
    assert [r["f"] for r in rows] == ["1.5", "100000000000000000000"]


def test_a_value_and_its_arrow_column_have_the_same_text() -> None:
    from decimal import Decimal

    values = [
        "as is", True, False, 7, -(2**63), 1.0, 0.1, 1e20, 123456789012345.6,
        dt.datetime(2020, 1, 2, 3, 4, 5, 6), dt.date(2020, 1, 2), dt.time(10, 0),
        Decimal("1.50"), b"bytes", b"\xff\xfe", {"a": [1, None], "é": dt.date(2020, 1, 2)},
        [1.5, None], 2.0**53, 2.0**53 * 2, {"n": [3.0, 0.5]},
    ]  # fmt: skip
    texts = [columns.value_text(v) for v in values]
    assert texts == [
        "as is", "true", "false", "7", str(-(2**63)), "1", "0.1", "1e+20",
        "123456789012345.6", "2020-01-02T03:04:05.000006", "2020-01-02", "10:00:00", "1.50",
        "bytes", "//4=", '{"a": [1, null], "é": "2020-01-02"}', "[1.5, null]",
        "9007199254740992", "1.8014398509481984e+16", '{"n": [3, 0.5]}',
    ]  # fmt: skip
    for value, text in zip(values, texts, strict=True):
        column = pa.array([value, None])
        assert columns.array_text(column).to_pylist() == [text, None], value
    assert columns.array_text(pa.array([0.1], pa.float32())).to_pylist() == ["0.1"]


def test_columns_are_typed_when_their_kinds_agree_and_text_otherwise() -> None:
    assert tables.column_array([1, None, 2]).type == pa.int64()
    assert tables.column_array([1, 2.5]).to_pylist() == [1.0, 2.5]
    assert tables.column_array([2**53 + 1, 2.5]).to_pylist() == [str(2**53 + 1), "2.5"]
    assert tables.column_array([2**64]).to_pylist() == [str(2**64)]
    assert tables.column_array([True, 1]).to_pylist() == ["true", "1"]
    assert tables.column_array([None, None]).type == pa.null()
    assert tables.column_array([{"a": 1}, {"a": 2.5}]).type == pa.struct([("a", pa.float64())])
    assert tables.column_array([{"a": 1}, {"a": True}]).to_pylist() == [{"a": "1"}, {"a": "true"}]
    assert tables.column_array([[1, "x"], None]).to_pylist() == [["1", "x"], None]
    assert tables.column_array([{"a": 1}, [1]]).to_pylist() == ['{"a": 1}', "[1]"]
    assert tables.column_array([{}]).to_pylist() == ["{}"]  # Parquet has no empty struct
    deep = tables.column_array([nested(99)])  # with the record around it: 101 levels
    assert deep.type == pa.string() and deep[0].as_py().startswith('{"a": {"a": ')


def test_the_join_of_two_types() -> None:
    join = columns.join_types
    assert join(pa.int64(), pa.int64()) == pa.int64()
    assert join(pa.null(), pa.timestamp("us")) == pa.timestamp("us")
    assert join(pa.int64(), pa.float64()) == pa.float64()
    assert join(pa.int64(), pa.string()) == pa.string()
    assert join(pa.bool_(), pa.int64()) == pa.string()
    assert join(pa.list_(pa.int64()), pa.string()) == pa.string()
    with pytest.raises(columns.NotExact):
        columns.cast_to(pa.array([2**53 + 1]), pa.float64())
    assert columns.cast_to(pa.array([2**53]), pa.float64()).to_pylist() == [2.0**53]


def test_objects_join_field_by_field_and_arrays_item_by_item() -> None:
    a = pa.array([{"city": "x", "n": 1}, None, {"city": "y", "n": 2}]).slice(1)
    b = pa.array([{"city": "z", "zip": "1", "n": "two"}])
    joined = columns.join_types(a.type, b.type)
    assert joined == pa.struct([("city", pa.string()), ("n", pa.string()), ("zip", pa.string())])
    assert columns.cast_to(a, joined).to_pylist() == [None, {"city": "y", "n": "2", "zip": None}]
    lists = pa.array([[1], None, [2, 3], []]).slice(1)
    floats = columns.join_types(lists.type, pa.list_(pa.float64()))
    assert floats == pa.list_(pa.float64())
    assert columns.cast_to(lists, floats).to_pylist() == [None, [2.0, 3.0], []]
    both = columns.concat_tables(
        [pa.table({"p": [{"n": 2**53 + 1}]}), pa.table({"p": [{"n": 0.5}]})]
    )
    assert both.column("p").to_pylist() == ['{"n": 9007199254740993}', '{"n": 0.5}']


# Item 8: records nested deeper than Parquet reads -----------------------------------------------


def nested(levels: int, kind: str = "object") -> object:
    value: object = 1
    for _ in range(levels):
        value = {"a": value} if kind == "object" else [value]
    return value


def deep_text(levels: int) -> str:
    """A record nested ``levels`` objects deep (built as text: json.dumps recurses)."""
    return '{"id": 9, "x": ' + '{"a": ' * levels + "1" + "}" * levels + "}"


def run_delivered(storage: Storage, source: Path, out: Path):
    from batch_pipeline.core.common.models import ChunkingSettings, DeliverySettings
    from batch_pipeline.core.initialize import prepare_batch
    from batch_pipeline.core.pipeline import run_batch

    spec = prepare_batch(
        storage,
        str(source),
        chunking=ChunkingSettings(chunk_records=2),
        output=str(out),
        delivery=DeliverySettings(target="local"),
    )
    return run_batch(storage, spec)


def deep_records() -> tuple[list[str], list[int]]:
    """JSON texts of records at Parquet's limit and beyond it, and the depth of those beyond
    it (the record is one level, an object one more, an array two, a value one)."""
    texts = [
        json.dumps({"id": 1, "x": nested(98)}),  # 100 levels: kept
        json.dumps({"id": 2, "x": nested(99)}),  # 101
        json.dumps({"id": 3, "y": nested(49, "array")}),  # 1 + 98 + 1: kept
        json.dumps({"id": 4, "y": nested(50, "array")}),  # 102
        deep_text(3000),  # deeper than Python's json parses
        json.dumps({"id": 6, "z": "flat"}),
    ]
    return texts, [101, 102, 3002]


@pytest.mark.parametrize("fmt", ["jsonl", "json"])
def test_records_nested_deeper_than_parquet_reads_are_rejected_and_delivery_succeeds(
    storage: Storage, tmp_path: Path, fmt: str
) -> None:
    texts, depths = deep_records()
    source = tmp_path / f"deep.{fmt}"
    source.write_text("\n".join(texts) + "\n" if fmt == "jsonl" else "[" + ",".join(texts) + "]")

    result = run_delivered(storage, source, tmp_path / "out")

    succeeded(result, 6)
    assert [r["id"] for r in valid_rows(storage, result)] == [1, 3, 6]
    rejected = rejected_rows(storage, result)
    assert [r["_reason"].split(";")[0] for r in rejected] == [
        f"nested {d} levels deep" for d in depths
    ]
    assert all("Parquet reads at most 100" in r["_reason"] for r in rejected)
    assert [json.loads(r["_raw"]) for r in rejected[:2]] == [json.loads(texts[i]) for i in (1, 3)]
    assert rejected[2]["_raw"].replace(" ", "") == texts[4].replace(" ", "")
    assert result.delivery is not None and result.delivery.records == 3
    outbox = (Path(result.result.manifest_uri).parent / "outbox").glob("*.jsonl")
    delivered = [r for f in sorted(outbox) for m in f.read_text().splitlines() for r in
                 json.loads(m)["batch_data"]]  # fmt: skip
    assert [r["id"] for r in delivered] == [1, 3, 6]


@pytest.mark.slow
def test_a_jsonl_line_nested_beyond_what_pyarrow_parses_is_rejected(
    storage: Storage, tmp_path: Path
) -> None:
    # pyarrow's JSON reader overflows its stack around 15,000 levels (the process dies).
    source = tmp_path / "abyss.jsonl"
    source.write_text('{"id": 1}\n' + deep_text(30_000) + "\n")

    result = run(storage, source, tmp_path / "out")

    succeeded(result, 2)
    assert rejected_rows(storage, result)[0]["_reason"].startswith("nested 30002 levels deep")


def test_columns_count_distinct_cannot_count_are_not_dictionary_encoded() -> None:
    from batch_pipeline.core.stores.storage import dictionary_columns

    table = pa.table({"gone": pa.nulls(4), "same": ["a"] * 4, "n": pa.array([[1]] * 4)})
    assert dictionary_columns(table) == ["same"]


# Item 4: one schema per batch -------------------------------------------------------------------


def one_table(storage: Storage, result, folder: str = "valid") -> pa.Table:
    """``valid/`` (or ``rejected/``) read by pyarrow.dataset, checked against its files read
    one by one in chunk order."""
    files = result.result.valid_files if folder == "valid" else result.result.rejected_files
    dataset = ds.dataset(str(Path(result.result.manifest_uri).parent / folder), format="parquet")
    table = dataset.to_table()
    assert table.equals(pa.concat_tables([pq.read_table(f) for f in files]))
    return table


def test_a_jsonl_column_int_in_one_chunk_and_text_in_another_is_text_in_every_file(
    storage: Storage, tmp_path: Path
) -> None:
    ages: list[object] = [30, 31, 32, 33, "unknown", 35.5]
    source = tmp_path / "ages.jsonl"
    source.write_text("".join(json.dumps({"id": i, "age": a}) + "\n" for i, a in enumerate(ages)))

    result = run_delivered(storage, source, tmp_path / "out")  # chunks of 2 records

    succeeded(result, 6)
    table = one_table(storage, result)
    assert table.num_rows == 6
    assert table.column("age").to_pylist() == ["30", "31", "32", "33", "unknown", "35.5"]
    assert table.column("id").to_pylist() == list(range(6))
    outbox = (Path(result.result.manifest_uri).parent / "outbox").glob("*.jsonl")
    delivered = [r["age"] for f in sorted(outbox) for m in f.read_text().splitlines()
                 for r in json.loads(m)["batch_data"]]  # fmt: skip
    assert delivered == ["30", "31", "32", "33", "unknown", "35.5"]


def test_a_jsonl_field_null_in_a_whole_chunk_takes_the_batch_type(
    storage: Storage, tmp_path: Path
) -> None:
    values = [None, None, 5, 6, None, None]
    source = tmp_path / "n.jsonl"
    source.write_text("".join(json.dumps({"id": i, "n": v}) + "\n" for i, v in enumerate(values)))

    result = run(storage, source, tmp_path / "out", chunk_records=2)

    succeeded(result, 6)
    table = one_table(storage, result)
    assert table.schema.field("n").type == pa.int64()
    assert table.column("n").to_pylist() == values


@pytest.mark.parametrize("chunk_records", [2, 100])
def test_an_excel_workbook_whose_sheets_disagree_on_a_column_type_makes_it_text(
    storage: Storage, tmp_path: Path, chunk_records: int
) -> None:
    source = workbook(
        tmp_path / "ages.xlsx",
        {
            "north": [["name", "age"], ["ann", 30], ["bob", 41], ["cid", 52]],
            "south": [["name", "age"], ["dan", "unknown"], ["eve", "40s"]],
        },
    )

    result = run(storage, source, tmp_path / "out", chunk_records=chunk_records)

    succeeded(result, 5)
    table = one_table(storage, result)
    assert table.column("age").to_pylist() == ["30", "41", "52", "unknown", "40s"]
    assert table.column("_worksheet").to_pylist() == ["north"] * 3 + ["south"] * 2


def test_rejected_files_are_one_table_too(storage: Storage, tmp_path: Path) -> None:
    # id missing: rejected. The note is an int in the first chunk, text in the second.
    rows = [{"note": 1}, {"id": 1, "note": 2}, {"note": "x"}, {"id": 2, "note": "y"}]
    source = tmp_path / "r.jsonl"
    source.write_text("".join(json.dumps(r) + "\n" for r in rows))
    schema = {"columns": {"id": {"type": "int64", "required": True}}}

    result = run(
        storage, source, tmp_path / "out", chunk_records=2, processor="validate",
        processor_options=schema,
    )  # fmt: skip

    succeeded(result, 4)
    assert one_table(storage, result).column("note").to_pylist() == ["2", "y"]
    rejected = one_table(storage, result, "rejected")
    assert rejected.column("note").to_pylist() == ["1", "x"]
    assert rejected.column_names[-5:] == ["_reason", "_chunk", "_record", "_line", "_raw"]


def test_the_plan_holds_the_batch_schema_and_a_plan_without_one_still_loads(
    storage: Storage, tmp_path: Path
) -> None:
    from batch_pipeline.core.planning import plan_or_reuse

    source = tmp_path / "s.jsonl"
    source.write_text("".join(json.dumps({"id": i, "at": "2020-01-01"}) + "\n" for i in range(3)))
    result = run(storage, source, tmp_path / "out")
    plan_uri = Path(result.spec.plan_uri)
    plan = json.loads(plan_uri.read_text())
    assert plan["schema"]["columns"] == {"id": "int64", "at": "string"}
    assert plan_or_reuse(storage, result.spec).schema == pa.schema(
        [("id", pa.int64()), ("at", pa.string())]
    )

    del plan["schema"]  # a plan.json written before plans had schemas
    plan_uri.write_text(json.dumps(plan))
    reused = plan_or_reuse(storage, result.spec)
    assert "reused" in reused.reason and reused.schema is None
    again = run(storage, source, tmp_path / "out")
    succeeded(again, 3)
    assert one_table(storage, again).column("at").to_pylist() == ["2020-01-01"] * 3


def test_staged_parts_of_one_chunk_that_disagree_on_a_type_are_read_as_text(
    storage: Storage, tmp_path: Path
) -> None:
    source = tmp_path / "parts.json"
    source.write_text(json.dumps([{"a": 1}, {"a": 2}, {"a": "x"}, {"a": None}]))

    result = run(storage, source, tmp_path / "out", chunk_records=2, max_chunks=1)

    succeeded(result, 4)
    assert "staged into 2 Parquet parts" in result.result.plan_reason
    assert one_table(storage, result).column("a").to_pylist() == ["1", "2", "x", None]


def test_objects_whose_fields_differ_between_chunks_stay_objects(
    storage: Storage, tmp_path: Path
) -> None:
    rows = [
        {"addr": {"city": "Oslo"}, "tags": [1]},
        {"addr": {"city": "Bergen", "zip": "5003"}, "tags": [2.5]},
        {"addr": {"city": "Molde", "zip": 6413}, "tags": None},
    ]
    source = tmp_path / "nested.jsonl"
    source.write_text("".join(json.dumps(r) + "\n" for r in rows))

    result = run(storage, source, tmp_path / "out", chunk_records=1)

    succeeded(result, 3)
    table = one_table(storage, result)
    assert table.schema.field("addr").type == pa.struct(
        [("city", pa.string()), ("zip", pa.string())]
    )
    assert table.column("addr").to_pylist() == [
        {"city": "Oslo", "zip": None}, {"city": "Bergen", "zip": "5003"},
        {"city": "Molde", "zip": "6413"},
    ]  # fmt: skip
    assert table.column("tags").to_pylist() == [[1.0], [2.5], None]
