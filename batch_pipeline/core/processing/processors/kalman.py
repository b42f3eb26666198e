"""``kalman``: a one-dimensional local-level Kalman filter per key, carried across batches.

Options (JSON or YAML shape)::

    {"key": "user_id", "time": "ts", "value": "weight",
     "process_noise": 0.01, "measurement_noise": 1.0, "gate": 3}

Each key's level ``x`` (variance ``P``) follows its measurements ``z`` in time order (ties in
input order). A key's first measurement ever sets ``x = z``, ``P = r``. A later one, ``dt``
days (seconds / 86400) after the key's last applied measurement: ``P' = P + q*dt``, innovation
``y = z - x``, ``S = P' + r``; with a ``gate``, ``|y| > gate * sqrt(S)`` rejects it as an
outlier and leaves the state as it was; else ``K = P'/S``, ``x += K*y``, ``P = (1-K)*P'``.
``q`` (``process_noise``) is the variance the level gains per day, ``r``
(``measurement_noise``) the variance of a measurement, ``gate`` in standard deviations.

Rejected, each with every problem it has (joined with '; '): a missing key (null or blank
text; also, as a missing time or value, a file set's file without that column); a missing
value or one that is not a finite number (ints, floats, decimals and numeric text are
numbers; NaN, inf and booleans are not); a missing time or one that is not a time
(Arrow timestamps of any unit, dates, ISO 8601 text read as ``validate`` reads it; naive times
are UTC; times are compared to the microsecond); a measurement older than the key's last
applied one (``ts: older than the key's state``; an equal time is applied with ``dt = 0``);
an outlier (``weight: outlier (|innovation| > gate * sigma)``).

Valid records keep their input columns exactly as they came and gain ``smoothed`` (x after
the update), ``smoothed_variance`` (P) and ``innovation`` (y; 0 for a key's first
measurement), float64; each key's records together (keys in order of first appearance), in
time order. A key's state is ``{"x": float, "P": float, "t": int, "count": int}``: ``t`` is the
last applied time in microseconds since 1970-01-01 UTC (exact, JSON-able, and read without
parsing), ``count`` the measurements applied to the key so far.

Columns are parsed once for the whole bucket with Arrow; the recursion is a loop over plain
Python floats and lists, key by key (about 0.4 s of the 1 s a million records over 100,000 keys
take). numba would run it in 15 ms but costs about 1 s per process to import and compile (0.4 s
from its cache): not worth a dependency for buckets of a few million records.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import Field, model_validator

from batch_pipeline.core.columns.values import array_text
from batch_pipeline.core.common.errors import ConfigError, ProcessorError
from batch_pipeline.core.common.text import quoted
from batch_pipeline.core.processing.processors.base import ProcessorOptions, register
from batch_pipeline.core.processing.processors.keyed import (
    KeyedProcessor,
    KeyedResult,
    KeyState,
    key_order,
    key_text,
)
from batch_pipeline.core.processing.processors.validate.checks import joined_reasons
from batch_pipeline.core.processing.processors.validate.conversion import _convert, _np
from batch_pipeline.core.processing.processors.validate.rules import ColumnRule

OUTPUT_COLUMNS = ("smoothed", "smoothed_variance", "innovation")
MICROS_PER_DAY = 86_400_000_000
SHOWN_CHARS = 60  # of a value quoted in a reason
FLOAT_RULE = ColumnRule(type="float64")
TIME_RULE = ColumnRule(type="timestamp")
TIMESTAMP_US = pa.timestamp("us")


class KalmanOptions(ProcessorOptions):
    key: str = Field(min_length=1)
    time: str = Field(min_length=1)
    value: str = Field(min_length=1)
    process_noise: float = Field(0.01, ge=0, allow_inf_nan=False)
    measurement_noise: float = Field(1.0, gt=0, allow_inf_nan=False)
    gate: float | None = Field(None, gt=0, allow_inf_nan=False)

    @model_validator(mode="after")
    def _distinct(self) -> KalmanOptions:
        if len({self.key, self.time, self.value}) < 3:
            raise ValueError("key, time and value must be three different columns")
        return self


@register
class Kalman(KeyedProcessor):
    """Smooths each key's measurements with a local-level Kalman filter, state across batches."""

    name = "kalman"
    Options = KalmanOptions
    options: KalmanOptions

    def key_column(self) -> str:
        return self.options.key

    def state_namespace(self) -> str:
        """``{name}/{key}/{value}``: each measured column of a key has its own level."""
        return f"{self.name}/{self.options.key}/{self.options.value}"

    def check_columns(self, columns: Sequence[str]) -> list[str]:
        o = self.options
        problems = [
            f"{role} column {name!r} is missing (columns: {', '.join(columns)})"
            for role, name in (("key", o.key), ("time", o.time), ("value", o.value))
            if name not in columns
        ]
        return problems + _clashes(columns)

    def process_keys(self, table: pa.Table, states: Mapping[str, KeyState]) -> KeyedResult:
        problems = _clashes(table.column_names)
        if problems:
            raise ConfigError("; ".join(problems))
        o = self.options
        # A single file without one of the columns is refused before any work; a file of a
        # set may lack one: its records have no such value, and are rejected as missing it.
        key_column, time_column, value_column = (
            table.column(name) if name in table.column_names else pa.nulls(table.num_rows)
            for name in (o.key, o.time, o.value)
        )
        keys = key_text(key_column)
        key_missing = ~_np(pc.is_valid(keys))
        if pa.types.is_string(keys.type) and len(keys):
            key_missing |= _np(pc.equal(pc.utf8_length(pc.utf8_trim_whitespace(keys)), 0))
        times, time_missing, time_bad = _times(time_column)
        values, value_missing, value_bad = _values(value_column)
        unusable = key_missing | time_missing | time_bad | value_missing | value_bad

        order = key_order(keys, times)
        order = order[~unusable[order]]
        encoded = pc.dictionary_encode(keys)
        codes = encoded.indices.fill_null(-1).to_numpy(zero_copy_only=False)[order]
        bounds = np.append(np.flatnonzero(np.diff(codes, prepend=-1)), order.size)
        starts, ends = bounds[:-1], bounds[1:]
        names = encoded.dictionary.to_pylist()
        groups = zip(
            [names[c] for c in codes[starts].tolist()], starts.tolist(), ends.tolist(), strict=True
        )
        run = _filter(
            groups,
            times[order].tolist(),
            values[order].tolist(),
            states,
            o.process_noise / MICROS_PER_DAY,
            o.measurement_noise,
            o.gate,
        )
        late_at = np.asarray(run.late, dtype=np.int64)
        outlier_at = np.asarray(run.outliers, dtype=np.int64)
        applied = np.ones(order.size, dtype=bool)
        applied[late_at] = applied[outlier_at] = False
        valid = table.take(pa.array(order[applied]))
        for name, column in zip(OUTPUT_COLUMNS, (run.x, run.p, run.y), strict=True):
            numbers = np.asarray(column, dtype=np.float64)[applied]
            valid = valid.append_column(name, pa.array(numbers, type=pa.float64()))
        late = np.zeros(table.num_rows, dtype=bool)
        late[order[late_at]] = True
        outlier = np.zeros(table.num_rows, dtype=bool)
        outlier[order[outlier_at]] = True
        rejected = np.flatnonzero(unusable | late | outlier)
        checks: list[tuple[np.ndarray, str | np.ndarray]] = [
            (key_missing, f"{o.key}: missing"),
            (time_missing, f"{o.time}: missing"),
            (time_bad, _got(time_column, time_bad, rejected, o.time, "a timestamp")),
            (value_missing, f"{o.value}: missing"),
            (value_bad, _got(value_column, value_bad, rejected, o.value, "a number")),
            (late, f"{o.time}: older than the key's state"),
            (outlier, f"{o.value}: outlier (|innovation| > gate * sigma)"),
        ]
        return KeyedResult(valid, rejected, joined_reasons(checks, rejected), run.states)


def _clashes(columns: Sequence[str]) -> list[str]:
    """The problem of input columns named like the ones kalman adds (none: [])."""
    taken = [name for name in OUTPUT_COLUMNS if name in columns]
    if not taken:
        return []
    return [
        f"column {', '.join(repr(c) for c in taken)} is in the source, and kalman writes its "
        f"own {', '.join(OUTPUT_COLUMNS)}"
    ]


class _Run:
    """What the recursion gives, by position in key-then-time order: x, P and y (set where a
    measurement was applied), the late and outlying positions, and the new states."""

    def __init__(self, size: int) -> None:
        self.x = [0.0] * size
        self.p = [0.0] * size
        self.y = [0.0] * size
        self.late: list[int] = []
        self.outliers: list[int] = []
        self.states: dict[str, KeyState] = {}


def _filter(
    groups: Any,
    times: list[int],
    values: list[float],
    states: Mapping[str, KeyState],
    q: float,
    r: float,
    gate: float | None,
) -> _Run:
    """The recursion, key by key: ``groups`` gives (key, start, end) positions in ``times`` and
    ``values`` (sorted by key, then time); ``q`` is per microsecond. Plain floats and lists,
    nothing else in the loop: the gate is compared squared (``y*y > gate**2 * S``, the same
    test for S > 0), and no gate is an infinite one."""
    run = _Run(len(times))
    xs, ps, ys, late, outliers = run.x, run.p, run.y, run.late, run.outliers
    g2 = math.inf if gate is None else gate * gate
    for key, start, end in groups:
        state = states.get(key)
        if state is None:
            x = values[start]
            p = r
            last = times[start]
            count = before = 1
            xs[start] = x
            ps[start] = p
            start += 1
        else:
            x, p, last, count = _read_state(key, state)
            before = count
        for i in range(start, end):
            t = times[i]
            if t < last:
                late.append(i)
                continue
            p_pred = p + q * (t - last)
            y = values[i] - x
            s = p_pred + r
            if y * y > g2 * s:
                outliers.append(i)
                continue
            k = p_pred / s
            x += k * y
            p = (1.0 - k) * p_pred
            last = t
            count += 1
            xs[i] = x
            ps[i] = p
            ys[i] = y
        if state is None or count != before:
            run.states[key] = {"x": x, "P": p, "t": last, "count": count}
    return run


def _read_state(key: str, state: KeyState) -> tuple[float, float, int, int]:
    try:
        x, p, t, count = state["x"], state["P"], state["t"], state["count"]
        read = float(x), float(p), int(t), int(count)
    except (KeyError, TypeError, ValueError) as exc:
        raise ProcessorError(
            f"kalman: the stored state of key {quoted(key)} is not "
            f"{{x, P, t, count}}: {quoted(state)}"
        ) from exc
    if not (math.isfinite(read[0]) and math.isfinite(read[1]) and read[1] >= 0):
        raise ProcessorError(f"kalman: the stored state of key {quoted(key)} is {quoted(state)}")
    return read


def _plain(column: pa.ChunkedArray | pa.Array) -> pa.Array:
    """One array, dictionaries decoded, large strings as strings."""
    array = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    if pa.types.is_dictionary(array.type):
        array = array.dictionary_decode()
    if pa.types.is_large_string(array.type) or pa.types.is_string_view(array.type):
        array = pc.cast(array, pa.string())
    return array


def _values(column: pa.ChunkedArray | pa.Array) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(float64 values, missing, present but not a finite number)."""
    raw = _plain(column)
    kind = raw.type
    present = _np(pc.is_valid(raw))
    if pa.types.is_string(kind):
        typed, present, bad = _convert(raw, FLOAT_RULE)
    elif pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_decimal(kind):
        typed = pc.cast(raw, pa.float64(), safe=False)
        bad = present & ~_np(pc.is_finite(typed))
    else:  # booleans, times, nested values: no number
        typed = pa.nulls(len(raw), pa.float64())
        bad = present
    numbers = np.asarray(pc.fill_null(typed, 0.0).to_numpy(zero_copy_only=False), np.float64)
    return numbers, ~present, bad


def _times(column: pa.ChunkedArray | pa.Array) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(microseconds since the epoch, UTC; missing; present but not a time)."""
    raw = _plain(column)
    kind = raw.type
    present = _np(pc.is_valid(raw))
    bad = np.zeros(len(raw), dtype=bool)
    if pa.types.is_timestamp(kind):  # stored as UTC with a zone; naive ones are taken as UTC
        typed = pc.cast(raw, pa.timestamp("us", tz=kind.tz), safe=False)
    elif pa.types.is_date(kind):
        typed = pc.cast(raw, TIMESTAMP_US)
    elif pa.types.is_string(kind):
        typed, present, bad = _convert(raw, TIME_RULE)
    else:  # numbers, booleans, nested values: no time
        typed = pa.nulls(len(raw), TIMESTAMP_US)
        bad = present
    micros = pc.fill_null(pc.cast(typed, pa.int64()), 0).to_numpy(zero_copy_only=False)
    return np.asarray(micros, np.int64), ~present, bad


def _got(
    column: pa.ChunkedArray | pa.Array,
    bad: np.ndarray,
    rejected: np.ndarray,
    name: str,
    what: str,
) -> np.ndarray:
    """The reasons ``name: not <what> (got 'value')`` of the ``bad`` rows, aligned with
    ``rejected``; each distinct value formatted once."""
    reasons = np.full(rejected.size, None, dtype=object)
    rows = np.flatnonzero(bad)
    if not rows.size:
        return reasons
    raw = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    texts = pc.dictionary_encode(array_text(raw.take(pa.array(rows))))
    formatted = np.array(
        [f"{name}: not {what} (got {quoted(_short(t))})" for t in texts.dictionary.to_pylist()],
        dtype=object,
    )
    reasons[np.searchsorted(rejected, rows)] = formatted[texts.indices.to_numpy()]
    return reasons


def _short(text: str | None) -> str:
    text = "" if text is None else text
    return text if len(text) <= SHOWN_CHARS else text[: SHOWN_CHARS - 1] + "…"
