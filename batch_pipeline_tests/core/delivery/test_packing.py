"""Serialising records to JSON once per chunk, packing them into messages, the envelope."""

from __future__ import annotations

import datetime as dt
import itertools
import json
from decimal import Decimal
from typing import Any

import numpy as np
import pyarrow as pa
import pytest

from batch_pipeline.core.common.errors import DeliveryError
from batch_pipeline.core.delivery.packing import (
    SerializedRecords,
    envelope,
    envelope_overhead,
    pack,
    serialize_records,
)


def records(serialized: SerializedRecords) -> list[dict[str, Any]]:
    """Each record parsed on its own, through the offsets."""
    data, offsets = serialized.data, serialized.offsets
    return [json.loads(data[offsets[i] : offsets[i + 1]]) for i in range(len(serialized))]


def test_round_trip_of_text_numbers_and_nulls() -> None:
    table = pa.table(
        {
            "s": ["héllo ☃ 𝄞 😀", 'say "hi" \\ /', "line\nbreak\r\nand\ttab", None, "\x00\x1f"],
            "i": [1, None, -(2**63), 2**63 - 1, 0],
            "f": [1.5, float("nan"), None, -0.25, 1e300],
            "b": [True, False, None, True, False],
        }
    )
    serialized = serialize_records(table)
    assert len(serialized) == 5
    assert records(serialized) == [
        {"s": "héllo ☃ 𝄞 😀", "i": 1, "f": 1.5, "b": True},
        {"s": 'say "hi" \\ /', "i": None, "f": None, "b": False},
        {"s": "line\nbreak\r\nand\ttab", "i": -(2**63), "f": None, "b": None},
        {"s": None, "i": 2**63 - 1, "f": -0.25, "b": True},
        {"s": "\x00\x1f", "i": 0, "f": 1e300, "b": False},
    ]


def test_each_record_is_one_line_and_offsets_cover_the_buffer() -> None:
    table = pa.table({"s": ["a\nb", "c", "\n\n"]})
    serialized = serialize_records(table)
    assert serialized.offsets[0] == 0 and serialized.offsets[-1] == len(serialized.data)
    assert serialized.data.count(b"\n") == 3
    lengths = serialized.lengths
    assert lengths.tolist() == [
        len(json.dumps({"s": v}, separators=(",", ":")).encode()) for v in ["a\nb", "c", "\n\n"]
    ]


def test_times_are_iso_8601() -> None:
    table = pa.table(
        {
            "utc": pa.array(
                [dt.datetime(2024, 1, 2, 3, 4, 5, 123456), dt.datetime(2024, 1, 2)],
                pa.timestamp("us", tz="UTC"),
            ),
            "naive": pa.array(
                [dt.datetime(2024, 1, 2, 3, 4, 5, 123456), dt.datetime(2024, 1, 2)],
                pa.timestamp("us"),
            ),
            "naive_ms": pa.array(
                [dt.datetime(2024, 1, 2, 3, 4, 5, 7000), None], pa.timestamp("ms")
            ),
            "zoned": pa.array(
                [dt.datetime(2024, 1, 1), dt.datetime(2024, 7, 1)],
                pa.timestamp("s", tz="America/New_York"),
            ),
            "day": pa.array([dt.date(2024, 1, 2), dt.date(1, 1, 1)]),
            "day64": pa.array([dt.date(2024, 1, 2), None], pa.date64()),
        }
    )
    assert records(serialize_records(table)) == [
        {
            "utc": "2024-01-02T03:04:05.123456+00:00",
            "naive": "2024-01-02T03:04:05.123456",
            "naive_ms": "2024-01-02T03:04:05.007",
            "zoned": "2023-12-31T19:00:00-05:00",
            "day": "2024-01-02",
            "day64": "2024-01-02",
        },
        {
            "utc": "2024-01-02T00:00:00+00:00",
            "naive": "2024-01-02T00:00:00",
            "naive_ms": None,
            "zoned": "2024-06-30T20:00:00-04:00",
            "day": "0001-01-01",
            "day64": None,
        },
    ]
    for record in records(serialize_records(table)):
        for key in ("utc", "naive", "zoned"):
            dt.datetime.fromisoformat(record[key])  # parses as ISO 8601


def test_nested_structs_and_lists() -> None:
    point = pa.struct([("x", pa.int64()), ("label", pa.string()), ("at", pa.timestamp("us"))])
    table = pa.table(
        {
            "point": pa.array(
                [{"x": 1, "label": 'a"b', "at": dt.datetime(2024, 1, 1)}, None, {"x": None}],
                point,
            ),
            "tags": pa.array([["a", "b"], [], None]),
            "scores": pa.array([[1.5, float("nan")], None, [None]]),
            "nested": pa.array([[{"k": [1, 2]}], None, [{"k": None}]]),
            "blob": pa.array([b"\x00\xff", None, b""]),
            "money": pa.array([Decimal("1.10"), None, Decimal("-2.00")]),
        }
    )
    assert records(serialize_records(table)) == [
        {
            "point": {"x": 1, "label": 'a"b', "at": "2024-01-01T00:00:00"},
            "tags": ["a", "b"],
            "scores": [1.5, None],
            "nested": [{"k": [1, 2]}],
            "blob": "AP8=",
            "money": "1.10",
        },
        {"point": None, "tags": [], "scores": None, "nested": None, "blob": None, "money": None},
        {
            "point": {"x": None, "label": None, "at": None},
            "tags": None,
            "scores": [None],
            "nested": [{"k": None}],
            "blob": "",
            "money": "-2.00",
        },
    ]


def test_other_column_kinds() -> None:
    table = pa.table(
        {
            "big": pa.array(["x", "y"], pa.large_string()),
            "cat": pa.array(["a", "b"]).dictionary_encode(),
            "nothing": pa.nulls(2),
            "u": pa.array([2**64 - 1, 0], pa.uint64()),
        }
    )
    assert records(serialize_records(table)) == [
        {"big": "x", "cat": "a", "nothing": None, "u": 2**64 - 1},
        {"big": "y", "cat": "b", "nothing": None, "u": 0},
    ]


def test_empty_tables() -> None:
    empty = serialize_records(pa.table({"a": pa.array([], pa.int64())}))
    assert len(empty) == 0 and empty.data == b"" and empty.lengths.size == 0
    assert empty.joined(0, 0) == b""
    no_columns = serialize_records(pa.table({"a": [1, 2]}).select([]))
    assert records(no_columns) == [{}, {}]


def test_joined_is_the_inside_of_a_json_array() -> None:
    table = pa.table({"s": ["a\nb", "c", "d"], "n": [1, 2, 3]})
    serialized = serialize_records(table)
    assert json.loads(b"[" + serialized.joined(0, 3) + b"]") == table.to_pylist()
    assert json.loads(b"[" + serialized.joined(1, 2) + b"]") == [{"s": "c", "n": 2}]
    assert serialized.joined(2, 2) == b""
    inside = serialized.joined(0, 2)
    assert len(inside) == int(serialized.lengths[:2].sum()) + 1


def message_bytes(lengths: list[int], a: int, b: int) -> int:
    return sum(lengths[a:b]) + (b - a - 1)


def test_pack_by_record_count() -> None:
    lengths = np.full(10, 5)
    assert pack(lengths, 3, 10_000) == [(0, 3), (3, 6), (6, 9), (9, 10)]
    assert pack(lengths, 10, 10_000) == [(0, 10)]
    assert pack(lengths, 1, 10_000) == [(i, i + 1) for i in range(10)]
    assert pack(np.zeros(0, dtype=np.int64), 3, 100) == []


def test_pack_byte_budget_exactly_at_the_boundary() -> None:
    lengths = [10, 10, 10, 10]
    # Two records joined by a comma: 21 bytes. A budget of 21 fits two, 20 only one.
    assert pack(np.array(lengths), 100, 21) == [(0, 2), (2, 4)]
    assert pack(np.array(lengths), 100, 20) == [(0, 1), (1, 2), (2, 3), (3, 4)]
    assert pack(np.array(lengths), 100, 32) == [(0, 3), (3, 4)]
    assert pack(np.array(lengths), 100, 31) == [(0, 2), (2, 4)]
    assert pack(np.array(lengths), 100, 43) == [(0, 4)]
    assert pack(np.array([10]), 1, 10) == [(0, 1)]


def test_pack_ranges_cover_everything_within_limits() -> None:
    rng = np.random.default_rng(7)
    lengths = rng.integers(1, 200, size=500)
    for max_records, max_bytes in [(1, 200), (7, 500), (100, 1000), (1000, 200)]:
        ranges = pack(lengths, max_records, max_bytes)
        assert ranges[0][0] == 0 and ranges[-1][1] == lengths.size
        for (_, b), (c, _) in itertools.pairwise(ranges):
            assert b == c
        for a, b in ranges:
            assert 1 <= b - a <= max_records
            assert message_bytes(lengths.tolist(), a, b) <= max_bytes
            # Greedy: one more record would break a limit.
            if b < lengths.size:
                assert b - a == max_records or message_bytes(lengths.tolist(), a, b + 1) > max_bytes


def test_pack_a_record_larger_than_the_budget_is_permanent() -> None:
    with pytest.raises(DeliveryError) as info:
        pack(np.array([5, 5, 11, 5]), 10, 10)
    assert info.value.permanent
    assert "record 2 is 11 bytes" in str(info.value)
    assert "at most 10 bytes" in str(info.value)


def test_pack_matches_real_serialized_sizes() -> None:
    table = pa.table({"s": ["x" * n for n in range(1, 40)]})
    serialized = serialize_records(table)
    budget = 100
    for a, b in pack(serialized.lengths, 50, budget):
        assert len(serialized.joined(a, b)) <= budget
        if b < len(serialized):
            assert len(serialized.joined(a, b + 1)) > budget


def test_envelope_is_valid_json_with_the_seed_fields() -> None:
    table = pa.table({"name": ["Zoë", 'The "Best"'], "n": [1, None]})
    serialized = serialize_records(table)
    body = envelope('batch "7"', "leads/ünï.csv", serialized.joined(0, 2), 3, 12)
    message = json.loads(body)
    assert message == {
        "batch_id": 'batch "7"',
        "file_key": "leads/ünï.csv",
        "batch_data": [{"name": "Zoë", "n": 1}, {"name": 'The "Best"', "n": None}],
        "batch_number": 3,
        "total_batches": 12,
    }
    assert list(message) == ["batch_id", "file_key", "batch_data", "batch_number", "total_batches"]
    assert json.loads(envelope("b", "k", b"", 1, 1))["batch_data"] == []


def test_envelope_overhead_bounds_every_body() -> None:
    overhead = envelope_overhead("batch-1", "in/file.csv")
    records_part = b'{"a":1}'
    for number, total in [(1, 1), (999, 1000), (10**9, 10**9)]:
        body = envelope("batch-1", "in/file.csv", records_part, number, total)
        assert len(body) <= overhead + len(records_part)
    assert len(envelope("batch-1", "in/file.csv", records_part, 10**9, 10**9)) == overhead + 7
