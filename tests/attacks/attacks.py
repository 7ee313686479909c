"""The attacks of issue 12, each one a function of a size, against a real ``shax serve``.

``test_attacks.py`` runs every attack at a small size in ``make test``; ``run_full.py`` runs them
once at the issue's sizes and prints the figures for docs/security.md. During every attack a
``LivenessProbe`` asks ``/v2/health/live`` every 100 ms on its own connection and records how
long each answer took: the event loop must never be blocked by what an attacker sends.

Every attack returns a dict of what it observed (statuses, times, sizes); the tests assert on
those, never on wall-clock budgets other than the liveness bound the issue sets.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np
import orjson

ROOT = Path(__file__).resolve().parents[2]
PROBE_EVERY = 0.1
LIVENESS_BOUND = 0.25  # seconds: no probe may wait longer (the bar)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def serve(env: dict[str, str] | None = None, log: Path | None = None):
    """A ``python -m shax_server.cli`` on a free loopback port; yields (url, pid)."""
    port = free_port()
    full = dict(os.environ)
    for k in ("SHAX_API_KEYS", "SHAX_REDIS_URL", "SHAX_WORKERS"):
        full.pop(k, None)
    full.update(env or {})
    cmd = [sys.executable, "-m", "shax_server.cli", "--host", "127.0.0.1", "--port", str(port)]
    out = open(log, "w") if log else subprocess.DEVNULL  # noqa: SIM115
    proc = subprocess.Popen([*cmd, "--log-level", "warning"], env=full, cwd=ROOT, stderr=out)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"server exited with {proc.returncode}")
            try:
                if httpx.get(f"{url}/v2/health/ready", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("server not ready in 30 s")
            time.sleep(0.05)
        yield url, proc.pid
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
        if log:
            out.close()


@dataclass
class LivenessProbe:
    """GET /v2/health/live every 100 ms while the block runs, from its own process (so the
    attacker's own CPU work in this process cannot slow the probe), on its own connection."""

    url: str
    waits: list[float] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)

    def __enter__(self):
        self._proc = subprocess.Popen(
            [sys.executable, __file__, "--probe", self.url],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self._proc.stdout.readline().strip() == "probing"
        time.sleep(0.25)  # a few probes before the attack starts
        return self

    def __exit__(self, *exc):
        time.sleep(0.25)  # and a few after it
        out, _ = self._proc.communicate("stop\n", timeout=30)
        doc = orjson.loads(out)
        self.waits, self.failures = doc["waits"], doc["failures"]

    @property
    def worst(self) -> float:
        return max(self.waits, default=float("inf"))

    def summary(self) -> dict:
        w = sorted(self.waits)
        return {
            "probes": len(w),
            "max_ms": round(1e3 * w[-1], 1) if w else None,
            "p50_ms": round(1e3 * w[len(w) // 2], 1) if w else None,
            "failures": len(self.failures),
        }


def _probe_main(url: str) -> None:
    """The probe process: probe until a line arrives on stdin, then print the waits."""
    waits: list[float] = []
    failures: list[str] = []
    stop = threading.Event()
    threading.Thread(target=lambda: (sys.stdin.readline(), stop.set()), daemon=True).start()
    print("probing", flush=True)
    with httpx.Client(base_url=url, timeout=10) as c:
        while not stop.is_set():
            start = time.perf_counter()
            try:
                status = c.get("/v2/health/live").status_code
                if status != 200:
                    failures.append(f"status {status}")
            except httpx.HTTPError as e:
                failures.append(repr(e))
            wait = time.perf_counter() - start
            waits.append(wait)
            stop.wait(max(0.0, PROBE_EVERY - wait))
    print(orjson.dumps({"waits": waits, "failures": failures}).decode(), flush=True)


def _raw(port: int, head: bytes, body: bytes = b"", timeout: float = 30.0) -> bytes:
    """Send raw bytes, read the whole reply (until the server closes or a full response)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(head + body)
        return _read_reply(s)


def _read_reply(s: socket.socket) -> bytes:
    reply = b""
    while True:
        try:
            chunk = s.recv(65536)
        except (ConnectionResetError, TimeoutError):
            break
        if not chunk:
            break
        reply += chunk
        head, sep, rest = reply.partition(b"\r\n\r\n")
        if sep:
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    if len(rest) >= int(line.split(b":")[1]):
                        return reply
    return reply


def _status(reply: bytes) -> int:
    parts = reply.split(b" ", 2)
    return int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0


def _port(url: str) -> int:
    return int(url.rsplit(":", 1)[1])


# ---------------------------------------------------------------------------------------------
# the attacks (size 1.0 = the figures)


def output_bomb(url: str, side: int, clients: int = 4) -> dict:
    """A 27-byte eval of ``broadcast [] [side, side]`` then ``sin``, ``clients`` at once, JSON
    and binary: refused with 413 from the output types, nothing evaluated."""
    prog = f"def f(x :: f32[]) = let y = broadcast [] [{side},{side}] x  z = sin y in [z]"
    pid = httpx.post(f"{url}/v1/programs", json={"program": prog}, timeout=60).json()["id"]
    bodies = [b'{"inputs":[{"data":0.3}]}', b'{"inputs":[{"data":0.3}],"binary_data_output":true}']
    results: list[httpx.Response] = []

    def hit(body: bytes) -> None:
        results.append(httpx.post(f"{url}/v1/programs/{pid}/eval", content=body, timeout=60))

    threads = [threading.Thread(target=hit, args=(bodies[i % 2],)) for i in range(clients)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return {
        "statuses": sorted(r.status_code for r in results),
        "limits": sorted({r.json().get("limit") for r in results if r.status_code == 413}),
        "details": [r.json().get("detail", "") for r in results if r.status_code == 413][:1],
        "seconds": round(time.perf_counter() - start, 3),
    }


def escaped_brackets(url: str, mib: float) -> dict:
    """A well-formed body of ``mib`` MiB: a string of ``\\"[`` (escaped quote, bracket) next to
    a valid program. The depth scan must see depth 1 without a per-character loop."""
    n = int(mib * 2**20 / 3)
    body = (
        b'{"program":"def f(a :: f32[]) = let y = sin a in [y]","note":"'
        + b'\\"[' * n
        + b'","inputs":[{"data":0.5}]}'
    )
    start = time.perf_counter()
    r = httpx.post(f"{url}/vjp", content=body, timeout=120)
    return {
        "status": r.status_code,
        "mib": round(len(body) / 2**20, 1),
        "gradient": r.json()["gradients"][0]["data"][0] if r.status_code == 200 else None,
        "seconds": round(time.perf_counter() - start, 3),
    }


def lying_shape(url: str, elements: int) -> dict:
    """A float body declaring ``shape [elements]`` for an ``f32[3]`` program, by id (refused
    from Content-Length, before reading) and inline on /vjp (refused before parsing data)."""
    prog = "def f(a :: f32[3]) = let y = sin a in [y]"
    pid = httpx.post(f"{url}/v1/programs", json={"program": prog}, timeout=60).json()["id"]
    data = np.full(elements, 0.5, dtype=np.float32)  # "0.5," per element: 61 MiB for 16 M
    tensor = {"shape": [elements], "datatype": "FP32", "data": data}
    by_id = orjson.dumps({"inputs": [tensor]}, option=orjson.OPT_SERIALIZE_NUMPY)
    inline = orjson.dumps(
        {"program": prog, "inputs": [tensor], "cotangents": [{"data": [1.0, 1.0, 1.0]}]},
        option=orjson.OPT_SERIALIZE_NUMPY,
    )
    out = {"mib": round(len(by_id) / 2**20, 1)}
    for what, path, body in (
        ("by_id", f"/v1/programs/{pid}/vjp", by_id),
        ("inline", "/vjp", inline),
    ):
        start = time.perf_counter()
        try:
            r = httpx.post(f"{url}{path}", content=body, timeout=120)
            status, limit = r.status_code, r.json().get("limit")
        except httpx.HTTPError as e:  # the server may close before the whole body is sent
            status, limit = repr(e), None
        out[what] = {"status": status, "limit": limit, "s": round(time.perf_counter() - start, 3)}
    return out


def unauthenticated_upload(url: str, mib: int) -> dict:
    """Headers announcing ``mib`` MiB and no API key, then the body trickled slowly: the 401
    must come from the headers alone, before the body."""
    port = _port(url)
    head = (
        f"POST /vjp HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        f"Content-Length: {mib * 2**20}\r\n\r\n"
    ).encode()
    start = time.perf_counter()
    with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
        s.sendall(head + b"{" + b" " * 1024)
        reply = _read_reply(s)
    return {"status": _status(reply), "seconds": round(time.perf_counter() - start, 3)}


def compile_flood(url: str, equations: int, big: int = 2, head_start: float = 0.3) -> dict:
    """``big`` compiles of ``equations`` equations, then a trivial compile from another
    client: the trivial one must not wait for the big ones (its own compile lane)."""
    chain = " ".join(f"x{i + 1} = {'sin' if i % 2 else 'cos'} x{i}" for i in range(equations))
    finished: dict[str, float] = {}
    statuses: dict[str, int] = {}

    def post(name: str, prog: str) -> None:
        r = httpx.post(f"{url}/v1/programs", json={"program": prog}, timeout=600)
        statuses[name] = r.status_code
        finished[name] = time.perf_counter()

    threads = [
        threading.Thread(
            target=post,
            args=(f"big{k}", f"def f(x0 :: f32[{k + 2}]) = let {chain} in [x{equations}]"),
        )
        for k in range(big)
    ]
    start = time.perf_counter()
    for t in threads:
        t.start()
    time.sleep(head_start)  # the big ones are compiling
    post("small", "def f(a :: f32[2]) = let y = sin a in [y]")
    for t in threads:
        t.join()
    return {
        "statuses": statuses,
        "small_s": round(finished["small"] - start, 3),
        "big_s": round(min(finished[f"big{k}"] for k in range(big)) - start, 3),
        "small_first": finished["small"] < min(finished[f"big{k}"] for k in range(big)),
    }


def slow_connections(url: str, idle: int, header_timeout: float) -> dict:
    """``idle`` connections that send nothing, ``idle`` that send half a request line, one
    with an oversized header, one with a slowly trickled body: all closed or refused."""
    port = _port(url)
    socks = []
    for i in range(2 * idle):
        s = socket.create_connection(("127.0.0.1", port), timeout=30)
        if i % 2:
            s.sendall(b"GET /v2/health/live HT")
        socks.append(s)
    big_header = (
        b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"a" * (1 << 20) + b"\r\n\r\n"
    )
    try:
        header_reply = _raw(port, big_header)
    except (ConnectionResetError, BrokenPipeError):
        header_reply = b"reset"
    start = time.perf_counter()
    closed = 0
    deadline = start + header_timeout + 10
    for s in socks:
        s.settimeout(max(0.1, deadline - time.perf_counter()))
        try:
            while s.recv(65536):
                pass
            closed += 1
        except (TimeoutError, ConnectionResetError):
            closed += isinstance(sys.exc_info()[1], ConnectionResetError)
        finally:
            s.close()
    held = time.perf_counter() - start
    # a slow upload: the headers, then one byte now and then
    with socket.create_connection(("127.0.0.1", port), timeout=60) as s:
        s.sendall(
            b"POST /vjp HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: 1000\r\n\r\n{"
        )
        t0 = time.perf_counter()
        reply = _read_reply(s)
        slow_body_s = time.perf_counter() - t0
    return {
        "connections": 2 * idle,
        "closed": closed,
        "all_closed_within_s": round(held, 2),
        "big_header_status": _status(header_reply),
        "slow_body_status": _status(reply),
        "slow_body_closed_after_s": round(slow_body_s, 2),
    }


if __name__ == "__main__" and sys.argv[1:2] == ["--probe"]:
    _probe_main(sys.argv[2])
