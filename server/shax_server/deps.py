"""Per-app state and the dependencies routes declare (state, API key)."""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, Request, Security
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

from shax_server.cache import ProgramCache
from shax_server.metrics import Metrics
from shax_server.pool import WorkerPool
from shax_server.problems import Problem
from shax_server.settings import Settings


@dataclass
class ServiceState:
    settings: Settings
    metrics: Metrics
    cache: ProgramCache
    pool: WorkerPool
    ready: bool = False
    registry: Any = None  # repository.Registry: model names and versions (set by create_app)


async def get_state(request: Request) -> ServiceState:  # async: no thread hop per request
    return request.app.state.shax


State = Annotated[ServiceState, Depends(get_state)]

_api_key = APIKeyHeader(name="X-API-Key", auto_error=False, description="one of SHAX_API_KEYS")
_bearer = HTTPBearer(auto_error=False, description="Authorization: Bearer <one of SHAX_API_KEYS>")


def _matches(candidate: str, keys) -> bool:
    # compare against every key, constant time each, without stopping at the first match
    given = candidate.encode()
    found = False
    for key in keys:
        found |= hmac.compare_digest(given, key.get_secret_value().encode())
    return found


def unauthorized() -> Problem:
    return Problem(
        401,
        "Unauthorized",
        "missing or invalid API key: send it as X-API-Key or Authorization: Bearer",
        kind="unauthorized",
        headers={"WWW-Authenticate": 'APIKey header="X-API-Key", Bearer realm="shax"'},
    )


def credentials_valid(headers, keys) -> bool:
    """Whether raw ASGI ``headers`` carry one of ``keys`` (X-API-Key, else a Bearer token)."""
    api_key = bearer = None
    for name, value in headers:
        if name == b"x-api-key" and api_key is None:
            api_key = value.decode("latin-1")
        elif name == b"authorization" and bearer is None:
            scheme, _, token = value.decode("latin-1").partition(" ")
            if scheme.lower() == "bearer" and token:
                bearer = token.strip()
    candidate = api_key if api_key is not None else bearer
    return candidate is not None and _matches(candidate, keys)


async def require_api_key(
    state: State,
    api_key: Annotated[str | None, Security(_api_key)],
    bearer: Annotated[HTTPAuthorizationCredentials | None, Security(_bearer)],
) -> None:
    """401 unless SHAX_API_KEYS is empty or the request carries one of the keys (the
    ``ApiKeyGate`` middleware enforces this before any body is read; the dependency documents
    the schemes in OpenAPI)."""
    keys = state.settings.api_keys
    if not keys:
        return
    candidate = api_key if api_key is not None else (bearer.credentials if bearer else None)
    if candidate is not None and _matches(candidate, keys):
        return
    raise unauthorized()


Authorized = [Depends(require_api_key)]
