"""Pure-ASGI middleware: request ids, request metrics, API keys and the body limit.

``RequestID`` gives every request an id: the client's ``X-Request-ID`` when it is a short token,
else a fresh one; it is echoed in the response header and carried by every log record made
while the request is served (``logs.py``: any logger, worker threads included).

``ApiKeyGate`` answers 401 from the headers alone, before any body is read.

``BodyLimit`` refuses a body larger than ``max_body_bytes`` with 413 whether or not it declares a
Content-Length: declared lengths are checked up front, and streamed (chunked) bodies are counted
as the app reads them, without buffering (routes read bodies through ``body.py``, which refuses
earlier, with limits computed from the program).
"""

from __future__ import annotations

import re
import time
import uuid

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shax_server import logs
from shax_server.logs import request_id
from shax_server.metrics import Metrics
from shax_server.problems import Problem, limit_exceeded


async def _send_problem(send: Send, p: Problem) -> None:
    from shax_server.problems import problem_response

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

    def _too_large(self, size: str) -> Problem:
        p = limit_exceeded(
            "max_body_bytes",
            f"the request body is {size} bytes, more than the limit of {self.max_bytes}",
        )
        p.headers["Connection"] = "close"
        return p

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope.get("headers", ()):
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = -1
                if declared > self.max_bytes:
                    await _send_problem(send, self._too_large(str(declared)))
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
                        await _send_problem(send, self._too_large(f"more than {self.max_bytes}"))
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
    """With ``SHAX_API_KEYS`` set, every path but ``open_paths`` needs a key, and a request
    without a valid one is answered 401 from its headers alone: its body is never read (and
    its connection is closed if it announced one)."""

    def __init__(self, app: ASGIApp, keys, open_paths):
        self.app = app
        self.keys = list(keys)
        self.exact = {p for p in open_paths if not p.endswith("*")}
        self.prefixes = tuple(p[:-1] for p in open_paths if p.endswith("*"))

    def _open(self, path: str) -> bool:
        return path in self.exact or (bool(self.prefixes) and path.startswith(self.prefixes))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not self.keys or self._open(scope.get("path", "")):
            await self.app(scope, receive, send)
            return
        from shax_server.deps import credentials_valid, unauthorized

        headers = scope.get("headers", ())
        if credentials_valid(headers, self.keys):
            await self.app(scope, receive, send)
            return
        p = unauthorized()
        if any(n in (b"content-length", b"transfer-encoding") for n, _ in headers):
            p.headers["Connection"] = "close"  # the unread body is not worth reading
        await _send_problem(send, p)


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
            route = scope.get("route")
            label = getattr(route, "path", None) or "unmatched"
            self.metrics.requests.inc(label, str(status))
            self.metrics.latency.observe(time.perf_counter() - start, label)
            self.metrics.refresh()


REQUEST_ID_HEADER = "X-Request-ID"
_VALID_ID = re.compile(r"[A-Za-z0-9._:@/+=-]{1,128}")


class RequestID:
    """X-Request-ID in and out; the id is in a context variable while the request runs."""

    def __init__(self, app: ASGIApp):
        self.app = app
        logs.install()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        rid = None
        for name, value in scope.get("headers", ()):
            if name == b"x-request-id":
                text = value.decode("latin-1")
                if _VALID_ID.fullmatch(text):
                    rid = text
                break
        rid = rid or uuid.uuid4().hex
        token = request_id.set(rid)

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [(k, v) for k, v in message.get("headers", ()) if k != b"x-request-id"]
                headers.append((b"x-request-id", rid.encode()))
                message = {**message, "headers": headers}
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            request_id.reset(token)
