"""Shared fixtures: a real uvicorn serving shax on 127.0.0.1 (one per test session)."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from tests.servers import free_port, shax_server

FIXTURES = Path(__file__).parent / "fixtures"
ROOT = Path(__file__).parent.parent


@pytest.fixture(scope="session")
def server_url():
    """Base URL of a uvicorn subprocess running ``shax_server`` with small test limits."""
    limits = {
        "SHAX_MAX_BODY_BYTES": str(16 * 1024 * 1024),
        "SHAX_MAX_EQUATIONS": "2000",
        "SHAX_MAX_TENSOR_ELEMENTS": str(2 * 1024 * 1024),
        "SHAX_MAX_PEAK_BYTES": str(256 * 1024 * 1024),
    }
    # with the example model repository, as `make run` serves it (named, versioned models)
    repository = ["--model-repository", str(ROOT / "examples" / "model_repository")]
    with shax_server(free_port(), limits, args=repository) as url:
        yield url


@pytest.fixture(scope="session")
def client(server_url):
    with httpx.Client(base_url=server_url, timeout=30) as c:
        yield c
