"""The chunk-size optimizer on synthetic histories (cold start, growth, shrinking, plateau,
memory pressure, errors, spread, clamps) and the history it reads from a real SQLite ledger."""

from __future__ import annotations

import math
import os
import random
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from batch_pipeline.core.common.errors import ConfigError
from batch_pipeline.core.common.models import (
    BatchSpec,
    Chunk,
    ChunkingSettings,
    ChunkSummary,
    DeliverySettings,
    Format,
    ObjectInfo,
    Plan,
    SourceSpec,
)
from batch_pipeline.core.ledger import Ledger
from batch_pipeline.core.tuning import (
    STEP_OVERHEAD_SECONDS,
    ChunkObservation,
    TuningSettings,
    WorkloadKey,
    choose_chunk_records,
    default_concurrency,
    estimate_total_records,
    fit_memory,
    history_from_ledger,
    options_digest,
    workload_key,
    workload_key_from_config,
)

MIB = 1 << 20
GIB = 1 << 30


def settings(**changes: Any) -> TuningSettings:
    """Defaults, with two workers (the tests must not depend on this machine's CPU count)."""
    return TuningSettings(**{"workers": 2, **changes})


def batch(
    size: int,
    rate: float,
    chunks: int = 10,
    *,
    t0: float = 0.0,
    peak: int = 0,
    attempts: int = 1,
    tuned: int | None = None,
) -> list[ChunkObservation]:
    """``chunks`` full chunks of ``size`` records processed at ``rate`` records/s."""
    return [
        ChunkObservation(
            chunk_records=size,
            records=size,
            seconds=size / rate,
            peak_rss_bytes=peak,
            attempts=attempts,
            finished_at=t0 + i,
            batch_id=f"b{t0:g}",
            chunk=i,
            tuned_records=tuned,
        )
        for i in range(chunks)
    ]


def failed(size: int, category: str, *, attempts: int = 1, t: float = 0.0) -> ChunkObservation:
    return ChunkObservation(
        size, size, 0.0, 0, attempts, failed=True, error_category=category, finished_at=t
    )


# Cold start -------------------------------------------------------------------------------------


def test_cold_start_without_history_takes_the_documented_default() -> None:
    decision = choose_chunk_records([], settings())
    assert decision.chunk_records == 500_000 == ChunkingSettings().chunk_records
    assert decision.workload_chunk_records == 500_000
    assert decision.cold_start
    assert "cold start" in decision.reasons[0] and "500,000" in decision.reasons[0]
    assert decision.inputs["previous_chunk_records"] is None


def test_cold_start_with_too_few_samples_ignores_what_they_suggest() -> None:
    # Two chunks of 0.1 s would ask for growth, but two are fewer than min_samples (3).
    history = batch(100_000, 1e6, chunks=2)
    decision = choose_chunk_records(history, settings())
    assert decision.cold_start
    assert decision.chunk_records == 500_000
    assert "2 measured chunk(s)" in decision.reasons[0]
    # The same history with a lower threshold is used: no cold start.
    warm = choose_chunk_records(history, settings(min_samples=2))
    assert not warm.cold_start and warm.chunk_records == 200_000


def test_cold_start_default_is_clamped_and_spread_is_not_applied() -> None:
    decision = choose_chunk_records([], settings(max_chunk_records=300_000), total_records=10**6)
    assert decision.chunk_records == 300_000
    assert any("max_chunk_records" in r for r in decision.reasons)


# Orchestration and retries --------------------------------------------------------------------


def test_short_steps_grow_capped_at_double_and_reasons_name_the_numbers() -> None:
    decision = choose_chunk_records(batch(500_000, 1.2e6), settings())
    assert not decision.cold_start
    assert decision.chunk_records == 1_000_000  # the bound asks for 2,508,000
    first = decision.reasons[0]
    for figure in ("1.2M records/s", "500,000 records/chunk", "0.42 s", "0.11 s", "21%", "5%"):
        assert figure in first, (figure, first)
    assert "2,508,000" in first and "grow" in first
    assert any("x2" in r and "1,000,000" in r for r in decision.reasons)
    assert decision.reasons[-1] == "chunk_records 500,000 -> 1,000,000"
    inputs = decision.inputs
    assert inputs["rate_records_per_second"] == pytest.approx(1.2e6)
    assert inputs["step_seconds"] == pytest.approx(0.417, abs=1e-3)
    assert inputs["overhead_share"] == pytest.approx(0.11 / (0.11 + 500_000 / 1.2e6), abs=1e-4)
    assert inputs["lower_bound_records"] == math.ceil(1.2e6 * 0.11 * 0.95 / 0.05)


def test_growth_converges_without_oscillating_and_meets_the_overhead_target() -> None:
    rng = random.Random(5)
    s = settings()
    history: list[ChunkObservation] = []
    sizes = [choose_chunk_records(history, s).chunk_records]
    for run in range(10):
        drift = rng.uniform(0.85, 1.15)  # the machine's speed drifts between runs
        history += batch(sizes[-1], 1.2e6 * drift, t0=100.0 * run)
        sizes.append(choose_chunk_records(history, s).chunk_records)
    assert sizes[:3] == [500_000, 1_000_000, 2_000_000]
    assert sizes == sorted(sizes), sizes  # never shrinks: nothing here asks for it
    assert len(set(sizes[-5:])) == 1, sizes  # settled
    step = sizes[-1] / 1.2e6
    assert 0.11 / (0.11 + step) <= 0.055  # the 5% target, within the measurements' drift


def test_steps_longer_than_the_retry_bound_shrink() -> None:
    decision = choose_chunk_records(batch(5_000_000, 50_000), settings())
    assert decision.chunk_records == 3_000_000  # 60 s at 50k records/s
    assert "100 s" in decision.reasons[0] and "60 s" in decision.reasons[0]
    assert "shrink" in decision.reasons[0]


def test_retries_win_when_the_overhead_bound_asks_for_longer_steps() -> None:
    # Spawned steps (1.9 s) under a 2% share need 93 s of work: longer than 60 s allows.
    s = settings(step_overhead_seconds=STEP_OVERHEAD_SECONDS["spawn"], max_overhead_share=0.02)
    decision = choose_chunk_records(batch(5_000_000, 1e5), s)
    assert decision.inputs["lower_bound_records"] == 9_310_000
    assert decision.chunk_records == 6_000_000  # 60 s, not 9.4M
    assert "retries win" in decision.reasons[0] and "93 s" in decision.reasons[0]


def test_shrinking_is_capped_at_half_per_run() -> None:
    decision = choose_chunk_records(batch(5_000_000, 20_000), settings())  # 250 s steps
    assert decision.inputs["upper_bound_records"] == 1_200_000
    assert decision.chunk_records == 2_500_000
    assert any("/2" in r and "2,500,000" in r for r in decision.reasons)


def test_steps_within_bounds_hold_and_small_changes_are_not_made() -> None:
    s = settings(step_overhead_seconds=STEP_OVERHEAD_SECONDS["forkserver"])
    # 0.35 s per step: at least 6.65 s of work; 7 s steps are within bounds.
    decision = choose_chunk_records(batch(7_000_000, 1e6), s)
    assert decision.chunk_records == 7_000_000
    assert decision.reasons[-1] == "chunk_records stays 7,000,000"
    # 6.5 s steps are just short of the bound: growing by 2% is not worth a new plan.
    near = choose_chunk_records(batch(6_500_000, 1e6), s)
    assert near.inputs["lower_bound_records"] == 6_650_000
    assert near.chunk_records == 6_500_000
    assert any("within 10%" in r for r in near.reasons)


def test_the_rate_is_taken_at_the_last_size() -> None:
    # Older chunks of 100k were slow; the last batch (400k) is fast and decides.
    history = batch(100_000, 50_000, t0=0) + batch(400_000, 4e6, t0=100)
    decision = choose_chunk_records(history, settings())
    assert decision.inputs["rate_at_chunk_records"] == 400_000
    assert decision.inputs["rate_records_per_second"] == pytest.approx(4e6)
    assert decision.chunk_records == 800_000


def test_the_recorded_tuned_size_is_the_anchor_rather_than_a_spread_one() -> None:
    # The last batch was cut small for its input (spread), but the workload's size was 2M.
    history = batch(250_000, 1.5e6, tuned=2_000_000)
    decision = choose_chunk_records(history, settings())
    assert decision.inputs["previous_chunk_records"] == 2_000_000
    assert decision.chunk_records == 3_200_000  # the lower bound 3,135,000, rounded up
    untuned = choose_chunk_records(batch(250_000, 1.5e6), settings())
    assert untuned.chunk_records == 500_000  # from 250,000: x2 at most


# Throughput plateau ---------------------------------------------------------------------------


def _sizes(rates: dict[int, float]) -> list[ChunkObservation]:
    history: list[ChunkObservation] = []
    for k, (size, rate) in enumerate(rates.items()):
        history += batch(size, rate, t0=100.0 * k)
    return history


def test_rising_throughput_grows_and_a_plateau_stops_growth() -> None:
    # 10 ms per step: steps of 0.4 s already meet the overhead target; only speed could grow.
    s = settings(step_overhead_seconds=0.01)
    rising = choose_chunk_records(_sizes({100_000: 4e5, 200_000: 7e5, 400_000: 1e6}), s)
    assert rising.chunk_records == 800_000
    assert any("still rising" in r for r in rising.reasons)
    plateau = choose_chunk_records(_sizes({100_000: 4e5, 200_000: 9.5e5, 400_000: 1e6}), s)
    assert plateau.chunk_records == 400_000
    assert plateau.inputs["plateau_chunk_records"] == 200_000
    reason = next(r for r in plateau.reasons if "plateau" in r)
    assert "200,000" in reason and "950k/s" in reason and "15%" in reason


def test_a_plateau_does_not_shrink_and_does_not_override_the_overhead_bound() -> None:
    # Larger chunks are slower per record: no growth for speed, but no shrinking either.
    slower = choose_chunk_records(
        _sizes({200_000: 1e6, 400_000: 6e5}), settings(step_overhead_seconds=0.01)
    )
    assert slower.chunk_records == 400_000
    # A flat rate is a plateau from the smallest size, yet the 0.11 s overhead still asks for
    # longer steps.
    flat = choose_chunk_records(_sizes({250_000: 1e6, 500_000: 1e6}), settings())
    assert flat.inputs["plateau_chunk_records"] == 250_000
    assert flat.chunk_records == 1_000_000


# Memory ---------------------------------------------------------------------------------------


def rss(records: int, baseline: int = 300 * MIB, per_record: int = 2_000) -> int:
    return baseline + per_record * records


def test_memory_fit_recovers_baseline_and_bytes_per_record() -> None:
    history: list[ChunkObservation] = []
    for k, size in enumerate((100_000, 200_000, 400_000)):
        history += batch(size, 1.2e6, t0=100.0 * k, peak=rss(size))
        # Each batch's small last chunk peaked higher (the process kept what the full ones
        # used, plus more): with a fifth of the records, it is not a point of the fit.
        tail_peak = rss(size) + 50 * MIB
        history.append(
            ChunkObservation(size, size // 5, 0.05, tail_peak, finished_at=100.0 * k + 50)
        )
    baseline, per_record, how = fit_memory([o for o in history if o.measured]) or (0, 0, "")
    assert baseline == pytest.approx(300 * MIB, rel=1e-6)
    assert per_record == pytest.approx(2_000, rel=1e-6)
    assert how == "least squares over 3 sizes"


def test_memory_pressure_caps_growth() -> None:
    history: list[ChunkObservation] = []
    for k, size in enumerate((100_000, 200_000, 400_000)):
        history += batch(size, 1.2e6, t0=100.0 * k, peak=rss(size))
    decision = choose_chunk_records(history, settings())
    cap = math.floor(GIB * 0.8 / 2_000)  # 429,496 records of working memory
    assert decision.inputs["memory_cap_records"] == cap
    assert decision.chunk_records == 420_000  # rounded down under the cap; 800,000 otherwise
    assert decision.inputs["bytes_per_record"] == pytest.approx(2_000)
    assert decision.inputs["baseline_rss_bytes"] == pytest.approx(300 * MIB, abs=1)
    memory = next(r for r in decision.reasons if "bytes/record" in r)
    assert "300 MiB" in memory and "2,000 bytes/record" in memory and "429,496" in memory
    # With a limit on the whole process, the baseline counts against it too.
    limited = choose_chunk_records(history, settings(memory_limit_bytes=GIB))
    assert limited.inputs["memory_cap_records"] == math.floor((GIB * 0.8 - 300 * MIB) / 2_000)
    assert limited.chunk_records == 270_000


def test_memory_over_budget_shrinks_by_more_than_half() -> None:
    history = batch(200_000, 1e6, t0=0, peak=rss(200_000, per_record=10_000))
    history += batch(400_000, 1e6, t0=100, peak=rss(400_000, per_record=10_000))
    decision = choose_chunk_records(history, settings())
    assert decision.inputs["memory_cap_records"] == math.floor(GIB * 0.8 / 10_000)  # 85,899
    assert decision.chunk_records == 85_000  # not 200,000: memory comes before the /2 limit
    assert any("memory comes first" in r for r in decision.reasons)


def test_one_size_blames_the_whole_peak_on_records_unless_the_baseline_is_known() -> None:
    history = batch(500_000, 1e6, peak=3 * GIB // 2)
    cautious = choose_chunk_records(history, settings())
    assert cautious.inputs["bytes_per_record"] == pytest.approx(1.5 * GIB / 500_000, rel=1e-3)
    assert cautious.chunk_records == 260_000  # cap 266,666
    known = choose_chunk_records(history, settings(baseline_rss_bytes=GIB // 2))
    assert known.inputs["bytes_per_record"] == pytest.approx(GIB / 500_000, rel=1e-3)
    assert known.chunk_records == 400_000  # cap 400,000


def test_memory_that_does_not_grow_linearly_falls_back_to_the_largest_size() -> None:
    # Flat (streaming): 600 MiB at 200k and at 400k; blaming it on 200k would cap at 273k.
    flat = batch(200_000, 1e6, t0=0, peak=600 * MIB) + batch(400_000, 1e6, t0=100, peak=600 * MIB)
    baseline, per_record, how = fit_memory(flat) or (0, 0, "")
    assert baseline == 0 and per_record == pytest.approx(600 * MIB / 400_000)
    assert how == "per-record cost at 400,000 records, baseline unknown"
    # Faster than linear (the line would start below zero): the largest size costs the most.
    steep = batch(200_000, 1e6, t0=0, peak=100 * MIB) + batch(400_000, 1e6, t0=100, peak=GIB)
    baseline, per_record, how = fit_memory(steep) or (-1, 0, "")
    assert baseline == 0 and per_record == pytest.approx(GIB / 400_000)
    assert how == "per-record cost at 400,000 records, baseline unknown"


def test_running_out_of_memory_caps_at_half_that_size_even_on_a_cold_start() -> None:
    decision = choose_chunk_records([failed(800_000, "out_of_memory")], settings())
    assert decision.cold_start
    assert decision.chunk_records == 400_000
    assert decision.inputs["out_of_memory_cap_records"] == 400_000
    assert any("ran out of memory" in r and "800,000" in r for r in decision.reasons)


# Errors ---------------------------------------------------------------------------------------


def _recent_with_retries(retried: int, size: int = 1_000_000) -> list[ChunkObservation]:
    """Three clean batches, then one of 50 chunks of which ``retried`` needed a second try."""
    history: list[ChunkObservation] = []
    for k in range(3):
        history += batch(size, 1e6, chunks=50, t0=1000.0 * k)
    recent = batch(size, 1e6, chunks=50, t0=5000.0)
    for i in range(retried):
        recent[i] = ChunkObservation(size, size, 1.0, 0, attempts=2, finished_at=5000.0 + i)
    return history + recent


def test_rising_error_rate_halves_the_size() -> None:
    s = settings(step_overhead_seconds=0.01)  # 1 s steps are within bounds: no other change
    assert choose_chunk_records(_recent_with_retries(0), s).chunk_records == 1_000_000
    decision = choose_chunk_records(_recent_with_retries(15), s)
    assert decision.chunk_records == 500_000
    assert decision.inputs["error_rate"] == pytest.approx(15 / 65, abs=1e-4)
    reason = next(r for r in decision.reasons if "halve" in r)
    assert "15 failed of 65 attempts (23.1%)" in reason and "500,000" in reason


def test_errors_outside_the_recent_window_do_not_count() -> None:
    s = settings(step_overhead_seconds=0.01)
    old_errors = [failed(1_000_000, "timeout", attempts=4, t=-1.0 - i) for i in range(30)]
    decision = choose_chunk_records(old_errors + _recent_with_retries(0), s)
    assert decision.inputs["error_rate"] == 0
    assert decision.chunk_records == 1_000_000


def test_a_few_errors_stop_growth() -> None:
    # 3 retries in 50 chunks (5.7% > 2%): the overhead bound asks for growth, errors hold it.
    grows = choose_chunk_records(_recent_with_retries(0), settings())
    assert grows.chunk_records == 2_000_000
    held = choose_chunk_records(_recent_with_retries(3), settings())
    assert held.chunk_records == 1_000_000
    assert any("no growth" in r and "5.7%" in r for r in held.reasons)


def test_throttling_holds_rather_than_halves_and_permanent_causes_are_not_counted() -> None:
    s = settings(step_overhead_seconds=0.01)
    clean = batch(1_000_000, 1e6, chunks=40)
    throttled = [failed(1_000_000, "throttled", attempts=4, t=100.0 + i) for i in range(10)]
    held = choose_chunk_records(clean + throttled, s)
    assert held.inputs["error_rate"] == pytest.approx(40 / 80)
    assert held.chunk_records == 1_000_000
    assert any("throttling" in r for r in held.reasons)
    crashes = [failed(1_000_000, "processor", attempts=1, t=100.0 + i) for i in range(10)]
    assert choose_chunk_records(clean + crashes, s).chunk_records == 500_000
    denied = [failed(1_000_000, "access_denied", t=100.0 + i) for i in range(10)]
    ignored = choose_chunk_records(clean + denied, s)
    assert ignored.inputs["error_rate"] == 0
    assert ignored.chunk_records == 1_000_000
    assert any("access_denied" in r and "not counted" in r for r in ignored.reasons)


# Spread over workers ----------------------------------------------------------------------------


def test_a_known_total_is_spread_over_the_workers() -> None:
    s = settings(workers=4, step_overhead_seconds=0.01)  # 100k records/s: 10 s steps of 1M
    history = batch(1_000_000, 1e5)
    alone = choose_chunk_records(history, s)
    assert alone.chunk_records == 1_000_000
    decision = choose_chunk_records(history, s, total_records=4_000_000)
    assert decision.chunk_records == 500_000  # 8 chunks for 4 workers x 2
    assert decision.workload_chunk_records == 1_000_000  # the workload's size is unchanged
    assert decision.inputs["spread_chunk_records"] == 500_000
    assert any("4,000,000 records over 4 worker(s)" in r for r in decision.reasons)
    small = choose_chunk_records(history, s, total_records=300_000)
    assert math.ceil(300_000 / small.chunk_records) >= 8


def test_spread_stops_at_the_overhead_bound() -> None:
    s = settings(workers=4)  # 0.11 s per step at 1.2M records/s: at least 2,508,000 per chunk
    history = batch(2_600_000, 1.2e6)
    decision = choose_chunk_records(history, s, total_records=4_000_000)
    assert decision.chunk_records == 2_600_000
    lower = decision.inputs["lower_bound_records"]
    assert isinstance(lower, int) and decision.chunk_records >= lower
    assert any("fewer chunks" in r for r in decision.reasons)
    between = choose_chunk_records(batch(4_000_000, 1.2e6), s, total_records=8_000_000)
    assert between.chunk_records == 2_600_000  # 1M would be 8 chunks, but too short: bound wins


# Clamps and rounding ----------------------------------------------------------------------------


def test_clamped_to_min_and_max_chunk_records() -> None:
    s = settings(min_chunk_records=50_000, max_chunk_records=1_500_000)
    errors = batch(60_000, 1e6, attempts=3)  # every chunk needed three attempts
    assert choose_chunk_records(errors, s).chunk_records == 50_000  # halving gives 30,000
    assert choose_chunk_records(batch(1_000_000, 1e6), s).chunk_records == 1_500_000


def test_sizes_are_rounded_to_two_significant_digits() -> None:
    decision = choose_chunk_records(batch(1_300_000, 1e6), settings())
    assert decision.inputs["lower_bound_records"] == 2_090_000
    assert decision.chunk_records == 2_100_000  # a lower bound is rounded up
    shrink = choose_chunk_records(batch(5_000_000, 51_234), settings())
    assert shrink.inputs["upper_bound_records"] == 3_074_040
    assert shrink.chunk_records == 3_000_000  # an upper bound is rounded down


# Metadata and settings --------------------------------------------------------------------------


def test_to_metadata_is_flat_prefixed_and_typed() -> None:
    history = batch(500_000, 1.2e6, peak=rss(500_000))
    decision = choose_chunk_records(history, settings(), total_records=10**7)
    meta = decision.to_metadata()
    assert all(key.startswith("tuning_") for key in meta)
    assert all(type(v) in (str, int, float) for v in meta.values()), meta
    assert meta["tuning_chunk_records"] == decision.chunk_records
    assert meta["tuning_workload_chunk_records"] == decision.workload_chunk_records
    assert meta["tuning_cold_start"] == 0
    assert meta["tuning_reasons"] == "\n".join(decision.reasons)
    for key in ("rate_records_per_second", "overhead_share", "bytes_per_record", "error_rate"):
        assert isinstance(meta[f"tuning_{key}"], float)
    assert meta["tuning_samples"] == 10 and meta["tuning_total_records"] == 10**7
    cold = choose_chunk_records([], settings()).to_metadata()
    assert cold["tuning_cold_start"] == 1
    assert "tuning_rate_records_per_second" not in cold  # unknown figures are left out


def test_default_concurrency_is_the_cpu_count(monkeypatch: pytest.MonkeyPatch) -> None:
    assert default_concurrency() == (os.cpu_count() or 1)
    assert TuningSettings().workers == default_concurrency()
    monkeypatch.setattr(os, "cpu_count", lambda: None)
    assert default_concurrency() == 1


@pytest.mark.parametrize(
    "changes",
    [
        {"max_overhead_share": 0},
        {"max_overhead_share": 1.5},
        {"min_chunk_records": 10, "max_chunk_records": 5},
        {"max_step_factor": 1.0},
        {"error_rate_hold": 0.5, "error_rate_shrink": 0.1},
        {"memory_safety": 0},
        {"workers": 0},
    ],
)
def test_settings_are_checked(changes: dict[str, Any]) -> None:
    with pytest.raises(ConfigError, match="tuning settings"):
        TuningSettings(**changes)


def test_min_step_seconds_follows_the_overhead_share() -> None:
    assert TuningSettings(workers=1).min_step_seconds == pytest.approx(2.09)
    spawn = TuningSettings(workers=1, step_overhead_seconds=STEP_OVERHEAD_SECONDS["spawn"])
    assert spawn.min_step_seconds == pytest.approx(36.1)


# Workloads and totals ---------------------------------------------------------------------------


def source(
    uri: str, fmt: Format = "csv", compression: str | None = None, **layout: Any
) -> SourceSpec:
    return SourceSpec(
        uri=uri,
        format=fmt,
        compression=compression,
        info=ObjectInfo(uri, 1_000_100, etag="e"),
        data_start=100,
        layout=layout,
    )


def test_workload_keys_from_specs_and_stored_configs() -> None:
    config = {"processor": "validate", "processor_options": {"columns": {"a": {}}}}
    key = workload_key_from_config(config, "s3://b/in/leads.csv")
    assert key == WorkloadKey("validate", "csv", None, options_digest({"columns": {"a": {}}}))
    # A file set is a workload of its own (a cost per file), of its files' format.
    files = {**config, "members": ["2025/a.jsonl.gz", "b.jsonl"]}
    file_set = workload_key_from_config(files, "s3://b/in/")
    assert file_set == WorkloadKey("validate", "jsonl-set", None, key.options if key else None)
    assert file_set is not None and not WorkloadKey("validate", "jsonl").matches(file_set)
    assert workload_key_from_config(config, "s3://b/in/leads.jsonl.gz") == WorkloadKey(
        "validate", "jsonl", "gzip", key.options if key else None
    )
    assert workload_key_from_config({**config, "format": "parquet"}, "/x/data.bin") is not None
    assert workload_key_from_config(config, "/x/data.bin") is None  # format unknown
    assert workload_key_from_config({"source": "a.csv"}, "a.csv") is None  # processor unknown
    assert key is not None
    assert WorkloadKey("validate", "csv").matches(key)  # any options
    assert not WorkloadKey("validate", "csv", options="other").matches(key)
    assert not WorkloadKey("passthrough", "csv").matches(key)
    spec = _spec("b1", "validate", "s3://b/in/leads.csv", 1_000)
    assert workload_key(spec) == WorkloadKey("validate", "csv")
    assert workload_key(spec, match_options=True).options == options_digest({})


def test_total_records_are_estimated_from_what_initialize_learned() -> None:
    assert estimate_total_records(source("a.csv", bytes_per_record=100.0)) == 10_000
    assert estimate_total_records(source("a.parquet", "parquet", num_rows=42)) == 42
    sheets = [
        {"name": "a", "header_row": 1, "max_row": 11, "empty": False},
        {"name": "b", "header_row": 1, "max_row": 1, "empty": True},
    ]
    assert estimate_total_records(source("a.xlsx", "excel", sheets=sheets)) == 10
    assert estimate_total_records(source("a.csv.gz", compression="gzip")) is None
    assert estimate_total_records(source("a.json", "json")) is None
    assert estimate_total_records(source("a.csv")) is None  # no sample
    # A file set of Parquet files: its bytes over the first file's bytes per record.
    files = (ObjectInfo("/in/a.parquet", 600), ObjectInfo("/in/b.parquet", 400))
    folder = replace(
        source("/in/", "parquet", record_bytes_estimate=10.0),
        info=ObjectInfo("/in/", 1_000, etag="set"),
        members=files,
    )
    assert estimate_total_records(folder) == 100


# History from a real ledger ---------------------------------------------------------------------


def _spec(
    batch_id: str,
    processor: str,
    uri: str,
    chunk_records: int,
    *,
    options: dict[str, Any] | None = None,
    tuning: dict[str, Any] | None = None,
) -> BatchSpec:
    fmt: Format = "parquet" if uri.endswith(".parquet") else "csv"
    config: dict[str, Any] = {
        "source": uri,
        "format": "auto",
        "compression": "auto",
        "processor": processor,
        "processor_options": options or {},
        "chunking": {"chunk_records": chunk_records, "max_chunks": 200},
    }
    if tuning:
        config["tuning"] = tuning
    return BatchSpec(
        batch_id=batch_id,
        source=SourceSpec(uri, fmt, None, ObjectInfo(uri, 10**6, etag=batch_id)),
        processor=processor,
        processor_options=dict(options or {}),
        chunking=ChunkingSettings(chunk_records=chunk_records),
        output_root="s3://bucket/output",
        delivery=DeliverySettings(target="none"),
        config=config,
    )


def _register(ledger: Ledger, spec: BatchSpec, records: list[int]) -> None:
    uri = spec.source.uri
    chunks = tuple(
        Chunk(i, len(records), "bytes", uri, start=i * 100, end=(i + 1) * 100, records=n)
        for i, n in enumerate(records)
    )
    ledger.register_batch(
        spec, Plan(chunks, spec.chunking.chunk_records, "test", sum(records), True)
    )


def _succeed(ledger: Ledger, spec: BatchSpec, index: int, records: int, seconds: float) -> None:
    ledger.mark_running(spec.batch_id, index)
    summary = ChunkSummary(
        index=index,
        key=f"chunk_{index:05d}",
        count=3,
        records_in=records,
        records_out=records,
        records_rejected=0,
        bytes_read=100,
        seconds=seconds,
        peak_rss_bytes=rss(records),
        valid_uri=None,
        rejected_uri=None,
    )
    ledger.mark_succeeded(spec.batch_id, summary, "fp")


@pytest.fixture
def sqlite_ledger(tmp_path: Path) -> Any:
    opened = Ledger(f"sqlite:///{tmp_path / 'tuning.db'}")
    yield opened
    opened.dispose()


def test_history_from_ledger_reads_the_chunks_of_the_same_workload(sqlite_ledger: Ledger) -> None:
    ledger = sqlite_ledger
    a = _spec("batch-a", "validate", "s3://b/in/a.csv", 1_000)
    other_processor = _spec("batch-b", "passthrough", "s3://b/in/b.csv", 1_000)
    other_format = _spec("batch-c", "validate", "s3://b/in/c.parquet", 1_000)
    unrun = _spec("batch-d", "validate", "s3://b/in/d.csv", 1_000)
    for spec in (a, other_processor, other_format, unrun):
        _register(ledger, spec, [1_000, 1_000, 500])
    _succeed(ledger, a, 0, 1_000, 0.5)
    ledger.mark_running(a.batch_id, 1)
    ledger.mark_failed(a.batch_id, 1, "connection", "reset")  # retried, then succeeded
    _succeed(ledger, a, 1, 1_000, 0.25)
    ledger.mark_running(a.batch_id, 2)
    ledger.mark_dead_lettered(a.batch_id, 2, "out_of_memory", "oom", "s3://b/dl/2.json")
    _succeed(ledger, other_processor, 0, 1_000, 1.0)
    _succeed(ledger, other_format, 0, 1_000, 1.0)

    history = history_from_ledger(ledger, WorkloadKey("validate", "csv"))
    assert [(o.batch_id, o.chunk) for o in history] == [
        ("batch-a", 0),
        ("batch-a", 1),
        ("batch-a", 2),
    ]
    assert [o.chunk_records for o in history] == [1_000, 1_000, 1_000]
    assert [o.records for o in history] == [1_000, 1_000, 500]  # the dead letter: as planned
    assert [o.seconds for o in history] == [0.5, 0.25, 0.0]
    assert [o.attempts for o in history] == [1, 2, 1]
    assert [o.failed for o in history] == [False, False, True]
    assert [o.error_category for o in history] == [None, None, "out_of_memory"]
    assert history[0].peak_rss_bytes == rss(1_000) and history[2].peak_rss_bytes == 0
    assert all(o.finished_at is not None for o in history)
    finished = [o.finished_at or 0.0 for o in history]
    assert finished == sorted(finished)

    assert history_from_ledger(ledger, WorkloadKey("validate", "csv"), limit=2) == history[1:]
    assert (
        history_from_ledger(ledger, WorkloadKey("validate", "csv"), exclude_batch_id="batch-a")
        == []
    )
    assert [o.batch_id for o in history_from_ledger(ledger, WorkloadKey("passthrough", "csv"))] == [
        "batch-b"
    ]
    assert [
        o.batch_id for o in history_from_ledger(ledger, WorkloadKey("validate", "parquet"))
    ] == ["batch-c"]
    assert history_from_ledger(ledger, WorkloadKey("validate", "csv", options="nope")) == []

    # What the optimizer makes of it: two measured chunks are a cold start, but the chunk that
    # ran out of memory at 1,000 records caps the next size.
    decision = choose_chunk_records(history, settings(min_chunk_records=100))
    assert decision.cold_start
    assert decision.chunk_records == 500
    assert decision.inputs["error_rate"] == pytest.approx(2 / 4)


def test_history_from_ledger_planned_and_tuned_sizes(sqlite_ledger: Ledger) -> None:
    ledger = sqlite_ledger
    # Asked for 1,000 per chunk, but the plan grew them to 1,500 (max_chunks or row groups).
    grown = _spec("grown", "validate", "s3://b/in/g.csv", 1_000)
    _register(ledger, grown, [1_500, 1_500])
    tuned = _spec(
        "tuned", "validate", "s3://b/in/t.csv", 400, tuning={"workload_chunk_records": 2_000}
    )
    _register(ledger, tuned, [400, 400])
    for spec, records in ((grown, 1_500), (tuned, 400)):
        for i in range(2):
            _succeed(ledger, spec, i, records, 0.1)
    # A forced re-run of a chunk that failed keeps the old counts in its row: not used.
    ledger.mark_running(grown.batch_id, 0)
    ledger.mark_failed(grown.batch_id, 0, "timeout", "slow")

    history = history_from_ledger(ledger, WorkloadKey("validate", "csv"))
    by_chunk = {(o.batch_id, o.chunk): o for o in history}
    assert {o.chunk_records for o in history if o.batch_id == "grown"} == {1_500}
    assert {o.tuned_records for o in history if o.batch_id == "grown"} == {None}
    assert {(o.chunk_records, o.tuned_records) for o in history if o.batch_id == "tuned"} == {
        (400, 2_000)
    }
    rerun = by_chunk[("grown", 0)]
    assert rerun.failed and rerun.seconds == 0.0 and rerun.attempts == 2
    assert history[-1] is rerun  # the most recent
