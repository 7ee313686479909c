"""The per-request rules (request ids, request metrics, API keys, the body limit) as plain
functions, and the pure-ASGI middleware that apply them to every request of the app.

The fast path (``fastpath.py``) applies the same functions to the calls it answers itself, so
each rule has one implementation:

- ``request_id_for(headers)``: the client's ``X-Request-ID`` when it is a short token, else a
  fresh one; ``with_request_id`` puts it on a response's headers. While the request is served
  the id is in ``logs.request_id``, so every log record carries it (``logs.py``: any logger,
  worker threads included).
- ``Access(keys, open_paths).refusal(path, headers)``: the 401 for a request without a valid
  API key, from the headers alone, before any body is read.
- ``declared_too_large(headers, max_bytes)``: the 413 for a declared Content-Length over
  ``max_body_bytes``, before the app runs. Streamed (chunked) bodies are counted as they are
  read (``BodyLimit`` here; the body reader, ``body.py``, refuses earlier still, with limits
  computed from the program, and with the same 413 at ``max_body_bytes``).
- ``record_request(metrics, scope, status, started)``: the request counted by route template
  and status, and its latency observed.
"""

from __future__ import annotations

import random
import re
import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shax_server import logs
from shax_server.body import too_large
from shax_server.logs import request_id
from shax_server.metrics import Metrics
from shax_server.problems import Problem, problem_response

REQUEST_ID_HEADER = "X-Request-ID"
_VALID_ID = re.compile(r"[A-Za-z0-9._:@/+=-]{1,128}")


def request_id_for(headers) -> str:
    """The id of a request with raw ASGI ``headers``: its own ``X-Request-ID`` when that is a
    token of at most 128 safe characters, else a fresh random one."""
    for name, value in headers:
        if name == b"x-request-id":
            text = value.decode("latin-1")
            if _VALID_ID.fullmatch(text):
                return text
            break
    return f"{random.getrandbits(128):032x}"  # a correlation id, not a secret


def with_request_id(headers, rid: str) -> list:
    """Raw response ``headers`` with ``X-Request-ID: rid`` (and no other request id)."""
    out = [(k, v) for k, v in headers if k != b"x-request-id"]
    out.append((b"x-request-id", rid.encode()))
    return out


def id_sender(send: Send, rid: str) -> Send:
    """``send`` with ``X-Request-ID: rid`` put on the response's start message."""

    async def send_with_id(message: Message) -> None:
        if message["type"] == "http.response.start":
            message = {**message, "headers": with_request_id(message.get("headers", ()), rid)}
        await send(message)

    return send_with_id


def record_request(metrics: Metrics, scope: Scope, status: int, started: float) -> None:
    """Count a finished request by route template (``unmatched`` when no route took it) and
    status, and observe its latency since ``started`` (``time.perf_counter()``)."""
    route = scope.get("route")
    label = getattr(route, "path", None) or "unmatched"
    metrics.requests.inc(label, str(status))
    metrics.latency.observe(time.perf_counter() - started, label)
    metrics.refresh()


class Access:
    """With API keys set, every path but ``open_paths`` (exact, or a prefix with a trailing
    ``*``) needs one of them, as ``X-API-Key`` or ``Authorization: Bearer``."""

    def __init__(self, keys, open_paths):
        self.keys = list(keys)
        self.exact = {p for p in open_paths if not p.endswith("*")}
        self.prefixes = tuple(p[:-1] for p in open_paths if p.endswith("*"))

    def is_open(self, path: str) -> bool:
        return path in self.exact or (bool(self.prefixes) and path.startswith(self.prefixes))

    def refusal(self, path: str, headers) -> Problem | None:
        """The 401 for a request to ``path`` with raw ``headers``, or None when it may pass.
        A refused request's body is never read (its connection is closed if it has one)."""
        if not self.keys or self.is_open(path):
            return None
        from shax_server.deps import credentials_valid, unauthorized

        if credentials_valid(headers, self.keys):
            return None
        p = unauthorized()
        if any(n in (b"content-length", b"transfer-encoding") for n, _ in headers):
            p.headers["Connection"] = "close"  # the unread body is not worth reading
        return p


def declared_too_large(headers, max_bytes: int) -> Problem | None:
    """The 413 for raw ``headers`` declaring a Content-Length over ``max_bytes``, or None."""
    for name, value in headers:
        if name == b"content-length":
            try:
                declared = int(value)
            except ValueError:
                declared = -1
            if declared > max_bytes:
                return too_large(str(declared), max_bytes)
    return None


async def send_problem(send: Send, p: Problem) -> None:
    response = problem_response(p)
    await send(
        {
            "type": "http.response.start",
            "status": response.status_code,
            "headers": response.raw_headers,
        }
    )
    await send({"type": "http.response.body", "body": response.body})


class BodyLimit:
    """The body limit for every route, without buffering: a declared Content-Length over the
    limit is refused before the app runs; a streamed body is counted as the app reads it, and
    once it passes the limit the client gets the 413 and the app sees a disconnect (its own
    response, if any, is dropped). Routes that read bodies through ``shax_server.body`` refuse
    earlier still, with limits computed from their program."""

    def __init__(self, app: ASGIApp, max_bytes: int):
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        refusal = declared_too_large(scope.get("headers", ()), self.max_bytes)
        if refusal is not None:
            await send_problem(send, refusal)
            return
        size = 0
        refused = False
        started = False

        async def counting_receive() -> Message:
            nonlocal size, refused
            if refused:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                size += len(message.get("body", b""))
                if size > self.max_bytes:
                    refused = True
                    if not started:
                        await send_problem(
                            send, too_large(f"more than {self.max_bytes}", self.max_bytes)
                        )
                    return {"type": "http.disconnect"}
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if refused:
                return  # the 413 went out instead
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        await self.app(scope, counting_receive, guarded_send)


class ApiKeyGate:
    """``Access`` for every request: 401 from the headers alone, before any body is read."""

    def __init__(self, app: ASGIApp, access: Access):
        self.app = app
        self.access = access

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        refusal = self.access.refusal(scope.get("path", ""), scope.get("headers", ()))
        if refusal is None:
            await self.app(scope, receive, send)
        else:
            await send_problem(send, refusal)


class RequestMetrics:
    """Counts requests by route template and status and observes their latency."""

    def __init__(self, app: ASGIApp, metrics: Metrics):
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            record_request(self.metrics, scope, status, start)


class RequestID:
    """X-Request-ID in and out; the id is in a context variable while the request runs."""

    def __init__(self, app: ASGIApp):
        self.app = app
        logs.install()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        rid = request_id_for(scope.get("headers", ()))
        token = request_id.set(rid)
        try:
            await self.app(scope, receive, id_sender(send, rid))
        finally:
            request_id.reset(token)
