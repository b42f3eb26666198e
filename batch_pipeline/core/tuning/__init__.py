"""Adaptive chunk size (``chunking.auto``): the next batch's ``chunk_records`` from the chunks of
earlier batches of the same workload. ``rules`` holds the rules (its docstring has every rule
and default); ``settings`` what they aim for; ``history`` the observations read from the
ledger; ``throughput``, ``memory`` and ``limits`` the rules' parts; ``decision`` the answer and
its reasons; ``tune`` the call ``initialize`` makes."""

from batch_pipeline.core.tuning.decision import Decision
from batch_pipeline.core.tuning.history import (
    ChunkObservation,
    WorkloadKey,
    history_from_ledger,
    options_digest,
    workload_key,
    workload_key_from_config,
)
from batch_pipeline.core.tuning.memory import fit_memory
from batch_pipeline.core.tuning.rules import choose_chunk_records
from batch_pipeline.core.tuning.settings import (
    STEP_OVERHEAD_SECONDS,
    TuningSettings,
    default_concurrency,
)
from batch_pipeline.core.tuning.tune import estimate_total_records, tune_batch

__all__ = [
    "STEP_OVERHEAD_SECONDS",
    "ChunkObservation",
    "Decision",
    "TuningSettings",
    "WorkloadKey",
    "choose_chunk_records",
    "default_concurrency",
    "estimate_total_records",
    "fit_memory",
    "history_from_ledger",
    "options_digest",
    "tune_batch",
    "workload_key",
    "workload_key_from_config",
]
