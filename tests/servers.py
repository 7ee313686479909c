"""Test helpers: free loopback ports and a real ``shax serve`` subprocess on 127.0.0.1."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def shax_server(
    port: int,
    env: dict[str, str] | None = None,
    ready_within: float = 30,
    args: list[str] | None = None,
):
    """A ``python -m shax_server.cli`` subprocess on 127.0.0.1:port (without API keys unless
    ``env`` sets them; ``args`` are more ``shax serve`` flags); yields its URL once ready, and
    stops it on exit."""
    full_env = dict(os.environ)
    full_env.pop("SHAX_API_KEYS", None)
    full_env.update(env or {})
    cmd = [sys.executable, "-m", "shax_server.cli", "--host", "127.0.0.1", "--port", str(port)]
    cmd += args or []
    proc = subprocess.Popen([*cmd, "--log-level", "warning"], env=full_env, cwd=ROOT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + ready_within
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"uvicorn exited with {proc.returncode}")
            try:
                if httpx.get(f"{url}/v2/health/ready", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"uvicorn did not become ready in {ready_within} s")
            time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
