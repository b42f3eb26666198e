"""The ``leads`` processor's optional LLM standardizer: an OpenAI-compatible chat-completions
client that standardizes leads ``records_per_call`` at a time (seed 003 sent 10 per call to
DeepSeek), and says which records its caller must standardize by its own rules instead.

``LlmStandardizer(settings, api_key).standardize(records)`` returns one entry per record, in
order: the lead with exactly ``FIELDS`` as keys, or None (a *fallback*). The processor owns the
rules and the de-duplication; this module only talks to the model and refuses its mistakes.

Choices:

- Calls run in a pool of ``max_concurrent_calls`` threads, and every HTTP request holds one of
  the standardizer's ``max_concurrent_calls`` slots (a semaphore) while in flight, so the limit
  also holds for threads sharing a standardizer; each process (Dagster step) has its own. A
  call waiting out its backoff holds no slot. ``calls`` counts the batches sent, ``retries``
  the extra requests, ``max_concurrent_seen`` the most requests this standardizer had in flight
  at once as seen by the ``standardize`` that reports it.
- Retried, with exponential backoff and full jitter (``rng() * min(max_backoff, backoff *
  2**attempt)``): 408, 429, 5xx, time-outs and connection errors; a ``Retry-After`` (seconds or
  an HTTP date) on 429 or 503 sets the least delay, capped by ``max_backoff_seconds``. After
  ``max_retries`` the batch falls back. Other 4xx (400, 413, 422...) are about this request:
  the batch falls back at once. 401, 403 and 404 (a wrong key, rights, URL or model, the same
  for every call) raise a ``ConfigError`` naming ``base_url``, the model and the key's
  environment variable; no further request is sent.
- An answer that is not JSON of the expected shape is not retried: at temperature 0 the same
  request tends to get the same answer, and the rules are a good fallback. ``failed_calls``
  counts the batches that gave nothing (failed after retries, refused, unreadable answer);
  ``fallbacks`` the records returned as None, whatever the cause.
- Each lead is checked on its own: a dict with an ``index`` among the batch's (once only) and
  every field, each a string or null (extra keys ignored). A lead that fails, or a record the
  answer leaves out, falls back alone.
- Safety: the model never changes a lead's e-mail, which the keyed stage de-duplicates on. A lead
  whose e-mail (trimmed, lower-cased) differs from the input's falls back; one that passes gets
  the input's e-mail trimmed and lower-cased (None when blank), so the key stays deterministic
  whatever the model wrote. Other values are trimmed, blank ones become None.
- The caller gives the key (the step reads ``api_key_env`` through
  ``settings.processor_secrets`` and the ``leads`` processor passes it on: the core reads no
  environment); it is sent only as ``Authorization: Bearer``, and no message, log line or
  exception of this module holds it (the HTTP library's texts are
  scrubbed of it too).
"""

from __future__ import annotations

import email.utils
import json
import logging
import random
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field

from batch_pipeline.core.common.errors import ConfigError

if TYPE_CHECKING:  # requests is imported when a standardizer is made, not with the module
    import requests

log = logging.getLogger(__name__)

FIELDS = ("name", "email", "phone", "company", "title", "industry", "source")

Lead = dict[str, str | None]

SYSTEM_PROMPT = (
    "You standardize sales leads into a consistent format. The user sends JSON "
    '{"leads": [{"index": 0, "name": ..., "email": ..., "phone": ..., "company": ..., '
    '"title": ..., "industry": ..., "source": ...}, ...]}. Answer ONLY with a JSON object '
    '{"leads": [...]} holding one object per lead, with the same "index" and exactly the fields '
    "name, email, phone, company, title, industry, source, each a string or null. Rules: "
    "names and job titles in title case (first and last name, no extra spaces); email trimmed "
    "and lower-case, never otherwise changed, null if missing; phone in E.164 (for example "
    '+14155550123; assume +1 when a 10-digit number has no country code) or "N/A" if '
    "missing or not a phone number; company trimmed with its usual capitalization; industry "
    "and source as short title-case labels (for example Software, Web Form); null for any other "
    "missing value. Invent nothing and add no other text."
)

RETRIED_STATUSES = frozenset({408, 429, 500, 502, 503, 504})  # and any other 5xx
CONFIG_STATUSES = {
    401: "the API key was refused",
    403: "the API key may not use this model or endpoint",
    404: "no chat completions endpoint or no such model",
}


class LlmSettings(BaseModel):
    """Where and how to call the model. The key itself is never in config: ``api_key_env``
    names the environment variable that holds it."""

    model_config = ConfigDict(extra="forbid")

    base_url: str = Field(min_length=1)  # POST {base_url}/chat/completions
    model: str = Field(min_length=1)
    api_key_env: str = "BATCH_PIPELINE_LLM_API_KEY"
    records_per_call: int = Field(default=10, ge=1, le=100)
    max_concurrent_calls: int = Field(default=10, ge=1)
    timeout_seconds: float = Field(default=60.0, gt=0)
    max_retries: int = Field(default=4, ge=0)
    backoff_seconds: float = Field(default=1.0, ge=0)
    max_backoff_seconds: float = Field(default=30.0, ge=0)
    temperature: float = Field(default=0.0, ge=0, le=2)

    @property
    def url(self) -> str:
        return self.base_url.rstrip("/") + "/chat/completions"


@dataclass
class LlmStats:
    """What a ``standardize`` cost and how much of it the caller must redo by its rules."""

    calls: int = 0
    failed_calls: int = 0
    retries: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    fallbacks: int = 0
    max_concurrent_seen: int = 0

    def as_counts(self) -> dict[str, int]:
        """The counts, as the processor's metadata names them (``llm_calls``...)."""
        return {f"llm_{name}": getattr(self, name) for name in _COUNTS}


_COUNTS = ("calls", "failed_calls", "retries", "prompt_tokens", "completion_tokens", "fallbacks")


class _BadAnswer(Exception):
    """The answer as a whole is unusable (not JSON, not the expected shape)."""


class LlmStandardizer:
    """Standardizes leads with an OpenAI-compatible chat-completions endpoint. Thread-safe:
    threads sharing one standardizer share its ``max_concurrent_calls``."""

    def __init__(
        self,
        settings: LlmSettings,
        api_key: str | None,
        *,
        session: requests.Session | None = None,
        sleep: Callable[[float], None] = time.sleep,
        rng: Callable[[], float] = random.random,
    ) -> None:
        self.settings = settings
        self._key = api_key or None
        if session is None:
            import requests
            from requests.adapters import HTTPAdapter

            session = requests.Session()
            adapter = HTTPAdapter(pool_maxsize=settings.max_concurrent_calls)
            session.mount("http://", adapter)
            session.mount("https://", adapter)
        self._session = session
        self._sleep = sleep
        self._rng = rng
        self._slots = threading.BoundedSemaphore(settings.max_concurrent_calls)
        self._lock = threading.Lock()  # guards _in_flight and every LlmStats being filled
        self._in_flight = 0

    def standardize(self, records: Sequence[Lead]) -> tuple[list[Lead | None], LlmStats]:
        """records: the leads as text (keys are FIELDS; values may be None). Sends them
        ``records_per_call`` per call, at most ``max_concurrent_calls`` calls in flight at once,
        and returns one entry per input record, in order: the standardized lead (exactly FIELDS
        as keys, str or None values), or None where the caller must fall back to its rules.
        Raises ConfigError when the endpoint refuses the key or does not exist (401/403/404)."""
        stats = LlmStats()
        size = self.settings.records_per_call
        batches = [list(records[i : i + size]) for i in range(0, len(records), size)]
        if not batches:
            return [], stats
        abort = threading.Event()
        workers = min(self.settings.max_concurrent_calls, len(batches))
        pool = ThreadPoolExecutor(workers, thread_name_prefix="leads-llm")
        try:
            futures: list[Future[list[Lead | None]]] = [
                pool.submit(self._batch, batch, stats, abort) for batch in batches
            ]
            results = [lead for future in futures for lead in future.result()]
        except BaseException:
            abort.set()
            raise
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
        stats.fallbacks = sum(lead is None for lead in results)
        return results, stats

    def _batch(
        self, batch: list[Lead], stats: LlmStats, abort: threading.Event
    ) -> list[Lead | None]:
        """One batch's leads, or None for each one the model did not standardize."""
        if abort.is_set():
            return [None] * len(batch)
        with self._lock:
            stats.calls += 1
        content = self._post(self._request_body(batch), len(batch), stats, abort)
        if content is not None:
            try:
                return _checked(content, batch)
            except _BadAnswer as e:
                log.warning("LLM answer unusable (%s): %d lead(s) fall back", e, len(batch))
        with self._lock:
            stats.failed_calls += 1
        return [None] * len(batch)

    def _request_body(self, batch: list[Lead]) -> dict[str, Any]:
        leads = [
            {"index": i, **{f: record.get(f) for f in FIELDS}} for i, record in enumerate(batch)
        ]
        return {
            "model": self.settings.model,
            "temperature": self.settings.temperature,
            "response_format": {"type": "json_object"},
            "messages": [
                {"role": "system", "content": SYSTEM_PROMPT},
                {"role": "user", "content": json.dumps({"leads": leads}, ensure_ascii=False)},
            ],
        }

    def _post(
        self, body: dict[str, Any], n: int, stats: LlmStats, abort: threading.Event
    ) -> str | None:
        """The answer's message content, after retries; None when the call failed."""
        import requests
        from requests.exceptions import (
            ChunkedEncodingError,
            InvalidSchema,
            InvalidURL,
            MissingSchema,
        )

        settings = self.settings
        headers = {"Content-Type": "application/json"}
        if self._key:
            headers["Authorization"] = f"Bearer {self._key}"
        for attempt in range(settings.max_retries + 1):
            if abort.is_set():
                return None
            retry_after: float | None = None
            try:
                response = self._send(body, headers, stats)
            except (requests.Timeout, requests.ConnectionError, ChunkedEncodingError) as e:
                problem = f"{type(e).__name__}: {self._scrub(str(e))}"
            except (MissingSchema, InvalidSchema, InvalidURL) as e:
                abort.set()
                raise ConfigError(f"LLM base_url {settings.base_url!r} is not a URL") from e
            except requests.RequestException as e:  # too many redirects, a body not decoded...
                problem = f"{type(e).__name__}: {self._scrub(str(e))}"
                log.warning("LLM call failed (%s): %d lead(s) fall back", problem, n)
                return None
            else:
                status = response.status_code
                if status == 200:
                    return self._content(response, stats)
                if status in CONFIG_STATUSES:
                    abort.set()
                    raise ConfigError(
                        f"LLM endpoint {settings.base_url} answered HTTP {status} for model "
                        f"{settings.model!r}: {CONFIG_STATUSES[status]} (the key is read from "
                        f"${settings.api_key_env}; check it, base_url and model)"
                    )
                problem = f"HTTP {status}"
                if status not in RETRIED_STATUSES and status < 500:
                    log.warning("LLM call refused (%s): %d lead(s) fall back", problem, n)
                    return None
                if status in (429, 503):
                    retry_after = _retry_after(response.headers.get("Retry-After"))
            if attempt == settings.max_retries:
                log.warning("LLM call failed after %d attempt(s) (%s)", attempt + 1, problem)
                return None
            delay = self._rng() * min(
                settings.max_backoff_seconds, settings.backoff_seconds * 2**attempt
            )
            if retry_after is not None:
                delay = max(delay, min(retry_after, settings.max_backoff_seconds))
            with self._lock:
                stats.retries += 1
            log.info("LLM call: %s, retry %d in %.2f s", problem, attempt + 1, delay)
            self._sleep(delay)
        return None  # not reached: the last attempt returns above

    def _send(
        self, body: dict[str, Any], headers: dict[str, str], stats: LlmStats
    ) -> requests.Response:
        """One request, holding a slot while in flight."""
        with self._slots:
            with self._lock:
                self._in_flight += 1
                stats.max_concurrent_seen = max(stats.max_concurrent_seen, self._in_flight)
            try:
                return self._session.post(
                    self.settings.url,
                    json=body,
                    headers=headers,
                    timeout=self.settings.timeout_seconds,
                )
            finally:
                with self._lock:
                    self._in_flight -= 1

    def _content(self, response: requests.Response, stats: LlmStats) -> str | None:
        """The message content of a 200 answer (its tokens counted), or None if it has none."""
        try:
            answer = response.json()
        except ValueError:
            log.warning("LLM answer is not JSON: its lead(s) fall back")
            return None
        usage = answer.get("usage") if isinstance(answer, dict) else None
        if isinstance(usage, dict):
            with self._lock:
                stats.prompt_tokens += _int(usage.get("prompt_tokens"))
                stats.completion_tokens += _int(usage.get("completion_tokens"))
        try:
            content = answer["choices"][0]["message"]["content"]
        except (KeyError, IndexError, TypeError):
            content = None
        if not isinstance(content, str):
            log.warning("LLM answer holds no message content: its lead(s) fall back")
            return None
        return content

    def _scrub(self, text: str) -> str:
        return text.replace(self._key, "***") if self._key else text


# Checking an answer ---------------------------------------------------------------------------


def _checked(content: str, batch: list[Lead]) -> list[Lead | None]:
    """The batch's leads from the model's answer; None for each lead missing or wrong in it.
    Raises _BadAnswer when the answer as a whole is not JSON of the expected shape."""
    try:
        answer = json.loads(_unfenced(content))
    except ValueError as e:
        raise _BadAnswer(f"not JSON: {e}") from None
    if isinstance(answer, dict):
        answer = answer.get("leads")
    if not isinstance(answer, list):
        raise _BadAnswer('not {"leads": [...]} nor a list')
    found: dict[int, Any] = {}
    duplicated: set[int] = set()
    for item in answer:
        index = item.get("index") if isinstance(item, dict) else None
        if type(index) is not int or not 0 <= index < len(batch):
            continue  # no index of this batch: it can only be ignored
        if index in found:
            duplicated.add(index)
        found[index] = item
    return [
        None if i in duplicated or i not in found else _lead(found[i], record)
        for i, record in enumerate(batch)
    ]


def _lead(item: dict[str, Any], record: Lead) -> Lead | None:
    """The lead the model answered for ``record``, or None when it is not acceptable."""
    if not all(f in item and (item[f] is None or isinstance(item[f], str)) for f in FIELDS):
        return None
    if _email_key(item["email"]) != _email_key(record.get("email")):
        return None  # the model changed the e-mail: the de-duplication key is not its to change
    lead: Lead = {f: (item[f].strip() or None) if item[f] is not None else None for f in FIELDS}
    lead["email"] = _email_key(record.get("email")) or None
    return lead


def _email_key(value: str | None) -> str:
    return (value or "").strip().lower()


def _unfenced(content: str) -> str:
    """``content`` without the Markdown code fence some models wrap JSON in."""
    text = content.strip()
    if text.startswith("```") and text.endswith("```") and len(text) >= 6:
        text = text[3:-3]
        first_line, _, rest = text.partition("\n")
        return rest if first_line.strip().isalpha() or not first_line.strip() else text
    return text


def _retry_after(value: str | None) -> float | None:
    """A ``Retry-After`` header's delay in seconds (it holds seconds or an HTTP date)."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


def _int(value: Any) -> int:
    return value if type(value) is int and value >= 0 else 0
