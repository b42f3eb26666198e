"""Storage's Parquet writes: dictionary encoding only where it pays, the records unchanged."""

import pyarrow as pa
import pyarrow.parquet as pq

from batch_pipeline.core.stores.storage import Storage, dictionary_columns


def table(rows: int = 20_000) -> pa.Table:
    return pa.table(
        {
            "status": ["new", "open", "closed", "open"] * (rows // 4),
            "email": [f"user{i}@example.org" for i in range(rows)],
            "amount": [float(i) for i in range(rows)],
            "tags": pa.array([["a"]] * rows),
        }
    )


def test_only_low_cardinality_columns_are_dictionary_encoded():
    assert dictionary_columns(table()) == ["status"]
    assert dictionary_columns(table(0)) == []


def test_written_parquet_holds_the_same_records_with_dictionaries_where_chosen(tmp_path):
    data = table()
    uri = str(tmp_path / "out.parquet")
    Storage().write_parquet(data, uri)
    assert pq.read_table(uri).equals(data)
    column_chunks = pq.ParquetFile(uri).metadata.row_group(0)
    encodings = {
        column_chunks.column(i).path_in_schema: column_chunks.column(i).encodings
        for i in range(column_chunks.num_columns)
    }
    assert any("DICTIONARY" in e for e in encodings["status"])
    assert not any("DICTIONARY" in e for e in encodings["email"])


def test_lines_end_at_every_line_break_style_also_across_blocks(tmp_path, monkeypatch):
    import gzip

    from batch_pipeline.core.stores import storage as storage_module

    monkeypatch.setattr(storage_module, "LINE_BLOCK_BYTES", 3)  # a \r\n split across blocks
    data = b"ab\r\ncd\ref\n\rgh"
    (tmp_path / "a.txt").write_bytes(data)
    (tmp_path / "a.txt.gz").write_bytes(gzip.compress(data))
    storage = Storage()

    with storage.open_lines(str(tmp_path / "a.txt"), start=2) as lines:
        assert list(lines) == [b"\r\n", b"cd\r", b"ef\n", b"\r", b"gh"]
    with storage.open_lines(str(tmp_path / "a.txt.gz"), compression="gzip") as lines:
        assert list(lines) == [b"ab\r\n", b"cd\r", b"ef\n", b"\r", b"gh"]


def test_a_column_of_only_nulls_is_written(tmp_path):
    """A JSON field that is null in every record of a chunk: Arrow's null type, which has no
    distinct count to choose a dictionary by."""
    table = pa.table({"all_null": pa.nulls(5), "name": ["a", "a", "b", "a", "a"]})

    assert dictionary_columns(table) == ["name"]
    Storage().write_parquet(table, str(tmp_path / "t.parquet"))
    assert pq.read_table(tmp_path / "t.parquet").to_pylist() == table.to_pylist()
