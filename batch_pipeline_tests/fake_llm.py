"""A fake OpenAI-compatible chat-completions server, for the ``leads`` LLM standardizer's tests.

``FakeLlm(delay=0.05)`` listens on 127.0.0.1 (a free port, a thread per request; ``url`` is its
base URL, ending in ``/v1``) and answers ``POST /v1/chat/completions`` by standardizing the
leads of the user message deterministically (``standardized``: title-case name, title and
labels, trimmed lower-case e-mail, a 10-digit phone as ``+1...``, else "N/A"), echoing each
lead's index, with usage tokens (``prompt_tokens`` 11 per lead + 7, ``completion_tokens`` 13 per
lead; their sums are in ``tokens``). Each request sleeps ``delay`` first, so that concurrency
shows: ``requests`` counts them, ``max_concurrent`` is the most in flight at once,
``authorizations`` holds every ``Authorization`` header seen (None when absent), ``bodies``
every request's JSON.

``script(*behaviours)`` queues what the next requests get, one each, in order; once the queue is
empty they get ``default`` ("ok"). A behaviour is a ``Behaviour`` or its ``kind`` alone:

- ``"ok"``: the standardized leads as ``{"leads": [...]}``; ``"bare_list"``: as a bare list;
  ``"no_usage"``: without the usage tokens; ``"fenced"``: in a Markdown code fence.
- ``"401"``, ``"429"``, ``"500"``, ``"503"`` (any status): that status, with ``retry_after`` as
  its ``Retry-After`` header when given, and an OpenAI-style error body.
- ``"malformed"``: message content that is not JSON; ``"not_json"``: an HTTP body that is not.
- ``"missing_field"``, ``"wrong_index"``, ``"duplicate_index"``, ``"changed_email"``,
  ``"bad_value"`` (a number as the name), ``"dropped"`` (left out): the answer's lead at
  position ``index`` is wrong that way, the others right.
- ``"hang"``: no answer for ``seconds`` (past the client's time-out), then the usual one.
- ``"drop"``: the connection closed without an answer.

Any other path than ``/v1/chat/completions`` gets a 404.

Use it as a context manager (or ``start()`` / ``stop()``); ``stop()`` cuts hanging requests
short, shuts the server down, closes it and joins its thread.
"""

from __future__ import annotations

import collections
import json
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

LEAD_FAULTS = {"missing_field", "wrong_index", "duplicate_index", "changed_email", "bad_value"}


@dataclass(frozen=True)
class Behaviour:
    kind: str = "ok"
    retry_after: str | None = None  # the Retry-After header of a status answer
    index: int = 0  # the answer's lead a lead fault applies to
    seconds: float = 2.0  # how long "hang" hangs


def standardized(lead: dict[str, Any]) -> dict[str, Any]:
    """The fake model's standardization of one lead (its index kept)."""

    def text(value: Any) -> str | None:
        if value is None:
            return None
        return " ".join(str(value).split()) or None

    def titled(value: Any) -> str | None:
        value = text(value)
        return " ".join(w.capitalize() for w in value.split()) if value else None

    email = text(lead.get("email"))
    digits = "".join(c for c in str(lead.get("phone") or "") if c.isdigit())
    if len(digits) == 11 and digits.startswith("1"):
        digits = digits[1:]
    return {
        "index": lead.get("index"),
        "name": titled(lead.get("name")),
        "email": email.lower() if email else None,
        "phone": f"+1{digits}" if len(digits) == 10 else "N/A",
        "company": text(lead.get("company")),
        "title": titled(lead.get("title")),
        "industry": titled(lead.get("industry")),
        "source": titled(lead.get("source")),
    }


class FakeLlm:
    def __init__(self, delay: float = 0.0, default: str | Behaviour = "ok") -> None:
        self.delay = delay
        self.default = default
        self.requests = 0
        self.max_concurrent = 0
        self.in_flight = 0
        self.authorizations: list[str | None] = []
        self.bodies: list[dict[str, Any]] = []
        self.tokens = {"prompt_tokens": 0, "completion_tokens": 0}
        self.lock = threading.Lock()
        self._queue: collections.deque[str | Behaviour] = collections.deque()
        self._stopping = threading.Event()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/v1"

    def script(self, *behaviours: str | Behaviour) -> None:
        with self.lock:
            self._queue.extend(behaviours)

    def next_behaviour(self) -> Behaviour:
        with self.lock:
            chosen = self._queue.popleft() if self._queue else self.default
        return chosen if isinstance(chosen, Behaviour) else Behaviour(chosen)

    def start(self) -> FakeLlm:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)

    def __enter__(self) -> FakeLlm:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def answer(
        self, body: dict[str, Any], behaviour: Behaviour
    ) -> tuple[int, dict[str, str], bytes]:
        """The status, headers and body the fake gives ``body`` (a chat-completions request)."""
        kind = behaviour.kind
        if kind.isdigit():
            headers = {"Retry-After": behaviour.retry_after} if behaviour.retry_after else {}
            error = {"error": {"message": f"fake error {kind}", "type": "fake", "code": kind}}
            return int(kind), headers, json.dumps(error).encode()
        if kind == "not_json":
            return 200, {}, b"<html>Bad gateway, but 200</html>"
        user = next(m["content"] for m in body["messages"] if m["role"] == "user")
        leads = [standardized(lead) for lead in json.loads(user)["leads"]]
        _spoil(leads, behaviour)
        content = json.dumps(leads if kind == "bare_list" else {"leads": leads})
        if kind == "malformed":
            content = '{"leads": [{"index": 0, "name": "Ada'  # cut short
        elif kind == "fenced":
            content = f"```json\n{content}\n```"
        answer: dict[str, Any] = {
            "id": f"chatcmpl-fake-{self.requests}",
            "object": "chat.completion",
            "model": body.get("model"),
            "choices": [
                {"index": 0, "finish_reason": "stop"}
                | {"message": {"role": "assistant", "content": content}}
            ],
        }
        if kind != "no_usage":
            usage = {"prompt_tokens": 11 * len(leads) + 7, "completion_tokens": 13 * len(leads)}
            answer["usage"] = usage | {"total_tokens": sum(usage.values())}
            with self.lock:
                for name, count in usage.items():
                    self.tokens[name] += count
        return 200, {"Content-Type": "application/json"}, json.dumps(answer).encode()


def _spoil(leads: list[dict[str, Any]], behaviour: Behaviour) -> None:
    """Makes the lead at ``behaviour.index`` wrong as ``behaviour.kind`` says."""
    kind, i = behaviour.kind, behaviour.index
    if kind == "dropped":
        del leads[i]
    elif kind == "missing_field":
        del leads[i]["phone"]
    elif kind == "wrong_index":
        leads[i]["index"] = 999
    elif kind == "duplicate_index":
        leads.append(dict(leads[i]))
    elif kind == "changed_email":
        leads[i]["email"] = "someone.else@example.com"
    elif kind == "bad_value":
        leads[i]["name"] = 42


def _handler(fake: FakeLlm) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            with fake.lock:
                fake.requests += 1
                fake.in_flight += 1
                fake.max_concurrent = max(fake.max_concurrent, fake.in_flight)
                fake.authorizations.append(self.headers.get("Authorization"))
            try:
                body = json.loads(raw)
                with fake.lock:
                    fake.bodies.append(body)
                behaviour = fake.next_behaviour()
                if self.path != "/v1/chat/completions":
                    behaviour = Behaviour("404")
                if fake._stopping.wait(fake.delay):
                    return
                if behaviour.kind == "hang" and fake._stopping.wait(behaviour.seconds):
                    return
                if behaviour.kind == "drop":
                    self.close_connection = True
                    return
                status, headers, answer = fake.answer(body, behaviour)
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client gave up (its time-out) before the answer
            finally:
                with fake.lock:
                    fake.in_flight -= 1

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Handler
