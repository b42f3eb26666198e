from dagster import MetadataValue, OpExecutionContext, op

from batch_pipeline.config import BatchConfig
from batch_pipeline.core.batch import prepare_batch
from batch_pipeline.core.models import BatchSpec
from batch_pipeline.ops.failures import core_failures
from batch_pipeline.resources import StorageResource


@op(description="Validate the run config and the source before any work; resolve the batch id.")
def initialize(
    context: OpExecutionContext, config: BatchConfig, storage: StorageResource
) -> BatchSpec:
    with core_failures():
        spec = prepare_batch(storage.get_storage(), **config.prepare_kwargs())
    source = spec.source
    context.log.info(
        f"batch {spec.batch_id}: {source.format} source {source.uri} "
        f"({source.info.size:,} bytes, fingerprint {source.info.fingerprint})"
    )
    context.add_output_metadata(
        {
            "batch_id": spec.batch_id,
            "source": source.uri,
            "format": source.format,
            "compression": source.compression or "none",
            "size_bytes": source.info.size,
            "fingerprint": source.info.fingerprint,
            "columns": MetadataValue.json(list(source.columns or [])),
            "layout": MetadataValue.json(source.layout),
            "output": spec.output,
        }
    )
    return spec
