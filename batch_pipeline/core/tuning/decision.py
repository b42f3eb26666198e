"""The tuner's answer: ``Decision`` (the next chunk size, every reason with the figures behind
it, and ``to_metadata()`` for the run's metadata), and how the reasons write their figures
(records per second, shares, seconds, MiB)."""

from __future__ import annotations

from dataclasses import dataclass

METADATA_PREFIX = "tuning_"

Figure = int | float | str | None


@dataclass
class Decision:
    """The next chunk size, why, and the figures it came from."""

    chunk_records: int
    reasons: list[str]
    inputs: dict[str, Figure]
    cold_start: bool
    workload_chunk_records: int

    @property
    def reason(self) -> str:
        return "; ".join(self.reasons)

    def to_metadata(self) -> dict[str, str | int | float]:
        """Flat ``tuning_``-prefixed figures for Dagster metadata (figures that are unknown in
        this decision are left out)."""
        meta: dict[str, str | int | float] = {
            "tuning_chunk_records": self.chunk_records,
            "tuning_workload_chunk_records": self.workload_chunk_records,
            "tuning_cold_start": int(self.cold_start),
            "tuning_reasons": "\n".join(self.reasons),
        }
        for key, value in self.inputs.items():
            if value is not None:
                meta[METADATA_PREFIX + key] = value
        return meta


def _rate(rate: float) -> str:
    if rate >= 1e6:
        return f"{rate / 1e6:.2g}M"
    if rate >= 1e3:
        return f"{rate / 1e3:.3g}k"
    return f"{rate:.3g}"


def _pct(share: float) -> str:
    """21%, 4.8%, 5%."""
    return f"{share:.0%}" if share >= 0.1 else f"{share:.1%}".replace(".0%", "%")


def _secs(seconds: float) -> str:
    return f"{seconds:.2f} s" if seconds < 10 else f"{seconds:.0f} s"


def _mib(n: float) -> str:
    return f"{n / (1 << 20):,.0f} MiB"
