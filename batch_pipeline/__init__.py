"""batch_pipeline: big record files processed in parallel chunks, as a Dagster job.

Importing this package imports nothing from Dagster: the data plane lives in
``batch_pipeline.core`` and the Dagster shell in ``batch_pipeline.definitions`` and friends.
"""

__version__ = "0.1.0"
