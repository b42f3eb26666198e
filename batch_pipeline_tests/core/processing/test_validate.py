"""The ``validate`` processor: every rule, every conversion, and the chunk runner around it."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from batch_pipeline.core.common.errors import ConfigError
from batch_pipeline.core.common.models import BatchSpec, ChunkingSettings
from batch_pipeline.core.initialize.prepare import prepare_batch
from batch_pipeline.core.planning import plan_batch
from batch_pipeline.core.processing.processors import ProcessResult, get_processor
from batch_pipeline.core.processing.processors.validate import conversion as validate_module
from batch_pipeline.core.processing.run import run_chunk
from batch_pipeline.core.stores.storage import Storage

UTC = dt.UTC


def validate(columns: dict[str, Any], table: pa.Table, **options: Any) -> ProcessResult:
    result = get_processor("validate", {"columns": columns, **options}).process(table)
    assert result.valid.num_rows + len(result.rejected) == table.num_rows
    assert len(result.reasons) == len(result.rejected)
    return result


def outcome(rule: dict[str, Any], values: list[Any] | pa.Array) -> tuple[list[Any], dict[int, str]]:
    """(valid values of column ``v``, {rejected index: reason})."""
    result = validate({"v": rule}, pa.table({"v": values}))
    reasons = dict(zip(result.rejected.tolist(), result.reasons.to_pylist(), strict=True))
    return result.valid.column("v").to_pylist(), reasons


def stamp(*args: int) -> dt.datetime:
    return dt.datetime(*args, tzinfo=UTC)  # type: ignore[misc]


# Conversions from text ---------------------------------------------------------------------------


def test_int64_from_text_with_signs_and_spaces() -> None:
    valid, rejected = outcome(
        {"type": "int64"},
        ["1", "+2", "-3", " 4 ", "007", "-0", "999999999999999999", "x", "1.5", "1e3", "+-1"],
    )
    assert valid == [1, 2, -3, 4, 7, 0, 999_999_999_999_999_999]
    assert rejected == {i: "v: not a valid int64" for i in range(7, 11)}


def test_int64_from_text_beyond_18_digits_up_to_the_int64_range() -> None:
    text = [
        "9223372036854775807",
        "-9223372036854775808",
        "9223372036854775808",  # one past the largest int64
        "-9223372036854775809",
        "12345678901234567890",
        "00000000000000000000000000042",  # many digits, small value
    ]
    valid, rejected = outcome({"type": "int64"}, text)
    assert valid == [2**63 - 1, -(2**63), 42]
    assert rejected == {i: "v: not a valid int64" for i in (2, 3, 4)}


def test_float64_from_text_with_exponents() -> None:
    valid, rejected = outcome(
        {"type": "float64"},
        ["1", "+2.5", "-3e2", "1E-3", ".5", "5.", " 6.25 ", "x", "1e", "nan", "inf", "1,5"],
    )
    assert valid == [1.0, 2.5, -300.0, 0.001, 0.5, 5.0, 6.25]
    assert rejected == {i: "v: not a valid float64" for i in range(7, 12)}


def test_float64_values_that_are_not_finite_are_rejected() -> None:
    """``1e400`` overflows float64 to infinity: it is not a valid float64, any more than the
    literal ``inf`` is (it used to be kept as inf). The largest finite double is kept."""
    text = ["1e400", "-1e400", "1.7976931348623157e308", "1e308", "2e308", "1e-400"]
    valid, rejected = outcome({"type": "float64"}, text)
    assert valid == [1.7976931348623157e308, 1e308, 0.0]
    assert rejected == {i: "v: not a valid float64" for i in (0, 1, 4)}
    for kind in (pa.float64(), pa.float32()):  # a typed column's infinities (JSON's 1e400)
        values = pa.array([1.5, float("inf"), None, float("-inf"), float("nan")], kind)
        valid, rejected = outcome({"type": "float64", "min": 0}, values)
        assert valid == [1.5, None, None]  # NaN still counts as missing
        assert rejected == {1: "v: not a valid float64", 3: "v: not a valid float64"}


def test_a_jsonl_1e400_is_rejected_end_to_end(tmp_path: Path, storage: Storage) -> None:
    from batch_pipeline_tests.core.helpers import rejected_rows, run, valid_rows

    source = tmp_path / "big.jsonl"
    source.write_text('{"id": 1, "v": 1e400}\n{"id": 2, "v": 2.5}\n{"id": 3, "v": -1e400}\n')
    columns = {"v": {"type": "float64", "required": True}}
    result = run(
        storage, source, tmp_path / "out", processor="validate",
        processor_options={"columns": columns},
    )  # fmt: skip
    assert [(r["id"], r["v"]) for r in valid_rows(storage, result)] == [(2, 2.5)]
    rejected = rejected_rows(storage, result)
    assert [(r["id"], r["_reason"]) for r in rejected] == [
        (1, "v: not a valid float64"),
        (3, "v: not a valid float64"),
    ]


def test_bool_from_words_in_any_case() -> None:
    words = ["true", "FALSE", "Yes", "no", "Y", "n", "t", "F", "1", "0", " yes ", "maybe", "2"]
    valid, rejected = outcome({"type": "bool"}, words)
    assert valid == [True, False, True, False, True, False, True, False, True, False, True]
    assert rejected == {11: "v: not a valid bool", 12: "v: not a valid bool"}


def test_timestamps_from_iso_text_with_offsets_z_and_naive_as_utc() -> None:
    valid, rejected = outcome(
        {"type": "timestamp"},
        [
            "2024-01-02T03:04:05Z",
            "2024-01-02T03:04:05+02:00",
            "2024-01-02T03:04:05-0130",
            "2024-01-02T03:04:05",
            "2024-01-02 03:04:05.123456",
            "2024-01-02",
            "not a time",
            "2024-13-01",
        ],
    )
    assert valid == [
        stamp(2024, 1, 2, 3, 4, 5),
        stamp(2024, 1, 2, 1, 4, 5),
        stamp(2024, 1, 2, 4, 34, 5),
        stamp(2024, 1, 2, 3, 4, 5),
        stamp(2024, 1, 2, 3, 4, 5, 123456),
        stamp(2024, 1, 2),
    ]
    assert rejected == {6: "v: not a valid timestamp", 7: "v: not a valid timestamp"}


def test_timestamps_keep_far_dates_next_to_nanosecond_precision() -> None:
    valid, rejected = outcome(
        {"type": "timestamp"}, ["2024-01-01T00:00:00.123456789Z", "9999-12-31", "1600-01-01"]
    )
    assert valid == [stamp(2024, 1, 1, 0, 0, 0, 123456), stamp(9999, 12, 31), stamp(1600, 1, 1)]
    assert rejected == {}


ISO_EDGES = [
    "2024-01-31T12:00:00Z",
    "2024-01-31T12:00:00.5+05:30",
    "2024-02-29T23:59:59-01:00",  # a leap day, the next day in UTC
    "2023-02-29T00:00:00Z",  # no 29th in 2023
    "2024-02-30T10:00:00Z",
    "2024-04-31T00:00:00Z",
    "1900-02-29T00:00:00Z",  # 1900 is not a leap year
    "2000-02-29T00:00:00Z",  # 2000 is
    "2024-01-31T24:00:00Z",
    "2024-13-01T00:00:00Z",
    "2024-01-31T12:00:00+24:00",
    "0001-01-01T00:00:00Z",
    "9999-12-31T23:59:59Z",
    "2024-01-31 12:00:00",  # the shapes only pandas reads
    "2024-01-31",
    "2024-01-31T12:00:00.123456789Z",
    " 2024-01-31T12:00:00Z ",
    "not a date",
    "",
]


def test_iso_timestamps_read_by_arrow_are_what_pandas_reads(monkeypatch) -> None:
    """Values of the one ISO 8601 shape are cast by Arrow (faster), the rest parsed by pandas:
    the outcome is the same as pandas parsing everything, impossible days included."""
    fast = outcome({"type": "timestamp"}, ISO_EDGES)
    for shuffled in (ISO_EDGES[::-1], ISO_EDGES[3:] + ISO_EDGES[:3]):
        again = outcome({"type": "timestamp"}, shuffled)
        assert sorted(map(str, again[0])) == sorted(map(str, fast[0]))
    monkeypatch.setattr(validate_module, "_parse_iso_fast", lambda text: None)
    assert outcome({"type": "timestamp"}, ISO_EDGES) == fast
    valid, rejected = fast
    assert stamp(2024, 3, 1, 0, 59, 59) in valid and stamp(2000, 2, 29) in valid
    assert set(rejected) == {3, 4, 5, 6, 8, 9, 10, 17}


def test_timestamps_with_a_format() -> None:
    valid, rejected = outcome(
        {"type": "timestamp", "format": "%d/%m/%Y %H:%M"}, ["02/01/2024 10:30", "2024-01-02"]
    )
    assert valid == [stamp(2024, 1, 2, 10, 30)]
    assert rejected == {1: "v: not a valid timestamp"}


def test_dates_from_text() -> None:
    valid, rejected = outcome(
        {"type": "date"}, ["2024-01-02", "9999-12-31", "0001-01-01", "2024-02-30", "x"]
    )
    assert valid == [dt.date(2024, 1, 2), dt.date(9999, 12, 31), dt.date(1, 1, 1)]
    assert rejected == {3: "v: not a valid date", 4: "v: not a valid date"}


def test_dates_with_a_format() -> None:
    valid, rejected = outcome({"type": "date", "format": "%d.%m.%Y"}, ["31.12.2024", "2024-12-31"])
    assert valid == [dt.date(2024, 12, 31)]
    assert rejected == {1: "v: not a valid date"}


def test_string_keeps_values_as_they_are() -> None:
    valid, rejected = outcome({"type": "string"}, [" a ", "", "  ", None, "é€😀"])
    assert valid == [" a ", "", "  ", None, "é€😀"]
    assert rejected == {}
    valid, _ = outcome({"type": "string"}, ["", "  "])  # not one value present: still kept
    assert valid == ["", "  "]


# Conversions from typed Arrow columns ------------------------------------------------------------


def test_int64_from_integer_columns() -> None:
    valid, _ = outcome({"type": "int64"}, pa.array([1, -2, None], pa.int32()))
    assert valid == [1, -2, None]
    valid, rejected = outcome({"type": "int64"}, pa.array([1, 2**64 - 1], pa.uint64()))
    assert valid == [1]
    assert rejected == {1: "v: not a valid int64"}


def test_int64_from_floats_rejects_non_integral_values() -> None:
    values = pa.array([1.0, 2.5, None, -3.0, 1e30, float("inf"), float("nan")])
    valid, rejected = outcome({"type": "int64"}, values)
    assert valid == [1, None, -3, None]  # NaN counts as missing, like null
    assert rejected == {
        1: "v: not a valid int64",
        4: "v: not a valid int64",
        5: "v: not a valid int64",
    }


def test_float64_from_integers_and_float32() -> None:
    valid, _ = outcome({"type": "float64"}, pa.array([1, 2], pa.int64()))
    assert valid == [1.0, 2.0]
    valid, _ = outcome({"type": "float64"}, pa.array([0.5, None], pa.float32()))
    assert valid == [0.5, None]


def test_nan_is_missing() -> None:
    valid, rejected = outcome({"type": "float64", "min": 0}, pa.array([float("nan"), 1.0]))
    assert valid == [None, 1.0]
    assert rejected == {}
    _, rejected = outcome({"type": "float64", "required": True}, pa.array([float("nan"), 1.0]))
    assert rejected == {0: "v: required value missing"}


def test_bool_from_typed_columns() -> None:
    valid, _ = outcome({"type": "bool"}, pa.array([True, None, False]))
    assert valid == [True, None, False]
    valid, rejected = outcome({"type": "bool"}, pa.array([0, 1, 2]))
    assert valid == [False, True]
    assert rejected == {2: "v: not a valid bool"}


def test_timestamps_from_timestamp_columns() -> None:
    naive = pa.array([dt.datetime(2024, 1, 1, 12)], pa.timestamp("s"))
    valid, _ = outcome({"type": "timestamp"}, naive)
    assert valid == [stamp(2024, 1, 1, 12)]  # naive times are UTC
    zoned = pa.array([dt.datetime(2024, 1, 1, 12)], pa.timestamp("ms", tz="Europe/Paris"))
    valid, _ = outcome({"type": "timestamp"}, zoned)
    assert valid == [stamp(2024, 1, 1, 12)]  # stored as UTC already
    nanos = pa.array([1_704_067_200_123_456_789], pa.timestamp("ns"))
    valid, _ = outcome({"type": "timestamp"}, nanos)
    assert valid == [stamp(2024, 1, 1, 0, 0, 0, 123456)]  # truncated to microseconds
    text = ["2024-01-02T03:04:05.123456789Z", "2024-01-02 03:04:05.9999999"]
    valid, rejected = outcome({"type": "timestamp"}, text)  # text too (the README says so)
    assert valid == [stamp(2024, 1, 2, 3, 4, 5, 123456), stamp(2024, 1, 2, 3, 4, 5, 999999)]
    assert rejected == {}


def test_dates_from_timestamp_and_date_columns() -> None:
    valid, _ = outcome({"type": "date"}, pa.array([dt.datetime(2024, 1, 1, 23, 30)]))
    assert valid == [dt.date(2024, 1, 1)]
    valid, _ = outcome({"type": "date"}, pa.array([dt.date(2024, 1, 1)], pa.date64()))
    assert valid == [dt.date(2024, 1, 1)]
    valid, _ = outcome({"type": "timestamp"}, pa.array([dt.date(2024, 1, 1)]))
    assert valid == [stamp(2024, 1, 1)]


def test_string_from_other_columns() -> None:
    valid, _ = outcome({"type": "string"}, pa.array([1, None]))
    assert valid == ["1", None]
    valid, _ = outcome({"type": "string"}, pa.array(["x", "y"], pa.large_string()))
    assert valid == ["x", "y"]
    valid, _ = outcome({"type": "string"}, pa.array(["x", "y", "x"]).dictionary_encode())
    assert valid == ["x", "y", "x"]


def test_dictionary_text_is_trimmed_like_plain_text() -> None:
    values = pa.array(["1", "", " 2 "]).dictionary_encode()
    valid, rejected = outcome({"type": "int64", "required": True}, values)
    assert valid == [1, 2]
    assert rejected == {1: "v: required value missing"}


def test_all_null_columns() -> None:
    valid, _ = outcome({"type": "int64"}, pa.array([None, None], pa.null()))
    assert valid == [None, None]
    valid, _ = outcome({"type": "timestamp"}, pa.array(["", None]))
    assert valid == [None, None]


# Required ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["string", "int64", "float64", "bool", "timestamp", "date"])
def test_required_rejects_null_empty_and_whitespace(kind: str) -> None:
    good = {
        "string": "x",
        "int64": "1",
        "float64": "1.5",
        "bool": "yes",
        "timestamp": "2024-01-01T00:00:00Z",
        "date": "2024-01-01",
    }[kind]
    valid, rejected = outcome({"type": kind, "required": True}, [good, None, "", "   ", "\t"])
    assert len(valid) == 1 and valid[0] is not None
    assert rejected == {i: "v: required value missing" for i in (1, 2, 3, 4)}


def test_optional_missing_values_become_null() -> None:
    valid, rejected = outcome({"type": "int64"}, ["1", None, "", "  "])
    assert valid == [1, None, None, None]
    assert rejected == {}


def test_missing_value_is_not_also_reported_by_other_rules() -> None:
    rule = {"type": "int64", "required": True, "min": 5, "allowed": [7], "pattern": "^7$"}
    _, rejected = outcome(rule, [None, "7"])
    assert rejected == {0: "v: required value missing"}


def test_invalid_value_is_not_also_reported_by_other_rules() -> None:
    rule = {"type": "int64", "min": 5, "pattern": "^[0-9]+$", "max_length": 1}
    _, rejected = outcome(rule, ["abc", "7"])
    assert rejected == {0: "v: not a valid int64"}


# min / max ---------------------------------------------------------------------------------------


def test_min_max_int() -> None:
    valid, rejected = outcome({"type": "int64", "min": 1, "max": 10}, ["0", "1", "10", "11"])
    assert valid == [1, 10]
    assert rejected == {0: "v: below minimum 1", 3: "v: above maximum 10"}


def test_min_max_int_with_fractional_and_text_bounds() -> None:
    valid, rejected = outcome({"type": "int64", "min": 1.5, "max": "3.5"}, ["1", "2", "3", "4"])
    assert valid == [2, 3]
    assert rejected == {0: "v: below minimum 1.5", 3: "v: above maximum 3.5"}


def test_min_int_exact_for_large_values() -> None:
    valid, rejected = outcome(
        {"type": "int64", "min": 10**18}, ["999999999999999999", "1000000000000000000"]
    )
    assert valid == [10**18]
    assert rejected == {0: "v: below minimum 1000000000000000000"}


def test_int_bounds_beyond_the_int64_range() -> None:
    _, rejected = outcome({"type": "int64", "min": 1e30}, ["1"])
    assert rejected == {0: "v: below minimum 1e+30"}
    valid, _ = outcome({"type": "int64", "max": 1e30}, ["1"])
    assert valid == [1]


def test_min_max_float() -> None:
    rule = {"type": "float64", "min": 0.5, "max": 1.5}
    valid, rejected = outcome(rule, ["0.49", "0.5", "1.5", "1.51", "-1e9"])
    assert valid == [0.5, 1.5]
    assert rejected == {
        0: "v: below minimum 0.5",
        3: "v: above maximum 1.5",
        4: "v: below minimum 0.5",
    }


def test_min_max_timestamp() -> None:
    rule = {"type": "timestamp", "min": "2024-01-01", "max": "2024-12-31T00:00:00+01:00"}
    values = [
        "2023-12-31T23:59:59Z",
        "2024-01-01T00:00:00Z",
        "2024-01-01T01:00:00+01:00",  # the minimum, in another zone
        "2024-12-30T23:00:00Z",  # the maximum
        "2024-12-30T23:00:01Z",
    ]
    valid, rejected = outcome(rule, values)
    assert valid == [stamp(2024, 1, 1), stamp(2024, 1, 1), stamp(2024, 12, 30, 23)]
    assert rejected == {
        0: "v: below minimum 2024-01-01",
        4: "v: above maximum 2024-12-31T00:00:00+01:00",
    }


def test_min_max_date() -> None:
    rule = {"type": "date", "min": "2024-01-01", "max": "2024-12-31"}
    valid, rejected = outcome(rule, ["2023-12-31", "2024-01-01", "2024-12-31", "2025-01-01"])
    assert valid == [dt.date(2024, 1, 1), dt.date(2024, 12, 31)]
    assert rejected == {0: "v: below minimum 2024-01-01", 3: "v: above maximum 2024-12-31"}


# allowed, lengths, pattern -----------------------------------------------------------------------


def test_allowed_strings() -> None:
    valid, rejected = outcome({"allowed": ["new", "active"]}, ["new", "active", "New", None, "x"])
    assert valid == ["new", "active", None]
    assert rejected == {
        2: "v: not one of the allowed values",
        4: "v: not one of the allowed values",
    }


def test_allowed_typed_values() -> None:
    valid, rejected = outcome({"type": "int64", "allowed": [1, 2]}, ["1", "+2", "3"])
    assert valid == [1, 2]
    assert rejected == {2: "v: not one of the allowed values"}
    valid, rejected = outcome({"type": "float64", "allowed": [1, 2.5, "3"]}, ["1.0", "3", "4"])
    assert valid == [1.0, 3.0]
    assert rejected == {2: "v: not one of the allowed values"}
    valid, rejected = outcome({"type": "bool", "allowed": [True]}, ["yes", "no"])
    assert valid == [True]
    assert rejected == {1: "v: not one of the allowed values"}
    valid, rejected = outcome(
        {"type": "date", "allowed": ["2024-01-01"]}, ["2024-01-01", "2024-01-02"]
    )
    assert valid == [dt.date(2024, 1, 1)]
    assert rejected == {1: "v: not one of the allowed values"}


def test_lengths_count_characters() -> None:
    rule = {"min_length": 2, "max_length": 3}
    valid, rejected = outcome(rule, ["a", "ab", "abc", "abcd", "é€", "😀😀😀😀"])
    assert valid == ["ab", "abc", "é€"]
    assert rejected == {
        0: "v: shorter than 2 characters",
        3: "v: longer than 3 characters",
        5: "v: longer than 3 characters",
    }


def test_lengths_of_numbers_use_their_text() -> None:
    valid, rejected = outcome({"type": "int64", "max_length": 3}, [" 123 ", "1234"])
    assert valid == [123]
    assert rejected == {1: "v: longer than 3 characters"}


def test_pattern_is_searched_not_fully_matched() -> None:
    valid, rejected = outcome({"pattern": "b+"}, ["abc", "ac", "bbb"])
    assert valid == ["abc", "bbb"]
    assert rejected == {1: "v: does not match pattern b+"}
    valid, rejected = outcome({"pattern": "^[a-z]+$"}, ["abc", "ab1", " abc"])
    assert valid == ["abc"]
    assert rejected == {
        1: "v: does not match pattern ^[a-z]+$",
        2: "v: does not match pattern ^[a-z]+$",
    }


def test_pattern_on_numbers_sees_the_trimmed_text() -> None:
    valid, rejected = outcome({"type": "int64", "pattern": "^[0-9]{3}$"}, [" 123 ", "12", "0123"])
    assert valid == [123]
    assert rejected == {
        1: "v: does not match pattern ^[0-9]{3}$",
        2: "v: does not match pattern ^[0-9]{3}$",
    }


def test_reasons_name_the_rule_not_the_value() -> None:
    _, rejected = outcome({"pattern": "^ok$"}, ["secret-1", "secret-2"])
    assert set(rejected.values()) == {"v: does not match pattern ^ok$"}


# Several rules and columns -----------------------------------------------------------------------


def test_multiple_failures_are_joined_in_rule_order() -> None:
    columns = {
        "id": {"type": "int64", "required": True, "min": 5},
        "email": {"type": "string", "required": True, "pattern": "@"},
        "code": {"type": "string", "min_length": 3, "pattern": "^[A-Z]+$"},
    }
    table = pa.table(
        {
            "id": ["1", None, "7", "x", "9"],
            "email": ["a@b", "", "nope", "c@d", "e@f"],
            "code": ["ab", "ABC", "ABC", "abcd", "ABCD"],
        }
    )
    result = validate(columns, table)
    assert result.rejected.tolist() == [0, 1, 2, 3]
    assert result.reasons.to_pylist() == [
        "id: below minimum 5; code: does not match pattern ^[A-Z]+$; "
        "code: shorter than 3 characters",
        "id: required value missing; email: required value missing",
        "email: does not match pattern @",
        "id: not a valid int64; code: does not match pattern ^[A-Z]+$",
    ]
    assert result.valid.to_pylist() == [{"id": 9, "email": "e@f", "code": "ABCD"}]


def test_valid_records_keep_their_order_and_the_declared_types() -> None:
    columns = {
        "s": {"type": "string"},
        "i": {"type": "int64"},
        "f": {"type": "float64"},
        "b": {"type": "bool"},
        "t": {"type": "timestamp"},
        "d": {"type": "date"},
    }
    n = 50
    table = pa.table(
        {
            "s": [f"r{k}" for k in range(n)],
            "i": [str(k) if k % 7 else "bad" for k in range(n)],
            "f": [f"{k}.5" for k in range(n)],
            "b": ["yes" if k % 2 else "no" for k in range(n)],
            "t": [f"2024-01-01T00:00:{k:02d}Z" for k in range(n)],
            "d": [f"2024-01-{1 + k % 28:02d}" for k in range(n)],
        }
    )
    result = validate(columns, table)
    assert result.rejected.tolist() == [k for k in range(n) if k % 7 == 0]
    assert result.valid.column("s").to_pylist() == [f"r{k}" for k in range(n) if k % 7]
    assert result.valid.schema == pa.schema(
        [
            ("s", pa.string()),
            ("i", pa.int64()),
            ("f", pa.float64()),
            ("b", pa.bool_()),
            ("t", pa.timestamp("us", tz="UTC")),
            ("d", pa.date32()),
        ]
    )


def test_output_types_are_declared_even_when_nothing_is_valid_or_present() -> None:
    table = pa.table({"i": pa.array([None, None], pa.string())})
    result = validate({"i": {"type": "int64"}, "t": {"type": "timestamp"}}, table)
    assert result.valid.schema.field("i").type == pa.int64()
    assert result.valid.schema.field("t").type == pa.timestamp("us", tz="UTC")
    empty = validate({"i": {"type": "int64"}}, pa.table({"i": pa.array([], pa.string())}))
    assert empty.valid.num_rows == 0 and empty.valid.schema.field("i").type == pa.int64()


def test_chunked_input_columns() -> None:
    column = pa.chunked_array([["1", "x"], ["3"]])
    result = validate({"a": {"type": "int64"}}, pa.table({"a": column}))
    assert result.valid.column("a").to_pylist() == [1, 3]
    assert result.rejected.tolist() == [1]


# Columns present, absent and extra ---------------------------------------------------------------


def test_absent_columns_required_rejected_optional_appended_as_null() -> None:
    table = pa.table({"other": [1, 2]})
    columns = {"need": {"type": "string", "required": True}, "opt": {"type": "int64"}}
    result = validate(columns, table)
    assert result.rejected.tolist() == [0, 1]
    assert result.reasons.to_pylist() == ["need: required value missing"] * 2
    result = validate({"opt": {"type": "int64"}, "when": {"type": "date"}}, table)
    assert result.valid.column_names == ["other", "opt", "when"]
    assert result.valid.column("opt").to_pylist() == [None, None]
    assert result.valid.schema.field("opt").type == pa.int64()
    assert result.valid.schema.field("when").type == pa.date32()


def test_extra_columns_keep_in_place_and_drop() -> None:
    table = pa.table({"x": ["a", "b"], "id": ["1", "2"], "y": [1.5, 2.5]})
    kept = validate({"id": {"type": "int64"}}, table)
    assert kept.valid.column_names == ["x", "id", "y"]
    assert kept.valid.column("x").to_pylist() == ["a", "b"]
    dropped = validate({"id": {"type": "int64"}}, table, extra_columns="drop")
    assert dropped.valid.column_names == ["id"]
    assert dropped.valid.column("id").to_pylist() == [1, 2]


def test_check_columns_reports_missing_required_columns() -> None:
    processor = get_processor(
        "validate",
        {
            "columns": {
                "id": {"required": True},
                "email": {"required": True},
                "note": {"required": False},
            }
        },
    )
    assert processor.check_columns(["id", "email"]) == []
    problems = processor.check_columns(["id", "name"])
    assert len(problems) == 1
    assert "'email'" in problems[0] and "id, name" in problems[0]


# Invalid options ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        ({"columns": {"a": {"pattern": "("}}}, "invalid pattern"),
        ({"columns": {"a": {"pattern": "(?=x)"}}}, "invalid pattern"),  # RE2 has no lookahead
        ({"columns": {"a": {"requird": True}}}, "requird"),
        ({"columns": {"a": {}}, "extra": "drop"}, "extra"),
        ({"columns": {"a": {"type": "text"}}}, "type"),
        ({"columns": {"a": {"min": 1}}}, "min/max apply to numbers and times, not string"),
        ({"columns": {"a": {"type": "bool", "max": 1}}}, "not bool"),
        ({"columns": {"a": {"type": "int64", "min": "ten"}}}, "not a number"),
        ({"columns": {"a": {"type": "float64", "max": "nan"}}}, "not a finite number"),
        ({"columns": {"a": {"type": "timestamp", "min": "yesterday-ish"}}}, "columns.a"),
        ({"columns": {"a": {"type": "int64", "allowed": ["x", 1]}}}, "allowed values"),
        ({"columns": {"a": {"type": "date", "allowed": ["2024-02-30"]}}}, "allowed values"),
        ({"columns": {"a": {"type": "int64", "format": "%Y"}}}, "format applies"),
        ({"columns": {"a": {"min_length": -1}}}, "min_length"),
        ({"columns": {"a": {}}, "extra_columns": "delete"}, "extra_columns"),
    ],
)
def test_invalid_options_are_config_errors(options: dict[str, Any], expected: str) -> None:
    with pytest.raises(ConfigError, match="validate") as info:
        get_processor("validate", options)
    assert expected in str(info.value)


# The chunk runner with validate ------------------------------------------------------------------

CSV = 'id,email,amount\n1,a@x.io,5\n2,bad,7\n3,"c@x.io",-1\n4,"d@x.io","1\n0"\n5,,3\n6,f@x.io,2.5\n'
RULES = {
    "columns": {
        "id": {"type": "int64", "required": True},
        "email": {"type": "string", "required": True, "pattern": "@"},
        "amount": {"type": "float64", "min": 0},
    }
}


def _spec(tmp_path: Path, storage: Storage) -> BatchSpec:
    source = tmp_path / "leads.csv"
    source.write_text(CSV)
    return prepare_batch(
        storage,
        str(source),
        processor="validate",
        processor_options=RULES,
        output=str(tmp_path / "out"),
        chunking=ChunkingSettings(chunk_records=3),
    )


def test_run_chunk_conserves_records_and_writes_rejects(tmp_path: Path, storage: Storage) -> None:
    spec = _spec(tmp_path, storage)
    plan = plan_batch(storage, spec)
    assert len(plan.chunks) == 2
    valid_rows, rejected_rows = [], []
    for chunk in plan.chunks:
        summary = run_chunk(storage, spec, chunk)
        assert summary.balanced
        assert summary.records_in == chunk.records
        valid = pq.read_table(summary.valid_uri)
        assert valid.num_rows == summary.records_out
        assert valid.schema.field("id").type == pa.int64()
        valid_rows += valid.to_pylist()
        if summary.records_rejected:
            assert summary.rejected_uri is not None
            rejected = pq.read_table(summary.rejected_uri)
            assert rejected.num_rows == summary.records_rejected
            assert {"_reason", "_chunk", "_record", "_line"} <= set(rejected.column_names)
            rejected_rows += rejected.to_pylist()
    assert sum(1 for _ in CSV.splitlines()) - 1 == 7  # 6 records, one spans two lines
    assert len(valid_rows) + len(rejected_rows) == 6
    assert [r["id"] for r in valid_rows] == [1, 6]
    assert [
        (r["id"], r["_reason"], r["_chunk"], r["_record"], r["_line"]) for r in rejected_rows
    ] == [
        ("2", "email: does not match pattern @", 0, 1, 3),
        ("3", "amount: below minimum 0", 0, 2, 4),
        ("4", "amount: not a valid float64", 1, 0, 5),
        ("5", "email: required value missing", 1, 1, 7),
    ]


def test_run_chunk_is_idempotent_and_removes_stale_rejects(
    tmp_path: Path, storage: Storage
) -> None:
    spec = _spec(tmp_path, storage)
    chunk = plan_batch(storage, spec).chunks[0]
    first = run_chunk(storage, spec, chunk)
    assert first.rejected_uri is not None
    valid_before = Path(first.valid_uri).read_bytes()
    rejected_before = Path(first.rejected_uri).read_bytes()
    again = run_chunk(storage, spec, chunk)
    assert (again.valid_uri, again.rejected_uri) == (first.valid_uri, first.rejected_uri)
    assert Path(again.valid_uri).read_bytes() == valid_before
    assert Path(first.rejected_uri).read_bytes() == rejected_before
    assert again.rejection_reasons == first.rejection_reasons
    # The rules relaxed: the same chunk now has no rejects, and the old rejected file goes.
    lenient = get_processor("validate", {"columns": {"id": {"type": "int64"}}})
    relaxed = run_chunk(storage, spec, chunk, lenient)
    assert relaxed.records_rejected == 0 and relaxed.rejected_uri is None
    assert not Path(first.rejected_uri).exists()
    assert pq.read_table(relaxed.valid_uri).column("id").to_pylist() == [1, 2, 3]
