"""The ``kalman`` keyed processor: compared with a plain per-record reference written from the
rules, across halves, for every input type it reads, and its options."""

from __future__ import annotations

import copy
import datetime as dt
import math
import random
import re
from decimal import Decimal
from typing import Any

import pyarrow as pa
import pytest

from batch_pipeline.core.common.errors import ConfigError, ProcessorError
from batch_pipeline.core.processing.processors import get_processor
from batch_pipeline.core.processing.processors.keyed import KeyedProcessor, KeyedResult

UTC = dt.UTC
BASE = dt.datetime(2024, 3, 1, tzinfo=UTC)
OUTLIER = "weight: outlier (|innovation| > gate * sigma)"
LATE = "ts: older than the key's state"
OPTIONS = {"key": "user_id", "time": "ts", "value": "weight"}


def kalman(**options: Any) -> KeyedProcessor:
    processor = get_processor("kalman", {**OPTIONS, **options})
    assert isinstance(processor, KeyedProcessor)
    return processor


def run(processor: KeyedProcessor, table: pa.Table, states: dict[str, Any]) -> KeyedResult:
    before = copy.deepcopy(states)
    result = processor.process_keys(table, states)
    assert states == before  # the states passed in are not changed
    assert result.valid.num_rows + len(result.rejected) == table.num_rows
    assert result.rejected.tolist() == sorted(set(result.rejected.tolist()))
    assert result.reasons.type == pa.string() and len(result.reasons) == len(result.rejected)
    return result


# The reference: one record at a time, straight from the rules ----------------------------------


def micros(moment: dt.datetime) -> int:
    delta = moment - dt.datetime(1970, 1, 1, tzinfo=UTC)
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def ref_time(value: Any) -> tuple[int | None, str | None]:
    """(microseconds, problem)."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None, "ts: missing"
    if isinstance(value, dt.datetime):
        moment = value
    elif isinstance(value, dt.date):
        moment = dt.datetime(value.year, value.month, value.day)
    else:
        try:
            moment = dt.datetime.fromisoformat(value.strip())
        except ValueError:
            return None, f"ts: not a timestamp (got '{value}')"
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return micros(moment), None


def ref_value(value: Any) -> tuple[float | None, str | None]:
    if value is None or (isinstance(value, str) and not value.strip()):
        return None, "weight: missing"
    if isinstance(value, str):
        text = value.strip()
        number = (
            float(text) if re.fullmatch(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?", text) else None
        )
    else:
        number = float(value)
    if number is None or not math.isfinite(number):
        return None, f"weight: not a number (got '{value}')"
    return number, None


def reference(
    rows: list[tuple[Any, Any, Any]],
    states: dict[str, dict[str, Any]],
    q: float,
    r: float,
    gate: float | None,
) -> tuple[dict[int, tuple[float, float, float]], dict[int, str], dict[str, dict[str, Any]]]:
    """({row: (smoothed, variance, innovation)}, {row: reason}, new states)."""
    reasons: dict[int, str] = {}
    usable: dict[str, list[tuple[int, int, float]]] = {}
    for i, (key, time, value) in enumerate(rows):
        problems = []
        if key is None or not str(key).strip():
            problems.append("user_id: missing")
        t, problem = ref_time(time)
        problems += [problem] if problem else []
        z, problem = ref_value(value)
        problems += [problem] if problem else []
        if problems:
            reasons[i] = "; ".join(problems)
        else:
            assert t is not None and z is not None
            usable.setdefault(str(key), []).append((t, i, z))
    kept: dict[int, tuple[float, float, float]] = {}
    new_states = {}
    for key, records in usable.items():
        state = states.get(key)
        for t, i, z in sorted(records):
            if state is None:
                state = {"x": z, "P": r, "t": t, "count": 1}
                kept[i] = (z, r, 0.0)
                new_states[key] = state
                continue
            if t < state["t"]:
                reasons[i] = LATE
                continue
            p_pred = state["P"] + q * (t - state["t"]) / 1e6 / 86_400
            y = z - state["x"]
            s = p_pred + r
            if gate is not None and abs(y) > gate * math.sqrt(s):
                reasons[i] = OUTLIER
                continue
            k = p_pred / s
            x, p = state["x"] + k * y, (1 - k) * p_pred
            state = {"x": x, "P": p, "t": t, "count": state["count"] + 1}
            kept[i] = (x, p, y)
            new_states[key] = state
    return kept, reasons, new_states


# Random data ---------------------------------------------------------------------------------


def time_forms(rng: random.Random, moment: dt.datetime, typed: bool) -> Any:
    if typed:
        return moment
    form = rng.randrange(4)
    if form == 0:
        return moment.strftime("%Y-%m-%dT%H:%M:%SZ")
    if form == 1:
        return moment.astimezone(dt.timezone(dt.timedelta(hours=2))).isoformat()
    if form == 2:
        return moment.strftime("%Y-%m-%d %H:%M:%S")
    return f" {moment.replace(tzinfo=None).isoformat()} "


def random_rows(seed: int, n: int, typed: bool) -> list[tuple[Any, Any, Any]]:
    """Interleaved users, few distinct times (many ties), outliers, missing and bad values,
    times and keys; in time order but for a few shuffled records."""
    rng = random.Random(seed)
    moments = sorted(BASE + dt.timedelta(hours=rng.randrange(24 * 20)) for _ in range(n // 4))
    users = [f"u{k}" for k in range(12)]
    level = {u: rng.uniform(50, 90) for u in users}
    rows: list[tuple[Any, Any, Any]] = []
    for i in range(n):
        user: Any = rng.choice(users)
        moment = moments[min(i // 4, len(moments) - 1)]
        time: Any = time_forms(rng, moment, typed)
        value: Any = (
            level[user] + rng.gauss(0, 1) + (rng.choice([-15, 15]) if rng.random() < 0.08 else 0)
        )
        value = value if typed else repr(value)
        roll = rng.random()
        if roll < 0.03:
            user = rng.choice([None, ""] if not typed else [None])
        elif roll < 0.06:
            time = rng.choice([None, "x", "2024-02-30", ""] if not typed else [None])
        elif roll < 0.10:
            value = rng.choice(
                ["abc", "nan", "inf", "1e400", "", None]
                if not typed
                else [None, math.nan, math.inf]
            )
        rows.append((user, time, value))
    for _ in range(n // 50):  # a few records out of place: late for some keys
        i, j = rng.randrange(n), rng.randrange(n)
        rows[i], rows[j] = rows[j], rows[i]
    return rows


def random_states(seed: int) -> dict[str, dict[str, Any]]:
    rng = random.Random(seed + 1000)
    states = {}
    for k in range(0, 12, 2):  # half the users have a state; some of it in the data's range
        t = BASE + dt.timedelta(hours=rng.randrange(-48, 24 * 5))
        states[f"u{k}"] = {
            "x": rng.uniform(50, 90),
            "P": rng.uniform(0.1, 2),
            "t": micros(t),
            "count": 3,
        }
    return states


def table_of(rows: list[tuple[Any, Any, Any]], typed: bool) -> pa.Table:
    keys, times, values = zip(*rows, strict=True)
    return pa.table(
        {
            "id": list(range(len(rows))),
            "user_id": pa.array(keys, pa.string()),
            "ts": pa.array(times, pa.timestamp("ms", tz="UTC") if typed else pa.string()),
            "weight": pa.array(values, pa.float64() if typed else pa.string()),
        }
    )


def outcome(
    result: KeyedResult, table: pa.Table
) -> tuple[dict[int, tuple[float, ...]], dict[int, str]]:
    ids = result.valid.column("id").to_pylist()
    numbers = zip(
        *(
            result.valid.column(c).to_pylist()
            for c in ("smoothed", "smoothed_variance", "innovation")
        ),
        strict=True,
    )
    kept = dict(zip(ids, numbers, strict=True))
    row_ids = table.column("id").to_pylist()
    rejected = {
        row_ids[i]: reason
        for i, reason in zip(result.rejected.tolist(), result.reasons.to_pylist(), strict=True)
    }
    return kept, rejected


def assert_close(actual: dict[Any, Any], expected: dict[Any, Any]) -> None:
    assert actual.keys() == expected.keys()
    for key, value in expected.items():
        assert actual[key] == pytest.approx(value, rel=1e-9, abs=1e-9), key


@pytest.mark.parametrize("typed", [False, True], ids=["text", "typed"])
@pytest.mark.parametrize("seed", range(6))
def test_the_processor_matches_the_reference(seed: int, typed: bool) -> None:
    rows = random_rows(seed, 600, typed)
    states = random_states(seed) if seed % 3 else {}
    q, r, gate = [(0.5, 1.0, 3.0), (0.01, 2.5, None), (2.0, 0.3, 2.0)][seed % 3]
    table = table_of(rows, typed)
    result = run(kalman(process_noise=q, measurement_noise=r, gate=gate), table, states)
    kept, rejected = outcome(result, table)
    expected_kept, expected_rejected, expected_states = reference(rows, states, q, r, gate)
    assert rejected == expected_rejected
    assert_close(kept, expected_kept)
    assert_close(result.states, expected_states)
    assert LATE in rejected.values() or not states
    assert gate is None or OUTLIER in rejected.values()
    # Each key's records together, keys in order of first appearance, then in time order.
    valid_keys = result.valid.column("user_id").to_pylist()
    firsts = list(dict.fromkeys(k for k, _, _ in rows if k))
    assert list(dict.fromkeys(valid_keys)) == [k for k in firsts if k in valid_keys]
    ids = result.valid.column("id").to_pylist()
    for key in set(valid_keys):
        mine = [
            (ref_time(rows[i][1])[0], i) for i, k in zip(ids, valid_keys, strict=True) if k == key
        ]
        assert mine == sorted(mine)


@pytest.mark.parametrize("seed", range(4))
def test_two_halves_one_after_the_other_equal_one_run(seed: int) -> None:
    rows = random_rows(seed, 400, typed=False)
    rows.sort(key=lambda row: ref_time(row[1])[0] or 0)  # the batches come in time order
    table = table_of(rows, typed=False)
    processor = kalman(process_noise=0.2, gate=3.0)
    states = random_states(seed)
    whole = run(processor, table, states)
    half = len(rows) // 2
    first = run(processor, table.slice(0, half), states)
    second = run(processor, table.slice(half), {**states, **first.states})
    kept, rejected = outcome(whole, table)
    kept_1, rejected_1 = outcome(first, table.slice(0, half))
    kept_2, rejected_2 = outcome(second, table.slice(half))
    assert {**rejected_1, **rejected_2} == rejected
    assert_close({**kept_1, **kept_2}, kept)
    assert_close({**first.states, **second.states}, whole.states)


# Examples --------------------------------------------------------------------------------------


def day(n: float) -> dt.datetime:
    return BASE + dt.timedelta(days=n)


def test_a_first_measurement_then_the_update_by_hand() -> None:
    table = pa.table({"user_id": ["a", "a"], "ts": [day(0), day(2)], "weight": [10.0, 12.0]})
    result = run(kalman(process_noise=0.5, measurement_noise=1.0), table, {})
    p_pred = 1.0 + 0.5 * 2
    k = p_pred / (p_pred + 1.0)
    assert result.valid.column("smoothed").to_pylist() == [10.0, pytest.approx(10 + 2 * k)]
    assert result.valid.column("smoothed_variance").to_pylist() == [
        1.0,
        pytest.approx((1 - k) * p_pred),
    ]
    assert result.valid.column("innovation").to_pylist() == [0.0, 2.0]
    assert result.states == {
        "a": {
            "x": pytest.approx(10 + 2 * k),
            "P": pytest.approx((1 - k) * p_pred),
            "t": micros(day(2)),
            "count": 2,
        }
    }
    assert isinstance(result.states["a"]["t"], int)


def test_reasons_name_the_column_and_show_the_value() -> None:
    table = pa.table(
        {
            "user_id": ["a", None, "a", "a", "a", "a", "  "],
            "ts": ["2024-03-01", "2024-03-01", "x", "2024-03-02", "2024-03-03", "2024-02-01", None],
            "weight": ["70", "70", "70", "abc", "a\nb" + "9" * 80, "70", "100"],
        }
    )
    result = run(
        kalman(gate=3), table, {"a": {"x": 70.0, "P": 1.0, "t": micros(day(0)), "count": 5}}
    )
    reasons = dict(zip(result.rejected.tolist(), result.reasons.to_pylist(), strict=True))
    assert reasons == {
        1: "user_id: missing",
        2: "ts: not a timestamp (got 'x')",
        3: "weight: not a number (got 'abc')",
        4: "weight: not a number (got 'a\\nb" + "9" * 56 + "…')",
        5: LATE,
        6: "user_id: missing; ts: missing",
    }
    outlier = pa.table(
        {"user_id": ["a", "a"], "ts": ["2024-03-01", "2024-03-01"], "weight": [70, 90]}
    )
    result = run(kalman(gate=3), outlier, {})
    assert result.rejected.tolist() == [1] and result.reasons.to_pylist() == [OUTLIER]
    assert result.states["a"]["count"] == 1


def test_a_key_with_nothing_applied_keeps_its_state() -> None:
    state = {"x": 70.0, "P": 1.0, "t": micros(day(5)), "count": 5}
    table = pa.table({"user_id": ["a", "b"], "ts": [day(1), day(1)], "weight": [1.0, None]})
    result = run(kalman(), table, {"a": state})
    assert result.states == {} and result.valid.num_rows == 0


def test_a_damaged_stored_state_is_a_processor_error() -> None:
    table = pa.table({"user_id": ["a"], "ts": [day(1)], "weight": [1.0]})
    with pytest.raises(ProcessorError, match="'a'"):
        kalman().process_keys(table, {"a": {"x": 1.0}})


def test_input_values_are_kept_exactly() -> None:
    table = pa.table(
        {
            "user_id": pa.array([7, 8, 7], pa.int64()),
            "ts": pa.array([day(1), day(0), day(0)], pa.timestamp("ns", tz="Europe/Paris")),
            "weight": pa.array(
                [Decimal("70.10"), Decimal("80.00"), Decimal("69.90")], pa.decimal128(6, 2)
            ),
            "note": pa.array(["x", "y", "z"]).dictionary_encode(),
            "tags": pa.array([[1], [], None], pa.list_(pa.int64())),
        }
    )
    result = run(kalman(), table, {})
    inputs = result.valid.select(table.column_names)
    assert inputs.schema == table.schema
    assert inputs.to_pylist() == table.take([2, 0, 1]).to_pylist()  # key 7 (by time), then 8
    assert set(result.states) == {"7", "8"}
    for name in ("smoothed", "smoothed_variance", "innovation"):
        assert result.valid.schema.field(name).type == pa.float64()


@pytest.mark.parametrize(
    "values",
    [
        pa.array([70, 72, 71], pa.int64()),
        pa.array([70.0, 72.0, 71.0]),
        pa.array(["70", " 72.0 ", "7.1e1"]),
        pa.array([Decimal(70), Decimal(72), Decimal(71)], pa.decimal128(4, 0)),
        pa.array([70, 72, 71], pa.uint8()),
    ],
    ids=["int", "float", "text", "decimal", "uint8"],
)
@pytest.mark.parametrize(
    "times",
    [
        pa.array([day(0), day(1.5), day(3)], pa.timestamp("us", tz="UTC")),
        pa.array([t.replace(tzinfo=None) for t in (day(0), day(1.5), day(3))], pa.timestamp("s")),
        pa.array([day(0), day(1.5), day(3)], pa.timestamp("ns", tz="America/New_York")),
        pa.array(["2024-03-01T00:00:00Z", "2024-03-02T14:00:00+02:00", "2024-03-04"]),
        pa.array(["2024-03-01", "2024-03-02 12:00:00", "2024-03-04T00:00:00.000000Z"]),
    ],
    ids=["timestamp", "naive-seconds", "ns-new-york", "iso-text", "iso-mixed"],
)
def test_every_number_and_time_type_gives_the_same_result(
    values: pa.Array, times: pa.Array
) -> None:
    table = pa.table({"user_id": ["a", "a", "a"], "ts": times, "weight": values})
    result = run(kalman(process_noise=0.3), table, {})
    expected = run(
        kalman(process_noise=0.3),
        pa.table(
            {"user_id": ["a"] * 3, "ts": [day(0), day(1.5), day(3)], "weight": [70.0, 72.0, 71.0]}
        ),
        {},
    )
    for name in ("smoothed", "smoothed_variance", "innovation"):
        assert result.valid.column(name).to_pylist() == pytest.approx(
            expected.valid.column(name).to_pylist()
        )
    assert result.states == expected.states


def test_dates_are_midnight_utc() -> None:
    table = pa.table(
        {
            "user_id": ["a", "a"],
            "ts": pa.array([dt.date(2024, 3, 1), dt.date(2024, 3, 3)]),
            "weight": [1.0, 2.0],
        }
    )
    result = run(kalman(), table, {})
    assert result.states["a"]["t"] == micros(day(2))


@pytest.mark.parametrize(
    ("values", "reason"),
    [
        (pa.array([True, False]), "weight: not a number (got 'true')"),
        (pa.array([math.nan, 1.0]), "weight: not a number (got 'nan')"),
        (pa.array([-math.inf, 1.0]), "weight: not a number (got '-inf')"),
    ],
)
def test_booleans_nan_and_infinity_are_not_numbers(values: pa.Array, reason: str) -> None:
    table = pa.table({"user_id": ["a", "a"], "ts": [day(0), day(1)], "weight": values})
    result = run(kalman(), table, {})
    assert result.reasons.to_pylist()[0] == reason


def test_numbers_are_not_times() -> None:
    table = pa.table({"user_id": ["a"], "ts": [1_700_000_000], "weight": [1.0]})
    result = run(kalman(), table, {})
    assert result.reasons.to_pylist() == ["ts: not a timestamp (got '1700000000')"]


# Options and columns ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "words"),
    [
        ({**OPTIONS, "typo": 1}, "typo"),
        ({"time": "ts", "value": "weight"}, "key"),
        ({**OPTIONS, "process_noise": -0.1}, "process_noise"),
        ({**OPTIONS, "measurement_noise": 0}, "measurement_noise"),
        ({**OPTIONS, "gate": 0}, "gate"),
        ({**OPTIONS, "gate": "inf"}, "gate"),
        ({**OPTIONS, "value": "ts"}, "three different columns"),
    ],
)
def test_bad_options_are_config_errors(options: dict[str, Any], words: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(words)):
        get_processor("kalman", options)


def test_defaults_and_key_column() -> None:
    processor = kalman()
    assert processor.key_column() == "user_id"
    assert processor.options.model_dump() == {
        **OPTIONS,
        "process_noise": 0.01,
        "measurement_noise": 1.0,
        "gate": None,
    }


def test_check_columns_names_missing_and_clashing_columns() -> None:
    processor = kalman()
    assert processor.check_columns(["user_id", "ts", "weight", "other"]) == []
    problems = processor.check_columns(["user_id", "smoothed"])
    assert problems[0].startswith("time column 'ts' is missing")
    assert problems[1].startswith("value column 'weight' is missing")
    assert "'smoothed'" in problems[2]
    # A bucket may hold only records of a file set's file that lacks a column: rejected as
    # missing it (a single file without it is refused before any work, by check_columns).
    result = processor.process_keys(pa.table({"user_id": ["a", "b"], "ts": [day(0)] * 2}), {})
    assert result.valid.num_rows == 0 and result.rejected.tolist() == [0, 1]
    assert result.reasons.to_pylist() == ["weight: missing"] * 2 and result.states == {}
    with pytest.raises(ConfigError, match="'smoothed' is in the source"):
        processor.process_keys(
            pa.table({"user_id": ["a"], "ts": [day(0)], "weight": [1.0], "smoothed": [1.0]}), {}
        )


def test_it_runs_only_in_the_keyed_stage() -> None:
    with pytest.raises(ConfigError, match="keyed"):
        kalman().process(pa.table({"user_id": ["a"]}))
