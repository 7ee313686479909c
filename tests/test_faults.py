"""Faults: clients that vanish, evaluations that overrun, and corrupt shared-store entries.

- A client that disconnects mid-request (after sending, or halfway through its body) costs the
  server nothing lasting: no 500 or traceback in its log, the in-flight gauge returns to 0, and
  the next request is served (real uvicorn on 127.0.0.1).
- An evaluation longer than ``SHAX_EVAL_TIMEOUT`` is answered (503 + Retry-After) while it still
  runs; its worker finishes in the background, frees its slot, and serves the next request.
- A corrupt entry in the shared store (``MemoryStore``) is ignored with a warning in the log: the
  program id is unknown (404, the client re-uploads) and a compile recompiles and overwrites it.
- A forged entry (the right program text, a well-formed VJP with the right signature but wrong
  gradients) is never run: with ``SHAX_CACHE_SECRET`` its signature does not verify, without a
  secret no stored VJP is used at all; either way the gradient is the true one.
  Redis-specific faults belong to the deployment tests (test_stack.py).
"""

from __future__ import annotations

import asyncio
import logging
import math
import socket
import sys
import time
from pathlib import Path

import httpx
import orjson
import pytest
from shax_server import Settings, cache, create_app
from shax_server.store import MemoryStore

sys.path.insert(0, str(Path(__file__).parent / "load"))
import loadtest  # noqa: E402

# a few seconds of dot products from a scalar input (small request, heavy evaluation)
HEAVY = (
    "def f(a :: f32[]) = let b = broadcast [] [1024,1024] a c = dot b b d = dot c b e = dot d b "
    "g = dot e b k = dot g b h = reduce_sum [0,1] k in [h]"
)
SIN = {"program": "def f(a :: f32[]) = let y = sin a in [y]", "inputs": [{"data": 0.0}]}


def inflight(url_or_text: str) -> float:
    text = url_or_text
    if url_or_text.startswith("http"):
        text = httpx.get(f"{url_or_text}/metrics", timeout=5).text
    return loadtest._metric(text, "shax_evaluations_in_flight")


def wait_idle(url: str, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while inflight(url) != 0:
        assert time.monotonic() < deadline, "evaluations stayed in flight"
        time.sleep(0.1)


def raw_post(port: int, path: str, body: bytes, declared: int | None = None) -> None:
    """Send a POST and hang up without reading the answer (``declared`` may exceed the body)."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        head = (
            f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            f"Content-Length: {declared if declared is not None else len(body)}\r\n\r\n"
        )
        s.sendall(head.encode() + body)
        s.shutdown(socket.SHUT_RDWR)


@pytest.fixture(scope="module")
def heavy_server(tmp_path_factory):
    log = tmp_path_factory.mktemp("faults") / "server.log"
    env = {"SHAX_EVAL_THREADS": "1", "SHAX_MAX_INFLIGHT": "4", "SHAX_EVAL_TIMEOUT": "60"}
    with open(log, "w") as f, _server_with_log(env, f) as (url, pid):
        yield url, pid, log


def _server_with_log(env, logfile):
    # loadtest.server with the subprocess's stderr captured to a file
    import subprocess

    real_popen = subprocess.Popen

    def popen(*a, **k):
        k["stderr"] = logfile
        return real_popen(*a, **k)

    subprocess.Popen = popen
    try:
        return loadtest.server(env)
    finally:
        subprocess.Popen = real_popen


def test_client_disconnects_mid_request(heavy_server):
    url, pid, log = heavy_server
    port = int(url.rsplit(":", 1)[1])
    pid_h = httpx.post(f"{url}/v1/programs", json={"program": HEAVY}, timeout=60).json()["id"]
    body = orjson.dumps({"inputs": [{"data": 0.001}]})
    for _ in range(3):  # the whole request sent, then gone while it evaluates
        raw_post(port, f"/v1/programs/{pid_h}/vjp", body)
    time.sleep(0.2)
    start = time.perf_counter()
    assert httpx.get(f"{url}/v2/health/live", timeout=5).status_code == 200
    assert time.perf_counter() - start < 1.0  # the loop answers while the worker computes
    full = orjson.dumps(SIN)
    for _ in range(3):  # half a body, then gone
        raw_post(port, "/vjp", full[: len(full) // 2], declared=len(full))
    raw_post(port, "/vjp", b"", declared=10_000)
    wait_idle(url)
    r = httpx.post(f"{url}/vjp", json=SIN, timeout=30)
    assert r.status_code == 200, r.text
    metrics = httpx.get(f"{url}/metrics", timeout=5).text
    assert 'status="500"' not in metrics
    text = log.read_text()
    assert "Traceback" not in text and "unexpected error" not in text, text[-3000:]


# ---- evaluation time limit (in process) ----------------------------------------------------


@pytest.fixture
def anyio_backend():
    return "asyncio"


def _client(app):
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t")


@pytest.mark.anyio
async def test_evaluation_over_the_time_limit_is_answered_and_the_worker_recovers():
    app = create_app(Settings(eval_timeout=1.0, eval_threads=1, retry_after=3))
    state = app.state.shax
    async with app.router.lifespan_context(app), _client(app) as c:
        r = await c.post("/v1/programs", json={"program": HEAVY})
        assert r.status_code == 200, r.text
        pid = r.json()["id"]
        # compiled under the 1 s limit; now tighten it (what SHAX_EVAL_TIMEOUT sets) so that
        # the evaluation, ~10 GFLOP of matrix products, overruns it on any machine
        state.pool.timeout = 0.02
        start = time.perf_counter()
        r = await c.post(f"/v1/programs/{pid}/vjp", json={"inputs": [{"data": 0.001}]})
        elapsed = time.perf_counter() - start
        assert r.status_code == 503, r.text
        assert "longer than the 0.02 s limit" in r.json()["detail"]
        assert r.headers["Retry-After"] == "3"
        assert elapsed < 1
        assert state.pool.inflight == 1  # still running in its worker
        assert (await c.get("/v2/health/live")).status_code == 200
        for _ in range(600):  # the overrunning job finishes and frees its slot
            if state.pool.inflight == 0:
                break
            await asyncio.sleep(0.05)
        assert state.pool.inflight == 0
        state.pool.timeout = 1.0
        r = await c.post("/vjp", json=SIN)
        assert r.status_code == 200, r.text


# ---- corrupt shared-store entries ------------------------------------------------------------


def _corruptions(text: str, metadata: dict) -> dict[str, object]:
    other = "def program(a0 :: f32[]) =\n  let v0 :: f32[] = cos a0\n  in [v0]"
    return {
        "garbage text": ("\x00\xff not IR at all", metadata),
        "another program's text": (other, metadata),
        "metadata not an object": (text, ["wrt", 0]),
        "wrt out of range": (text, {**metadata, "wrt": [7]}),
        "vjp text garbage": (text, {**metadata, "vjp": "def nope("}),
        "vjp of another signature": (text, {**metadata, "vjp": other}),
        "not a pair": "just a string",
    }


SECRET = Settings(cache_secret="test-secret-0123456789")


@pytest.mark.anyio
async def test_corrupt_store_entries_are_ignored_logged_and_recompiled(caplog):
    store = MemoryStore()
    app = create_app(SECRET, store=store)
    async with app.router.lifespan_context(app), _client(app) as c:
        r = await c.post("/v1/programs", json={"program": SIN["program"]})
        assert r.status_code == 200
        pid = r.json()["id"]
        good = store.items[pid]
    for what, bad in _corruptions(*good).items():
        store.items[pid] = bad
        app = create_app(SECRET, store=store)  # a fresh replica: nothing cached locally
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="shax_server"):
            async with app.router.lifespan_context(app), _client(app) as c:
                r = await c.get(f"/v1/programs/{pid}")
                assert r.status_code in (200, 404), (what, r.text)
                r = await c.post("/vjp", json=SIN)  # compiles (or restores) and answers
                assert r.status_code == 200, (what, r.text)
                assert r.json()["outputs"][0]["data"] == [0.0]
                r = await c.get(f"/v1/programs/{pid}")
                assert r.status_code == 200, (what, r.text)
        logged = " ".join(rec.getMessage() for rec in caplog.records)
        assert "store entry" in logged, (what, logged)
        assert store.items[pid][0] == good[0], what  # overwritten with the good entry


FORGED_VJP = (  # the signature of sin's VJP, but the gradient of -cos: ct * sin a
    "def vjp(a0 :: f32[], ct0 :: f32[]) =\n  let y :: f32[] = sin a0\n"
    "      g :: f32[] = mul ct0 y\n  in [y, g]"
)


@pytest.mark.anyio
@pytest.mark.parametrize("secret", [True, False], ids=["with-secret", "without-secret"])
async def test_a_forged_store_entry_never_answers_a_wrong_gradient(secret):
    settings = SECRET if secret else Settings()
    store = MemoryStore()
    body = {"program": SIN["program"], "inputs": [{"data": 0.5}]}
    app = create_app(settings, store=store)
    async with app.router.lifespan_context(app), _client(app) as c:
        pid = (await c.post("/v1/programs", json={"program": SIN["program"]})).json()["id"]
    text, metadata = store.items[pid]
    assert ("signature" in metadata) == secret
    forged = {**metadata, "vjp": FORGED_VJP}
    variants = {"unsigned": {k: v for k, v in forged.items() if k != "signature"}}
    if secret:
        variants["old signature"] = forged  # signed for the true VJP text
        variants["signed with another key"] = {
            **forged,
            "signature": cache.sign(b"guess", pid, text, forged),
        }
    for what, bad in variants.items():
        store.items[pid] = (text, bad)
        app = create_app(settings, store=store)  # a cold replica restores from the store
        async with app.router.lifespan_context(app), _client(app) as c:
            for path in (f"/v1/programs/{pid}/vjp", "/vjp"):
                r = await c.post(path, json=body if path == "/vjp" else {"inputs": body["inputs"]})
                assert r.status_code == 200, (what, r.text)
                grad = r.json()["gradients"][0]["data"][0]
                assert grad == pytest.approx(math.cos(0.5), rel=1e-6), (what, path, grad)
            metrics = (await c.get("/metrics")).text
        reason = (
            "no-secret" if not secret else "unsigned" if what == "unsigned" else "bad-signature"
        )
        assert loadtest._metric(metrics, f'shax_store_refused_total{{reason="{reason}"}}') >= 1
        assert not loadtest._metric(metrics, "shax_store_hits_total")  # the VJP was rebuilt


# ---- issue 12: compiles outlive their request; the store is kept in step; minimize bounded ---


def _chain(n: int) -> str:
    eqns = " ".join(f"x{i + 1} = {'sin' if i % 2 else 'cos'} x{i}" for i in range(n))
    return f"def f(x0 :: f32[4]) = let {eqns} in [x{n}]"


@pytest.mark.anyio
async def test_a_compile_over_the_time_limit_is_kept_for_the_retry():
    # parsing and compiling 10,000 equations (the default limit) take about 0.25 s, five
    # times the time limit (3000 took ~0.07 s once the pipeline got lean: too close to it)
    app = create_app(Settings(eval_timeout=0.05, retry_after=1))
    state = app.state.shax
    async with app.router.lifespan_context(app), _client(app) as c:
        body = {"program": _chain(10_000)}
        r = await c.post("/v1/programs", json=body)
        assert r.status_code == 503, r.text  # the compile takes longer than 0.05 s ...
        assert "goes on" in r.json()["detail"] and r.headers["Retry-After"] == "1"
        for _ in range(600):  # ... and finishes anyway, in the cache
            r = await c.post("/v1/programs", json=body)
            if r.status_code == 200:
                break
            await asyncio.sleep(0.1)
        assert r.status_code == 200 and r.json()["cached"] is True, r.text
        metrics = (await c.get("/metrics")).text
    assert loadtest._metric(metrics, "shax_compile_duration_seconds_count") == 1  # once, kept
    assert state.pool.compiling == 0


@pytest.mark.anyio
async def test_programs_over_the_predicted_compile_cost_are_refused_first():
    app = create_app(Settings(max_equations=1000))
    async with app.router.lifespan_context(app), _client(app) as c:
        r = await c.post("/v1/programs", json={"program": _chain(1001)})
    assert r.status_code == 413 and r.json()["limit"] == "max_equations", r.text
    assert "1001 equations" in r.json()["detail"]


@pytest.mark.anyio
async def test_the_store_gets_back_what_it_lost():
    """Upload again, or a by-id hit: a program the store no longer has is written back."""
    store = MemoryStore()
    app = create_app(Settings(cache_secret="s", store_recheck_seconds=0), store=store)
    async with app.router.lifespan_context(app), _client(app) as c:
        pid = (await c.post("/v1/programs", json={"program": SIN["program"]})).json()["id"]
        for trigger in ("upload", "by-id hit"):
            store.items.clear()  # a Redis restart, an eviction, a deleted corrupt entry
            if trigger == "upload":
                r = await c.post("/v1/programs", json={"program": SIN["program"]})
            else:
                r = await c.post(f"/v1/programs/{pid}/vjp", json={"inputs": SIN["inputs"]})
            assert r.status_code == 200, r.text
            for _ in range(100):
                if pid in store.items:
                    break
                await asyncio.sleep(0.01)
            assert pid in store.items, trigger
            assert "signature" in store.items[pid][1]
        metrics = (await c.get("/metrics")).text
    assert loadtest._metric(metrics, "shax_store_republished_total") == 2


@pytest.mark.anyio
async def test_minimize_is_bounded_in_time():
    app = create_app(Settings(minimize_seconds=0.3))
    async with app.router.lifespan_context(app), _client(app) as c:
        prog = "def f(a :: f32[]) = let y = mul a a in [y]"
        pid = (await c.post("/v1/programs", json={"program": prog})).json()["id"]
        body = {"x0": [{"data": 3.0}], "steps": 100000, "lr": 1e-6, "every": 1000}
        r = await c.post(f"/v1/programs/{pid}/minimize", json=body, timeout=60)
    lines = [orjson.loads(x) for x in r.content.splitlines()]
    last = lines[-1]
    assert "error" in last and last["error"]["limit"] == "minimize_seconds", last
    assert "continue from the last params" in last["error"]["detail"]
    assert all("done" not in x for x in lines)
