"""The whole pipeline without Dagster: every stage of ``batch_job`` in order, in one process.

``local_run.run_batch`` plans, processes every chunk, aggregates and delivers a batch that
``initialize.prepare_batch`` prepared, as the Dagster job does over its ops.
"""

from batch_pipeline.core.pipeline.local_run import LocalRun, run_batch

__all__ = ["LocalRun", "run_batch"]
