"""Initialize: a batch request checked before any work, and the BatchSpec every stage uses."""

from batch_pipeline.core.initialize.prepare import (
    check_queue,
    prepare_batch,
    prepare_kwargs,
    prepare_redrive,
)

__all__ = ["check_queue", "prepare_batch", "prepare_kwargs", "prepare_redrive"]
