from collections.abc import Mapping
from dataclasses import replace
from typing import Any

import psutil
from dagster import MetadataValue, OpExecutionContext, op

from batch_pipeline.config import BatchConfig, RedriveConfig
from batch_pipeline.core.common.models import BatchSpec
from batch_pipeline.core.common.text import shown
from batch_pipeline.core.initialize.prepare import prepare_batch, prepare_redrive
from batch_pipeline.core.tuning import (
    STEP_OVERHEAD_SECONDS,
    TuningSettings,
    default_concurrency,
    tune_batch,
)
from batch_pipeline.ops.failures import RETRY_POLICY, core_failures
from batch_pipeline.resources import LedgerResource, StorageResource


@op(
    retry_policy=RETRY_POLICY,
    description="Validate the run config and the source before any work; resolve the batch id.",
)
def initialize(
    context: OpExecutionContext,
    config: BatchConfig,
    storage: StorageResource,
    ledger: LedgerResource,
) -> BatchSpec:
    with core_failures(f"initializing {config.source} failed"):
        spec = prepare_batch(storage.get_storage(), **config.prepare_kwargs())
        decision = None
        if config.chunking.auto:
            size = config.chunking.chunk_records  # the cold start, and a floor it lowers
            settings = replace(
                tuning_settings(context),
                default_chunk_records=size,
                min_chunk_records=min(size, TuningSettings.min_chunk_records),
                # A step's peak RSS includes its process (Dagster, pyarrow, ~300 MB): this
                # process's RSS now is that baseline, so that records are not blamed for it.
                baseline_rss_bytes=psutil.Process().memory_info().rss,
            )
            spec, decision = tune_batch(ledger.get_ledger(), spec, settings)
        if decision is not None:
            context.log.info(
                shown(
                    f"batch {spec.batch_id}: chunk_records {decision.chunk_records:,} "
                    f"({'cold start' if decision.cold_start else 'from history'}): "
                    f"{decision.reason}"
                )
            )
            context.add_output_metadata(decision.to_metadata())
        elif config.chunking.auto:
            context.log.info(
                shown(
                    f"batch {spec.batch_id}: ran before, keeps chunk_records "
                    f"{spec.chunking.chunk_records:,}"
                )
            )
        _report(context, spec)
        return spec


def tuning_settings(context: OpExecutionContext) -> TuningSettings:
    """What the optimizer aims for under this run's executor: its per-step cost, and how many
    steps run at once (one in process; ``max_concurrent``, default the CPU count, otherwise)."""
    run_config: Mapping[str, Any] = context.run_config
    execution = (run_config.get("execution") or {}).get("config") or {}
    multiprocess = execution.get("multiprocess")
    if multiprocess is None:
        return TuningSettings(step_overhead_seconds=STEP_OVERHEAD_SECONDS["in_process"], workers=1)
    start = next(iter(multiprocess.get("start_method") or {"forkserver": {}}), "forkserver")
    return TuningSettings(
        step_overhead_seconds=STEP_OVERHEAD_SECONDS.get(start, STEP_OVERHEAD_SECONDS["spawn"]),
        workers=int(multiprocess.get("max_concurrent") or default_concurrency()),
    )


@op(
    retry_policy=RETRY_POLICY,
    description="Load a batch from the ledger for a redrive: its stored config, checked against "
    "the source as it is now.",
)
def load_batch(
    context: OpExecutionContext,
    config: RedriveConfig,
    storage: StorageResource,
    ledger: LedgerResource,
) -> BatchSpec:
    with core_failures(f"loading batch {config.batch_id} failed"):
        store = storage.get_storage()

        def prepare(stored: dict) -> BatchSpec:
            return prepare_batch(store, **BatchConfig(**stored).prepare_kwargs())

        spec = prepare_redrive(store, ledger.get_ledger(), config.batch_id, prepare)
        _report(context, spec)
        return spec


def _report(context: OpExecutionContext, spec: BatchSpec) -> None:
    for warning in spec.warnings:
        context.log.warning(shown(warning))
    source = spec.source
    context.log.info(
        shown(
            f"batch {spec.batch_id} ({spec.mode}): {source.format} source {source.uri} "
            f"({source.info.size:,} bytes, fingerprint {source.info.fingerprint})"
        )
    )
    context.add_output_metadata(
        {
            "batch_id": spec.batch_id,
            "mode": spec.mode,
            "source": source.uri,
            "format": source.format,
            "compression": source.compression or "none",
            "size_bytes": source.info.size,
            "fingerprint": source.info.fingerprint,
            "columns": MetadataValue.json(list(source.columns or [])),
            "layout": MetadataValue.json(source.layout),
            "output": spec.output,
            "warnings": MetadataValue.json(list(spec.warnings)),
        }
    )
