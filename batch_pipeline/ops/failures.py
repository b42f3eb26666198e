"""How ops fail and retry.

Core errors become ``dagster.Failure`` with the core's message; permanent ones (bad input, bad
config) carry ``allow_retries=False``. Transient failures that the core decides to retry become
``RetryRequested`` with the core's backoff delay (exponential, capped, full jitter), so that the
retry settings of a run's config apply. ``RETRY_POLICY`` is the Dagster retry policy on
``process_chunk`` and ``deliver`` for what escapes that handling (an unreachable ledger, a
storage error while writing a dead letter): exponential backoff with full jitter.
"""

from collections.abc import Iterator
from contextlib import contextmanager

from dagster import Backoff, Failure, Jitter, RetryPolicy, RetryRequested

from batch_pipeline.core.errors import BatchPipelineError, RetryableChunkError

RETRY_POLICY = RetryPolicy(
    max_retries=3, delay=2.0, backoff=Backoff.EXPONENTIAL, jitter=Jitter.FULL
)


@contextmanager
def core_failures(max_retries: int | None = None) -> Iterator[None]:
    try:
        yield
    except RetryableChunkError as exc:
        raise RetryRequested(max_retries=max_retries or 1, seconds_to_wait=exc.delay) from exc
    except BatchPipelineError as exc:
        raise Failure(
            description=str(exc),
            metadata={"error": type(exc).__name__, "permanent": exc.permanent},
            allow_retries=not exc.permanent,
        ) from exc
