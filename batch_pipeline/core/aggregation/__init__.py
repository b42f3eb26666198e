"""Aggregation: a batch's result from its ledger rows (conservation checked, failures
tolerated or not) and its manifest (``results``), with the batch's files brought to one
schema (``unify``)."""

from batch_pipeline.core.aggregation.results import (
    BatchResult,
    aggregate,
    build_manifest,
    tolerance_failure,
)
from batch_pipeline.core.aggregation.unify import unify_files

__all__ = ["BatchResult", "aggregate", "build_manifest", "tolerance_failure", "unify_files"]
