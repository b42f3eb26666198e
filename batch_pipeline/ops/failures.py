"""Core errors become Dagster failures with the core's message; permanent ones (bad input,
bad config) say so, so that a retry policy does not retry them."""

from collections.abc import Iterator
from contextlib import contextmanager

from dagster import Failure

from batch_pipeline.core.errors import BatchPipelineError


@contextmanager
def core_failures() -> Iterator[None]:
    try:
        yield
    except BatchPipelineError as exc:
        raise Failure(
            description=str(exc),
            metadata={"error": type(exc).__name__, "permanent": exc.permanent},
            allow_retries=not exc.permanent,
        ) from exc
