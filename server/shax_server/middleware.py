"""Pure-ASGI middleware: the request body limit and request metrics.

``BodyLimit`` refuses a body larger than ``max_body_bytes`` with 413 whether or not it declares a
Content-Length: declared lengths are checked up front, and streamed (chunked) bodies are counted
as they arrive, so an oversized body is never buffered beyond the limit. The accepted body is
replayed to the app unchanged.
"""

from __future__ import annotations

import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

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
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                break  # disconnected: let the app see it
            body = message.get("body", b"")
            size += len(body)
            if size > self.max_bytes:
                await _send_problem(send, self._too_large(f"more than {self.max_bytes}"))
                return
            chunks.append(body)
            if not message.get("more_body", False):
                message = None
                break
        replay = [{"type": "http.request", "body": b"".join(chunks), "more_body": False}]
        if message is not None:
            replay.append(message)

        async def replay_receive() -> Message:
            if replay:
                return replay.pop(0)
            return await receive()

        await self.app(scope, replay_receive, send)


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
