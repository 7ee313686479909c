"""Errors as RFC 9457 problem details (``application/problem+json``).

Every error response has ``type``, ``title``, ``status`` and ``detail``, plus ``error`` (the same
text as ``detail``) so that Open Inference Protocol clients, which read ``error``, understand it
too. Extension members say where the problem is: ``line``/``column`` for IR parse errors,
``field`` for graph errors, ``tensor`` for bad tensors, ``limit`` for exceeded limits.

``problem_for`` maps every ``ShaxError`` to a status; anything unexpected becomes a generic 500
without a traceback (the handler logs it server-side).
"""

from __future__ import annotations

import logging
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from shax_core import EvaluationError, ParseError, ShaxError, ShaxTypeError, VerifyError
from shax_core.graph import GraphError
from shax_core.registry import RuleError
from shax_core.wire import FramingError, NestingError, TensorError, TensorLimitError

log = logging.getLogger("shax_server")

MEDIA_TYPE = "application/problem+json"
TYPE_BASE = "urn:shax:problem:"


class Problem(Exception):
    """An error response that a handler raises; rendered by the app's exception handler."""

    def __init__(
        self,
        status: int,
        title: str,
        detail: str,
        *,
        kind: str | None = None,
        headers: dict[str, str] | None = None,
        **extra: Any,
    ):
        super().__init__(detail)
        self.status = status
        self.title = title
        self.detail = detail
        self.type = TYPE_BASE + kind if kind else "about:blank"
        self.headers = headers or {}
        self.extra = extra

    def body(self) -> dict[str, Any]:
        doc = {"type": self.type, "title": self.title, "status": self.status, "detail": self.detail}
        doc.update(self.extra)
        doc["error"] = self.detail
        return doc


def limit_exceeded(limit: str, detail: str) -> Problem:
    return Problem(413, "Limit exceeded", detail, kind="limit-exceeded", limit=limit)


def invalid_request(detail: str, **extra: Any) -> Problem:
    """A 400 for a request that is well-formed but asks for something that does not fit
    (``extra`` names where, e.g. ``tensor=``)."""
    return Problem(400, "Invalid request", detail, kind="invalid-request", **extra)


def not_found(detail: str) -> Problem:
    return Problem(404, "Not found", detail, kind="not-found")


def problem_response(p: Problem) -> Response:
    return Response(
        orjson.dumps(p.body()), status_code=p.status, media_type=MEDIA_TYPE, headers=p.headers
    )


def problem_for(exc: ShaxError) -> Problem:
    """The problem for an error raised by shax_core on bad input."""
    msg = str(exc)
    if isinstance(exc, ParseError):
        return Problem(
            400, "IR parse error", msg, kind="parse-error", line=exc.line, column=exc.column
        )
    if isinstance(exc, GraphError):
        return Problem(400, "Invalid graph", msg, kind="graph-error", field=exc.where)
    if isinstance(exc, TensorLimitError):
        p = limit_exceeded("max_tensor_elements", msg)
        p.extra["tensor"] = exc.name
        return p
    if isinstance(exc, TensorError):
        return Problem(400, "Invalid tensor", msg, kind="tensor-error", tensor=exc.name)
    if isinstance(exc, NestingError):
        return Problem(400, "Limit exceeded", msg, kind="limit-exceeded", limit="max_json_depth")
    if isinstance(exc, FramingError):
        return Problem(400, "Malformed body", msg, kind="malformed-body")
    if isinstance(exc, ShaxTypeError | VerifyError):
        return Problem(400, "Type error", msg, kind="type-error")
    if isinstance(exc, EvaluationError):
        return Problem(400, "Invalid arguments", msg, kind="argument-error")
    if isinstance(exc, RuleError):
        return Problem(400, "Cannot differentiate", msg, kind="differentiation-error")
    return Problem(400, "Invalid program", msg, kind="invalid-program")


_HTTP_TITLES = {401: "Unauthorized", 404: "Not found", 405: "Method not allowed", 413: "Too large"}


def error_response(exc: Exception) -> Response:
    """The problem+json response for an exception a route raised: the app's exception handlers
    and the fast path both answer with it."""
    if isinstance(exc, Problem):
        return problem_response(exc)
    if isinstance(exc, ShaxError):
        return problem_response(problem_for(exc))
    if isinstance(exc, RequestValidationError):
        parts = []
        for err in exc.errors()[:10]:
            loc = ".".join(str(x) for x in err.get("loc", ()))
            parts.append(f"{loc}: {err.get('msg', 'invalid')}")
        detail = "; ".join(parts) or "invalid request"
        return problem_response(Problem(400, "Invalid request", detail, kind="invalid-request"))
    if isinstance(exc, StarletteHTTPException):
        title = _HTTP_TITLES.get(exc.status_code, "HTTP error")
        detail = exc.detail if isinstance(exc.detail, str) else title
        return problem_response(Problem(exc.status_code, title, detail, headers=exc.headers))
    log.error("unexpected error", exc_info=exc)
    return problem_response(
        Problem(500, "Internal error", "internal error; the server log has the details")
    )


def install_handlers(app: FastAPI) -> None:
    async def handle(_: Request, exc: Exception) -> Response:
        return error_response(exc)

    for kind in (Problem, ShaxError, RequestValidationError, StarletteHTTPException, Exception):
        app.add_exception_handler(kind, handle)
