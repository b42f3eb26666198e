"""The ``leads`` processor's LLM standardizer against a fake OpenAI-compatible server on
127.0.0.1 (``fake_llm``): answers in input order, the concurrency limit, every failure mode
(retried, or its records left to the rules, with exact counts), tokens, and the API key (sent,
never shown). Backoffs are recorded, not slept, except where a real time-out is the point."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from pydantic import ValidationError

from batch_pipeline.core.common.errors import ConfigError
from batch_pipeline.core.processing.processors.leads.llm import (
    FIELDS,
    LlmSettings,
    LlmStandardizer,
    LlmStats,
)
from batch_pipeline_tests.fake_llm import Behaviour, FakeLlm, standardized

KEY = "sk-test-0123456789abcdef"
DEAD_URL = "http://127.0.0.1:9/v1"  # the discard port: nothing listens


@pytest.fixture(autouse=True)
def no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    """requests honours proxy variables: none of them may send 127.0.0.1 elsewhere."""
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")


@pytest.fixture
def fake() -> Iterator[FakeLlm]:
    with FakeLlm() as server:
        yield server


def settings(url: str, **overrides: Any) -> LlmSettings:
    values: dict[str, Any] = {
        "base_url": url,
        "model": "fake-model",
        "timeout_seconds": 0.3,
        "backoff_seconds": 0.01,
        "max_backoff_seconds": 0.05,
        "max_retries": 2,
        "records_per_call": 5,
        "max_concurrent_calls": 1,
    }
    return LlmSettings(**(values | overrides))


def leads(n: int) -> list[dict[str, str | None]]:
    return [
        {
            "name": f"  ada   lovelace{i} ",
            "email": f" Ada.{i}@Example.COM ",
            "phone": f"(415) 555-{i:04d}" if i % 3 else None,
            "company": " Analytical  Engines ",
            "title": "vp of sales",
            "industry": "software",
            "source": "web form" if i % 2 else None,
        }
        for i in range(n)
    ]


def expected(record: dict[str, str | None]) -> dict[str, str | None]:
    """What the standardizer returns for ``record`` when the fake answered it well."""
    lead = standardized({"index": 0, **record})
    del lead["index"]
    return lead


class Run:
    """A standardizer on ``url`` whose backoffs are recorded in ``sleeps`` (rng: 0.5)."""

    def __init__(self, url: str, key: str | None = KEY, **overrides: Any) -> None:
        self.sleeps: list[float] = []
        self.llm = LlmStandardizer(
            settings(url, **overrides), key, sleep=self.sleeps.append, rng=lambda: 0.5
        )

    def __call__(self, records: list[dict[str, str | None]]) -> tuple[list[Any], LlmStats]:
        results, stats = self.llm.standardize(records)
        assert len(results) == len(records)
        assert stats.fallbacks == sum(r is None for r in results)
        assert all(r is None or tuple(r) == FIELDS for r in results)
        return results, stats


def test_standardizes_every_lead_in_input_order(fake: FakeLlm) -> None:
    records = leads(23)
    results, stats = Run(fake.url, max_concurrent_calls=4)(records)
    assert results == [expected(r) for r in records]
    assert results[1] == {
        "name": "Ada Lovelace1",
        "email": "ada.1@example.com",
        "phone": "+14155550001",
        "company": "Analytical Engines",
        "title": "Vp Of Sales",
        "industry": "Software",
        "source": "Web Form",
    }
    assert (stats.calls, stats.failed_calls, stats.retries, stats.fallbacks) == (5, 0, 0, 0)
    assert fake.requests == 5
    # Tokens: 11 per lead + 7 and 13 per lead, summed over the calls.
    assert stats.prompt_tokens == 11 * 23 + 7 * 5 == fake.tokens["prompt_tokens"]
    assert stats.completion_tokens == 13 * 23 == fake.tokens["completion_tokens"]
    assert stats.as_counts() == {
        "llm_calls": 5,
        "llm_failed_calls": 0,
        "llm_retries": 0,
        "llm_prompt_tokens": 11 * 23 + 7 * 5,
        "llm_completion_tokens": 13 * 23,
        "llm_fallbacks": 0,
    }


def test_the_request_is_a_json_chat_completion_with_indexed_records(fake: FakeLlm) -> None:
    records = leads(7)
    records[0]["email"] = None
    Run(fake.url, records_per_call=4, temperature=0.2)(records)
    for body in fake.bodies:
        assert body["model"] == "fake-model"
        assert body["temperature"] == 0.2
        assert body["response_format"] == {"type": "json_object"}
        system, user = body["messages"]
        assert system["role"] == "system" and user["role"] == "user"
        assert all(f in system["content"] for f in FIELDS)
        assert "E.164" in system["content"] and "ONLY" in system["content"]
    # One call at a time (max_concurrent_calls=1): the calls in input order.
    assert [json.loads(b["messages"][1]["content"]) for b in fake.bodies] == [
        {"leads": [{"index": i, **records[i]} for i in range(4)]},
        {"leads": [{"index": i, **records[4 + i]} for i in range(3)]},
    ]


def test_the_key_is_sent_as_a_bearer_token_and_only_when_given(fake: FakeLlm) -> None:
    Run(fake.url)(leads(3))
    Run(fake.url, key=None)(leads(3))
    assert fake.authorizations == [f"Bearer {KEY}", None]


def test_no_records_no_call(fake: FakeLlm) -> None:
    assert Run(fake.url)([]) == ([], LlmStats())
    assert fake.requests == 0


def test_at_most_max_concurrent_calls_are_in_flight() -> None:
    records = leads(200)
    with FakeLlm(delay=0.05) as fake:
        results, stats = Run(fake.url, max_concurrent_calls=3)(records)
    assert results == [expected(r) for r in records]
    assert stats.calls == fake.requests == 40
    assert 2 <= fake.max_concurrent <= 3
    assert 2 <= stats.max_concurrent_seen <= 3


def test_threads_sharing_a_standardizer_share_its_limit() -> None:
    with FakeLlm(delay=0.03) as fake:
        run = Run(fake.url, max_concurrent_calls=2)
        outcomes: list[int] = []
        threads = [
            threading.Thread(target=lambda: outcomes.append(run(leads(40))[1].fallbacks))
            for _ in range(3)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert outcomes == [0, 0, 0]
    assert fake.requests == 24
    assert fake.max_concurrent == 2


def test_429_is_retried_after_a_jittered_backoff(fake: FakeLlm) -> None:
    fake.script("429")
    run = Run(fake.url)
    results, stats = run(leads(5))
    assert results == [expected(r) for r in leads(5)]
    assert (stats.calls, stats.retries, stats.failed_calls, stats.fallbacks) == (1, 1, 0, 0)
    assert fake.requests == 2
    assert run.sleeps == [0.5 * 0.01]  # rng() * min(max_backoff, backoff * 2**0)


@pytest.mark.parametrize(("retry_after", "delay"), [("0.03", 0.03), ("600", 0.05), ("x", 0.005)])
def test_retry_after_is_honoured_on_429_within_the_cap(
    fake: FakeLlm, retry_after: str, delay: float
) -> None:
    fake.script(Behaviour("429", retry_after=retry_after))
    run = Run(fake.url)
    assert run(leads(2))[1].retries == 1
    assert run.sleeps == [delay]


def test_retry_after_as_an_http_date(fake: FakeLlm) -> None:
    fake.script(Behaviour("503", retry_after="Wed, 21 Oct 2015 07:28:00 GMT"))  # long past
    run = Run(fake.url)
    assert run(leads(2))[1].retries == 1
    assert run.sleeps == [0.005]


def test_a_call_failing_past_max_retries_falls_back(fake: FakeLlm) -> None:
    fake.script("500", "503", "502")  # max_retries=2: three attempts, all failed
    run = Run(fake.url, max_backoff_seconds=0.015)
    results, stats = run(leads(8))
    assert results[:5] == [None] * 5
    assert results[5:] == [expected(r) for r in leads(8)[5:]]
    assert (stats.calls, stats.retries, stats.failed_calls, stats.fallbacks) == (2, 2, 1, 5)
    assert fake.requests == 4
    assert run.sleeps == [0.5 * 0.01, 0.5 * 0.015]  # 0.01 * 2**1 capped at 0.015


def test_other_client_errors_are_not_retried(fake: FakeLlm) -> None:
    fake.script("400", "422")
    results, stats = Run(fake.url)(leads(12))
    assert results[:10] == [None] * 10 and None not in results[10:]
    assert (stats.calls, stats.retries, stats.failed_calls, stats.fallbacks) == (3, 0, 2, 10)
    assert fake.requests == 3


@pytest.mark.parametrize("kind", ["malformed", "not_json"])
def test_an_unreadable_answer_falls_back_without_a_retry(fake: FakeLlm, kind: str) -> None:
    fake.script(kind)
    results, stats = Run(fake.url)(leads(10))
    assert results[:5] == [None] * 5
    assert results[5:] == [expected(r) for r in leads(10)[5:]]
    assert (stats.calls, stats.retries, stats.failed_calls, stats.fallbacks) == (2, 0, 1, 5)
    assert fake.requests == 2


@pytest.mark.parametrize(
    "kind",
    ["missing_field", "wrong_index", "duplicate_index", "changed_email", "bad_value", "dropped"],
)
def test_a_wrong_lead_falls_back_alone(fake: FakeLlm, kind: str) -> None:
    fake.script(Behaviour(kind, index=2))
    records = leads(5)
    results, stats = Run(fake.url)(records)
    assert results == [None if i == 2 else expected(r) for i, r in enumerate(records)]
    assert (stats.calls, stats.retries, stats.failed_calls, stats.fallbacks) == (1, 0, 0, 1)


@pytest.mark.parametrize("kind", ["bare_list", "fenced"])
def test_a_bare_list_or_a_fenced_answer_is_accepted(fake: FakeLlm, kind: str) -> None:
    fake.script(kind)
    results, stats = Run(fake.url)(leads(5))
    assert results == [expected(r) for r in leads(5)]
    assert stats.fallbacks == 0


def test_an_answer_without_usage_counts_no_tokens(fake: FakeLlm) -> None:
    fake.default = "no_usage"
    results, stats = Run(fake.url)(leads(5))
    assert None not in results
    assert (stats.prompt_tokens, stats.completion_tokens) == (0, 0)


def test_the_email_is_the_inputs_trimmed_and_lower_cased_never_the_models(fake: FakeLlm) -> None:
    records = leads(3)
    records[0]["email"] = None
    records[1]["email"] = "   "
    results, _ = Run(fake.url)(records)
    assert [r["email"] for r in results] == [None, None, "ada.2@example.com"]
    # An e-mail the model made up for a lead without one is refused too.
    fake.script(Behaviour("changed_email", index=0))
    results, stats = Run(fake.url)(records)
    assert results[0] is None and stats.fallbacks == 1


def test_a_time_out_is_retried(fake: FakeLlm) -> None:
    fake.script(Behaviour("hang", seconds=1.0))
    results, stats = Run(fake.url)(leads(5))
    assert results == [expected(r) for r in leads(5)]
    assert (stats.calls, stats.retries, stats.failed_calls, stats.fallbacks) == (1, 1, 0, 0)
    assert fake.requests == 2


def test_a_dropped_connection_is_retried(fake: FakeLlm) -> None:
    fake.script("drop", "drop")
    results, stats = Run(fake.url)(leads(5))
    assert None not in results
    assert (stats.retries, stats.failed_calls) == (2, 0)


def test_an_unreachable_server_falls_back_after_the_retries() -> None:
    run = Run(DEAD_URL, max_retries=1)
    results, stats = run(leads(7))
    assert results == [None] * 7
    assert (stats.calls, stats.retries, stats.failed_calls, stats.fallbacks) == (2, 2, 2, 7)


@pytest.mark.parametrize("status", ["401", "403"])
def test_a_refused_key_is_a_config_error_and_stops_the_calls(fake: FakeLlm, status: str) -> None:
    fake.default = status
    with pytest.raises(ConfigError) as raised:
        Run(fake.url, max_concurrent_calls=3)(leads(100))
    message = str(raised.value)
    assert f"HTTP {status}" in message and fake.url in message
    assert "BATCH_PIPELINE_LLM_API_KEY" in message
    assert KEY not in message and "\n" not in message
    assert fake.requests <= 3  # the calls in flight then; none after


def test_a_wrong_url_is_a_config_error(fake: FakeLlm) -> None:
    with pytest.raises(ConfigError, match="HTTP 404"):
        Run(fake.url.removesuffix("/v1"))(leads(3))
    with pytest.raises(ConfigError, match="not a URL"):
        Run("127.0.0.1:8080/v1")(leads(3))


def test_the_key_is_never_logged(fake: FakeLlm, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    fake.script("429", "500", "malformed", "drop", "400", Behaviour("hang", seconds=1.0))
    _, stats = Run(fake.url, max_retries=1)(leads(30))
    Run(DEAD_URL, max_retries=0)(leads(3))
    assert stats.retries > 0 and stats.fallbacks > 0 and caplog.text
    assert KEY not in caplog.text


def test_the_key_comes_from_the_named_environment_variable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The step reads it (``settings.processor_secrets``): set and not blank, else absent."""
    from batch_pipeline.core.processing.processors import get_processor
    from batch_pipeline.settings import processor_secrets

    llm = {"base_url": DEAD_URL, "model": "m", "api_key_env": "MY_LLM_KEY"}
    names = get_processor("leads", {"standardizer": "llm", "llm": llm}).secret_names()
    assert names == ("MY_LLM_KEY",)
    assert processor_secrets(names, {}) == {}
    assert processor_secrets(names, {"MY_LLM_KEY": "  "}) == {}
    monkeypatch.setenv("MY_LLM_KEY", KEY)
    assert processor_secrets(names) == {"MY_LLM_KEY": KEY}


@pytest.mark.parametrize(
    "bad",
    [
        {"records_per_call": 0},
        {"records_per_call": 101},
        {"max_concurrent_calls": 0},
        {"timeout_seconds": 0},
        {"max_retries": -1},
        {"api_key": KEY},  # the key itself never belongs in config
    ],
)
def test_settings_refuse_bad_values(bad: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        settings(DEAD_URL, **bad)


def test_settings_defaults() -> None:
    defaults = LlmSettings(base_url="http://127.0.0.1:8080/v1", model="m")
    assert defaults.model_dump() == {
        "base_url": "http://127.0.0.1:8080/v1",
        "model": "m",
        "api_key_env": "BATCH_PIPELINE_LLM_API_KEY",
        "records_per_call": 10,
        "max_concurrent_calls": 10,
        "timeout_seconds": 60.0,
        "max_retries": 4,
        "backoff_seconds": 1.0,
        "max_backoff_seconds": 30.0,
        "temperature": 0.0,
    }
