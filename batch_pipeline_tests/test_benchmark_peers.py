"""The throughput benchmark's comparison with its peers (``benchmarks.throughput.measure.
derive``): a peer stopped at the memory limit has no rate, only a bound, and is not taken as
the faster peer while another peer finished."""

from __future__ import annotations

from benchmarks.harness import Measurement
from benchmarks.throughput.measure import derive

RECORDS = 60_000_000


def finished(kind: str, seconds: float, peak_mib: int) -> Measurement:
    data = {
        "wall_seconds": seconds,
        "chunk_seconds_sum": seconds * 0.9,
        "chunk_peak_rss_max_bytes": peak_mib << 20,
        "chunks": 120,
    }
    rate = RECORDS / seconds
    return Measurement(kind, "60m", RECORDS, seconds=seconds, rate=rate,
                       peak_rss_bytes=peak_mib << 20, data=data)  # fmt: skip


def stopped(kind: str, seconds: float, peak_mib: int) -> Measurement:
    return Measurement(
        kind, "60m", RECORDS, status="stopped (memory)",
        data={"stopped_seconds": seconds, "stopped_rss_bytes": peak_mib << 20},
    )  # fmt: skip


def test_the_faster_peer_is_one_that_finished() -> None:
    ms = {
        "duckdb": finished("duckdb", 109.5, 11_777),
        "polars": stopped("polars", 36.3, 16_409),  # its bound: 1.65M records/s
        "cli_validate": finished("cli_validate", 70.9, 585),
    }

    v = derive(ms)["vs_peers"]

    assert v["fastest_peer"] == "duckdb"
    assert v["rate_ratio"] == (RECORDS / 70.9) / (RECORDS / 109.5)
    assert v["memory_ratio"] == 585 / 11_777  # the smaller peak of the two
    assert v["stopped"] == {"polars": "stopped (memory) at 36.3 s"}


def test_with_no_peer_finished_the_bound_is_compared() -> None:
    ms = {
        "duckdb": stopped("duckdb", 50.0, 16_500),
        "polars": stopped("polars", 36.3, 16_409),
        "cli_validate": finished("cli_validate", 70.9, 585),
    }

    v = derive(ms)["vs_peers"]

    assert v["fastest_peer"] == "polars"
    assert v["rate_ratio"] == (RECORDS / 70.9) / (RECORDS / 36.3)
