"""The HTTP protocol ``shax serve`` runs: uvicorn's httptools protocol with connection hygiene.

uvicorn bounds neither a request's header bytes (with httptools) nor the time a connection may
take to send its headers, and arms its keep-alive timer only after a first response, so a
connection that never sends a request is held forever. ``GuardedHttpToolsProtocol`` adds:

- ``max_header_bytes``: the request line plus headers; beyond, 431 and the connection closes;
- ``header_timeout``: from the connection's start (or the previous response) to the end of the
  headers; past it, the connection closes (408 when a request had begun).

Keep-alive idle time (``timeout_keep_alive``) and the connection limit (``limit_concurrency``,
503 beyond) are uvicorn's own settings, which ``cli.serve`` sets; slow bodies are closed by the
body reader (``body.py``: ``body_timeout``, ``upload_timeout``). Limits come from ``Settings``
(the ``SHAX_`` environment, which ``shax serve`` fills from its flags), read once per process.
"""

from __future__ import annotations

import asyncio
import json

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from shax_server.settings import Settings

_limits: tuple[int, float] | None = None


def _settings() -> tuple[int, float]:
    global _limits
    if _limits is None:
        s = Settings()
        _limits = (s.max_header_bytes, s.header_timeout)
    return _limits


def _response(status: bytes, detail: str) -> bytes:
    code = int(status.split()[0])
    doc = {"type": "about:blank", "title": "Request rejected", "status": code, "detail": detail}
    body = json.dumps({**doc, "error": detail}).encode()
    return (
        b"HTTP/1.1 " + status + b"\r\ncontent-type: application/problem+json\r\n"
        b"content-length: " + str(len(body)).encode() + b"\r\nconnection: close\r\n\r\n" + body
    )


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.max_header_bytes, self.header_timeout = _settings()
        self.header_bytes = 0
        self.header_timer: asyncio.TimerHandle | None = None
        self.rejected = False
        self.in_headers = False

    def connection_made(self, transport) -> None:
        super().connection_made(transport)
        self._arm()

    def connection_lost(self, exc) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _arm(self) -> None:
        self._disarm()
        self.header_timer = self.loop.call_later(self.header_timeout, self._headers_too_slow)

    def _disarm(self) -> None:
        if self.header_timer is not None:
            self.header_timer.cancel()
            self.header_timer = None

    def _headers_too_slow(self) -> None:
        self.header_timer = None
        if self.transport.is_closing():
            return
        if self.in_headers:
            detail = f"the request headers took longer than {self.header_timeout:g} s"
            self._reject(b"408 Request Timeout", detail)
        elif self.cycle is None or self.cycle.response_complete:
            self.transport.close()  # a connection that never sent a request

    def _reject(self, status: bytes, detail: str) -> None:
        self.rejected = True
        self._disarm()
        if not self.transport.is_closing():
            self.transport.write(_response(status, detail))
            self.transport.close()

    def data_received(self, data: bytes) -> None:
        if self.rejected:
            return
        super().data_received(data)

    def send_400_response(self, msg: str) -> None:
        if not self.rejected:  # our own rejection aborted the parser: nothing more to say
            super().send_400_response(msg)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self.header_bytes = 0
        self.in_headers = True
        if self.header_timer is None:
            self._arm()

    def _count(self, n: int) -> None:
        self.header_bytes += n
        if self.header_bytes > self.max_header_bytes:
            detail = f"the request line and headers exceed {self.max_header_bytes} bytes"
            self._reject(b"431 Request Header Fields Too Large", detail)
            raise ValueError("header limit")  # stops the parser; data_received ignores the rest

    def on_url(self, url: bytes) -> None:
        self._count(len(url))
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._count(len(name) + len(value) + 4)
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self.in_headers = False
        self._disarm()
        super().on_headers_complete()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing() and not self.pipeline:
            self._arm()  # the next request's headers are due within header_timeout
