"""Process helpers shared by the tests, the load test and the benchmarks: free loopback ports,
a subprocess that is ready before it is used and always stopped, and ``shax serve``."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

ROOT = Path(__file__).parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stop(proc: subprocess.Popen, wait: float = 10) -> None:
    """Terminate ``proc`` (this process started it), killing it if it does not exit in time."""
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=wait)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=wait)


@contextlib.contextmanager
def running(
    cmd: Sequence[str],
    ready: Callable[[], bool],
    *,
    what: str = "the process",
    ready_within: float = 30,
    **popen,
):
    """``cmd`` as a subprocess, yielded once ``ready()`` is true (polled every 0.1 s; an
    exception from it counts as not ready); stopped on exit, also on error."""
    proc = subprocess.Popen(list(cmd), **popen)
    try:
        deadline = time.monotonic() + ready_within
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"{what} exited with {proc.returncode}")
            try:
                if ready():
                    break
            except Exception:  # noqa: BLE001  (refused connection, not yet listening, ...)
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"{what} did not become ready in {ready_within} s")
            time.sleep(0.1)
        yield proc
    finally:
        stop(proc)


def shax_env(env: dict[str, str] | None = None, inherit_shax: bool = True) -> dict[str, str]:
    """This process's environment without API keys (or without any SHAX_ setting), plus ``env``."""
    full = {k: v for k, v in os.environ.items() if inherit_shax or not k.startswith("SHAX_")}
    full.pop("SHAX_API_KEYS", None)
    full.update(env or {})
    return full


@contextlib.contextmanager
def shax_process(port: int, env: dict[str, str] | None = None, **options):
    """A ``python -m shax_server.cli`` subprocess on 127.0.0.1:port; yields ``(url, proc)``.
    ``options``: ``inherit_shax`` (default True), ``ready_within`` (seconds) and ``args`` (more
    ``shax serve`` flags)."""
    import httpx

    url = f"http://127.0.0.1:{port}"
    cmd = [sys.executable, "-m", "shax_server.cli", "--host", "127.0.0.1", "--port", str(port)]
    cmd += [*options.pop("args", ()), "--log-level", "warning"]
    environment = shax_env(env, options.pop("inherit_shax", True))
    with running(
        cmd,
        lambda: httpx.get(f"{url}/v2/health/ready", timeout=1).status_code == 200,
        what="uvicorn",
        env=environment,
        cwd=ROOT,
        **options,
    ) as proc:
        yield url, proc


@contextlib.contextmanager
def shax_server(
    port: int,
    env: dict[str, str] | None = None,
    ready_within: float = 30,
    args: list[str] | None = None,
):
    """``shax_process`` without API keys unless ``env`` sets them (``args``: more ``shax serve``
    flags); yields its URL."""
    with shax_process(port, env, ready_within=ready_within, args=args or []) as (url, _):
        yield url
