"""``batch-pipeline``: run ``batch_job`` from a shell, redrive and complete batches, list dead
letters, make sample data.

``run`` and ``redrive`` execute the jobs on the current Dagster instance (``DAGSTER_HOME``, or a
temporary one when unset) with a progress bar on stderr, then print a summary; with ``--json``
the last line of stdout is one JSON object. ``complete``, ``dead-letters`` and ``status`` work on
the ledger directly.
"""

from batch_pipeline.cli.command import main

__all__ = ["main"]
