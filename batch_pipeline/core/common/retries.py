"""Backoff for retries: exponential, capped, with full jitter."""

from __future__ import annotations

import random

from batch_pipeline.core.common.models import RetrySettings


def backoff_delay(
    retry_number: int, settings: RetrySettings, rng: random.Random | None = None
) -> float:
    """Seconds to wait before retry ``retry_number`` (0 for the first retry): uniform between 0
    and ``min(max_delay, base_delay * 2**retry_number)`` ("full jitter"), so that many chunks
    failing at once do not retry in step."""
    # 2**n no longer fits a float beyond n=1023 (OverflowError); the cap is reached long before,
    # so the exponent can stop there (base * 2.0**1023, at worst inf, is capped like the rest).
    exponent = min(max(retry_number, 0), 1023)
    ceiling = min(settings.max_delay_seconds, settings.base_delay_seconds * 2.0**exponent)
    return (rng or random).uniform(0, max(ceiling, 0.0))
