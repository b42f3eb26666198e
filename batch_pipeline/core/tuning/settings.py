"""What the chunk-size tuner aims for: ``TuningSettings`` (targets, bounds and thresholds of the
rules in ``tuning.rules``) with the executor's per-step cost (``STEP_OVERHEAD_SECONDS``) and the
default number of concurrent steps (``default_concurrency``)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from batch_pipeline.core.common.errors import ConfigError
from batch_pipeline.core.common.models import ChunkingSettings

# Per mapped step, measured on this project's 2-core machine (README, Executor).
STEP_OVERHEAD_SECONDS: dict[str, float] = {"in_process": 0.11, "forkserver": 0.35, "spawn": 1.9}
GIB = 1 << 30
DEFAULT_CHUNK_RECORDS = ChunkingSettings().chunk_records


def default_concurrency() -> int:
    """How many steps may run at once by default: ``os.cpu_count()`` (1 when unknown). It counts
    the machine's CPUs, not a container's CPU quota; set ``max_concurrent`` where they differ."""
    return os.cpu_count() or 1


@dataclass(frozen=True)
class TuningSettings:
    """What ``choose_chunk_records`` aims for; see ``tuning.rules``' docstring for the rules."""

    step_overhead_seconds: float = STEP_OVERHEAD_SECONDS["in_process"]
    max_overhead_share: float = 0.05
    max_step_seconds: float = 60.0
    memory_budget_bytes: int = GIB
    memory_safety: float = 0.8
    memory_limit_bytes: int | None = None
    baseline_rss_bytes: int | None = None
    workers: int = field(default_factory=default_concurrency)
    chunks_per_worker: int = 2
    min_chunk_records: int = 10_000
    max_chunk_records: int = 20_000_000
    default_chunk_records: int = DEFAULT_CHUNK_RECORDS
    min_samples: int = 3
    min_samples_per_size: int = 3
    plateau_tolerance: float = 0.15
    max_step_factor: float = 2.0
    deadband: float = 0.1
    error_window: int = 50
    error_rate_hold: float = 0.02
    error_rate_shrink: float = 0.1
    significant_digits: int = 2

    def __post_init__(self) -> None:
        problems = []
        if self.step_overhead_seconds < 0:
            problems.append("step_overhead_seconds must be >= 0")
        if not 0 < self.max_overhead_share < 1:
            problems.append("max_overhead_share must be between 0 and 1")
        if self.max_step_seconds <= 0:
            problems.append("max_step_seconds must be > 0")
        if self.memory_budget_bytes <= 0 or not 0 < self.memory_safety <= 1:
            problems.append("memory_budget_bytes must be > 0 and memory_safety in (0, 1]")
        if self.workers < 1 or self.chunks_per_worker < 1:
            problems.append("workers and chunks_per_worker must be >= 1")
        if not 1 <= self.min_chunk_records <= self.max_chunk_records:
            problems.append("need 1 <= min_chunk_records <= max_chunk_records")
        if self.default_chunk_records < 1 or self.min_samples < 1 or self.error_window < 1:
            problems.append("default_chunk_records, min_samples and error_window must be >= 1")
        if self.max_step_factor <= 1 or self.plateau_tolerance < 0 or self.deadband < 0:
            problems.append("max_step_factor must be > 1, plateau_tolerance and deadband >= 0")
        if not 0 <= self.error_rate_hold <= self.error_rate_shrink <= 1:
            problems.append("need 0 <= error_rate_hold <= error_rate_shrink <= 1")
        if self.significant_digits < 1:
            problems.append("significant_digits must be >= 1")
        if problems:
            raise ConfigError("tuning settings: " + "; ".join(problems))

    @property
    def min_step_seconds(self) -> float:
        """The shortest step whose overhead is at most ``max_overhead_share`` of it."""
        share = self.max_overhead_share
        return self.step_overhead_seconds * (1 - share) / share
