"""How ops fail and retry.

Every error of an op becomes a ``dagster.Failure`` with a message that says what failed (the
core's own message names the source, chunk and line), and ``allow_retries`` from
``core.common.errors.classify``: transient failures (throttling, time-outs, 5xx, connection
resets) may be retried, permanent ones (bad input, bad config, a missing object) never are.
Transient chunk failures that the core decided to retry become ``RetryRequested`` with the core's
backoff delay (exponential, capped, full jitter), so that the retry settings of the run's config
apply.
``RETRY_POLICY``, on every op, retries the other transient failures (an unreachable ledger, a
storage error while planning or writing a dead letter) with exponential backoff and full jitter.
Every op runs its whole body inside ``core_failures``: an exception escaping it would be retried
by the policy whatever it is (a full disk three more times), and reported as Dagster's
``Exceeded max_retries of 3``. ``step_error_text`` shows what failed also then.
"""

import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from dagster import Backoff, Failure, Jitter, RetryPolicy, RetryRequested

from batch_pipeline.core.common.errors import BatchPipelineError, RetryableChunkError, classify
from batch_pipeline.core.common.text import shown

RETRY_POLICY = RetryPolicy(
    max_retries=3, delay=2.0, backoff=Backoff.EXPONENTIAL, jitter=Jitter.FULL
)


@contextmanager
def core_failures(what: str = "", max_retries: int | None = None) -> Iterator[None]:
    """Turn errors into Dagster failures. ``what`` prefixes the message of errors that are not
    the core's own (those already say where they happened)."""
    try:
        yield
    except (Failure, RetryRequested):
        raise
    except RetryableChunkError as exc:
        raise RetryRequested(max_retries=max_retries or 1, seconds_to_wait=exc.delay) from exc
    except Exception as exc:
        info = classify(exc)
        if isinstance(exc, BatchPipelineError):
            text = str(exc)
            exc.args = (shown(text),)  # its message shows again as the Failure's cause
        else:
            text = f"{what + ': ' if what else ''}{type(exc).__name__}: {exc}"
        raise Failure(
            description=shown(text),  # a file name's newline must not start a log line
            metadata={
                "error": type(exc).__name__,
                "category": info.category,
                "transient": info.transient,
            },
            allow_retries=info.transient,
        ) from exc


# Errors Dagster raises around the user code's own: their message says only where it happened.
_WRAPPERS = frozenset({"DagsterExecutionStepExecutionError", "DagsterUserCodeExecutionError"})
# A step whose retries ran out: the error that made it retry is its cause.
_RETRIES_EXCEEDED = re.compile(r"Exceeded max_retries of (\d+)")


def step_error_text(error: Any) -> str:
    """A step's error for people: a ``Failure``'s description; for an unexpected exception that
    Dagster wrapped, the exception itself (``OSError: ...``), never only the wrapper's
    ``Error occurred while executing op``; for a step out of retries, the error it last retried
    with "(after N retries)", never only ``Exceeded max_retries of N``."""
    wrapper = None
    note = ""
    for _ in range(10):
        if error is None:
            break
        message = error.message.strip()
        head, sep, rest = message.partition(": ")
        exceeded = _RETRIES_EXCEEDED.match(message)
        if exceeded and error.cause is not None:
            count = int(exceeded.group(1))
            note = f" (after {count} {'retry' if count == 1 else 'retries'})"
            wrapper = wrapper or message
            error = error.cause
            continue
        if error.cls_name in _WRAPPERS:
            wrapper = wrapper or (rest if sep else message)
            error = error.cause
            continue
        if sep and head.rsplit(".", 1)[-1] == error.cls_name:  # "module.Class: text"
            message = rest if error.cls_name == "Failure" else f"{error.cls_name}: {rest}"
        return message + note
    return wrapper or "failed"
