"""Shared fixtures: a real uvicorn serving shax on 127.0.0.1 (one per test session)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

FIXTURES = Path(__file__).parent / "fixtures"
ROOT = Path(__file__).parent.parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def server_url():
    """Base URL of a uvicorn subprocess running ``shax_server`` with small test limits."""
    port = _free_port()
    env = dict(
        os.environ,
        SHAX_MAX_BODY_BYTES=str(16 * 1024 * 1024),
        SHAX_MAX_EQUATIONS="2000",
        SHAX_MAX_TENSOR_ELEMENTS=str(2 * 1024 * 1024),
        SHAX_MAX_PEAK_BYTES=str(256 * 1024 * 1024),
    )
    env.pop("SHAX_API_KEYS", None)
    cmd = [
        sys.executable,
        "-m",
        "shax_server.cli",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--log-level",
        "warning",
    ]
    proc = subprocess.Popen(cmd, env=env, cwd=ROOT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"uvicorn exited with {proc.returncode}")
            try:
                if httpx.get(f"{url}/v2/health/ready", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("uvicorn did not become ready in 30 s")
            time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


@pytest.fixture(scope="session")
def client(server_url):
    with httpx.Client(base_url=server_url, timeout=30) as c:
        yield c
