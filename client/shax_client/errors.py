"""Typed exceptions for the SDK, built from the server's ``application/problem+json`` bodies.

Every error the server sends is an RFC 9457 problem (``type``, ``title``, ``status``,
``detail``, plus ``error`` and extension members such as ``line``/``column``, ``tensor``,
``limit``). ``error_from_problem`` maps one to the most specific exception below; the full
problem document stays available as ``exc.problem``.

    ShaxClientError                 base of everything the SDK raises for a failed call
    ├── ProgramError                the program does not parse / type-check / differentiate
    ├── InvalidRequest              400 that is not about the program (bad tensors, bad body)
    │   └── InvalidTensor           a tensor has the wrong shape / dtype / element count
    ├── AuthError                   401 / 403
    ├── NotFound                    404 (an unknown or evicted program id)
    ├── LimitExceeded               413 (body, equations, elements, peak memory)
    ├── ServerError                 any other 5xx
    │   └── Unavailable             503 after the retries, or the server cannot be reached
    │       └── ConnectionFailed    connection refused / reset / DNS (``__cause__`` is httpx's)
    └── Timeout                     no answer within the client's timeout
"""

from __future__ import annotations

import re
from typing import Any

PROBLEM_TYPE_BASE = "urn:shax:problem:"

PROGRAM_KINDS = frozenset(
    {"parse-error", "graph-error", "type-error", "differentiation-error", "invalid-program"}
)


class ShaxClientError(Exception):
    """A call to the shax server failed. ``problem`` is the server's problem+json (or {})."""

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        problem: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ):
        super().__init__(message)
        self.status = status
        self.problem = dict(problem or {})
        self.headers = dict(headers or {})

    @property
    def kind(self) -> str | None:
        """The problem type without the ``urn:shax:problem:`` prefix (``parse-error``, ...)."""
        t = self.problem.get("type")
        if isinstance(t, str) and t.startswith(PROBLEM_TYPE_BASE):
            return t[len(PROBLEM_TYPE_BASE) :]
        return None

    @property
    def title(self) -> str | None:
        return self.problem.get("title")

    @property
    def detail(self) -> str:
        return str(self.problem.get("detail") or self.problem.get("error") or self.args[0])


class ProgramError(ShaxClientError):
    """The program was refused: a parse error (``line``, ``column``), a type error (the message
    names the ``equation``), a malformed graph (``field``), or one that cannot be differentiated."""

    @property
    def line(self) -> int | None:
        return self.problem.get("line")

    @property
    def column(self) -> int | None:
        return self.problem.get("column")

    @property
    def equation(self) -> str | None:
        """The offending equation: the problem's ``equation`` member, else the one the
        message quotes (``in `x = add a b`: ...``)."""
        if self.problem.get("equation"):
            return self.problem["equation"]
        match = re.search(r"in `([^`]+)`", self.detail)
        return match.group(1) if match else None

    @property
    def field(self) -> str | None:
        return self.problem.get("field")


class InvalidRequest(ShaxClientError):
    """The request was malformed (400) for a reason other than the program."""


class InvalidTensor(InvalidRequest):
    """A tensor does not match the program's signature; ``tensor`` names it."""

    @property
    def tensor(self) -> str | None:
        return self.problem.get("tensor")


class AuthError(ShaxClientError):
    """The API key is missing or wrong (401) or not allowed (403)."""


class NotFound(ShaxClientError):
    """The program id is unknown to the server (never compiled there, or evicted)."""


class LimitExceeded(ShaxClientError):
    """A server limit was hit (413); ``limit`` names the setting."""

    @property
    def limit(self) -> str | None:
        return self.problem.get("limit")


class ServerError(ShaxClientError):
    """The server failed (5xx)."""


class Unavailable(ServerError):
    """The server is overloaded (503) or unreachable, and the retries are used up."""

    @property
    def retry_after(self) -> float | None:
        value = self.headers.get("retry-after")
        try:
            return float(value) if value is not None else None
        except ValueError:
            return None


class ConnectionFailed(Unavailable):
    """The server could not be reached; ``__cause__`` is the transport error."""


class Timeout(ShaxClientError):
    """The server did not answer within the client's timeout."""


def _message(status: int, problem: dict[str, Any]) -> str:
    title = problem.get("title") or f"HTTP {status}"
    detail = problem.get("detail") or problem.get("error") or ""
    where = ""
    if problem.get("line") is not None and f"line {problem['line']}" not in str(detail):
        where = f" (line {problem['line']}, column {problem.get('column')})"
    return f"{status} {title}: {detail}{where}" if detail else f"{status} {title}{where}"


def error_class(status: int, kind: str | None) -> type[ShaxClientError]:
    """The exception class for a status and a problem kind (pure; see the module docstring)."""
    if kind in PROGRAM_KINDS:
        return ProgramError
    if kind == "tensor-error":
        return InvalidTensor
    if status in (401, 403):
        return AuthError
    if status == 404:
        return NotFound
    if status == 413 or kind == "limit-exceeded":
        return LimitExceeded
    if status == 503:
        return Unavailable
    if status >= 500:
        return ServerError
    if status in (408, 504):
        return Timeout
    return InvalidRequest


def error_from_problem(
    status: int, problem: Any, headers: dict[str, str] | None = None
) -> ShaxClientError:
    """The typed exception for an error response; ``problem`` is its parsed body (any JSON)."""
    if not isinstance(problem, dict):
        problem = {"detail": str(problem)} if problem not in (None, "") else {}
    exc = ShaxClientError(_message(status, problem), status=status, problem=problem)
    cls = error_class(status, exc.kind)
    return cls(_message(status, problem), status=status, problem=problem, headers=headers)
