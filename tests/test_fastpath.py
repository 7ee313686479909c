"""The cached-call fast path answers exactly as the FastAPI app does.

Two real ``shax serve`` processes on 127.0.0.1 with the same settings (API keys, small body and
output limits), one with the fast path and one without (``SHAX_FAST_PATH=false``), get the same
sequence of requests: cached by-id VJP and OIP infer calls (good ones, and ones that the rules
refuse: no key, wrong key, over the body limit declared or streamed, over the program's body
budget, over ``max_output_bytes``, bad tensors, bad JSON, an unknown encoding) and calls that
are not eligible (a program that is not cached, another method). Every answer must be the same
byte for byte, headers included (the date aside), and so must the request metrics afterwards;
the fast path's own counter says it answered the eligible calls and only those.
"""

from __future__ import annotations

import asyncio
import gzip
import http.client
import logging
import re
from urllib.parse import urlsplit

import httpx
import numpy as np
import orjson
import pytest
from shax_server import Settings, body, create_app
from shax_server.problems import Problem
from shax_server.store import MemoryStore
from starlette.requests import Request

import shax_core as sx
from shax_core.demo import SEED_A, SEED_B, medium
from tests.servers import free_port, shax_process

KEY = "fast-path-key-0123456789"
LIMITS = {
    "SHAX_API_KEYS": KEY,
    "SHAX_MAX_BODY_BYTES": "4000000",
    "SHAX_MAX_OUTPUT_BYTES": "2000000",
    "SHAX_BODY_BYTES_PER_ELEMENT": "64",
}
W1 = sx.print_program(sx.trace(medium, SEED_A, SEED_B))
# 4.8 MB of JSON out (over max_output_bytes), 1.2 MB as binary (under it, and streamed)
N_WIDE = 300_000
WIDE = f"def wide(a :: f32[]) = let y = broadcast [] [{N_WIDE}] a in [y]"
W1_BODY = {
    "inputs": [{"data": [1, 2, 3, 4, 5, 6]}, {"data": [[1, 2], [3, 4]]}],
    "cotangents": [{"data": [5, 9]}],
}
W1_ARRAYS = (
    np.arange(1, 7, dtype="f4"),
    np.arange(1, 5, dtype="f4").reshape(2, 2),
    np.array([5, 9], dtype="f4"),
)
AUTH = {"X-API-Key": KEY}


@pytest.fixture(scope="module")
def servers():
    """(fast, plain) base URLs, each with W1 compiled (also as model ``w1``) and ``wide``."""
    with (
        shax_process(free_port(), LIMITS, inherit_shax=False) as (fast, _),
        shax_process(free_port(), {**LIMITS, "SHAX_FAST_PATH": "false"}, inherit_shax=False) as (
            plain,
            _,
        ),
    ):
        ids = []
        for url in (fast, plain):
            for doc in ({"program": W1, "name": "w1"}, {"program": WIDE}):
                status, body, _ = call(url, "POST", "/v1/programs", orjson.dumps(doc), AUTH)
                assert status == 200, body
                ids.append(orjson.loads(body)["id"])
        assert ids[:2] == ids[2:]  # content ids: the same programs on both
        yield fast, plain, ids[0], ids[1]


def call(url: str, method: str, path: str, body=b"", headers=None, chunked=False):
    """(status, body, headers without Date) of one request on a fresh connection."""
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
    try:
        conn.putrequest(method, path)
        for k, v in (headers or {}).items():
            conn.putheader(k, v)
        if chunked:
            conn.putheader("Transfer-Encoding", "chunked")
        elif "Content-Length" not in (headers or {}) and method != "GET":
            conn.putheader("Content-Length", str(len(body)))
        conn.endheaders()
        if chunked:
            for i in range(0, len(body), 65536):
                piece = body[i : i + 65536]
                conn.send(f"{len(piece):x}\r\n".encode() + piece + b"\r\n")
            conn.send(b"0\r\n\r\n")
        elif body:
            try:
                conn.send(body)
            except OSError:
                pass  # refused from its headers: the answer is already on its way
        r = conn.getresponse()
        return (
            r.status,
            r.read(),
            [(k.lower(), v) for k, v in r.getheaders() if k.lower() != "date"],
        )
    finally:
        conn.close()


def metrics(url: str) -> dict[str, str]:
    """The request, cache and inference series of ``/metrics`` (latency sums aside)."""
    status, body, _ = call(url, "GET", "/metrics", headers=AUTH)
    assert status == 200
    keep = (
        "shax_requests_total",
        "shax_request_duration_seconds_count",
        "shax_cache_hits_total",
        "shax_cache_misses_total",
        "shax_fast_path_requests_total",
        "nv_inference_request_success",
        "nv_inference_request_failure",
        "nv_inference_count",
    )
    out = {}
    for line in body.decode().splitlines():
        if line.startswith(keep):
            series, value = line.rsplit(" ", 1)
            out[series] = value
    return out


def requests(vjp_id: str, wide_id: str) -> list[tuple[str, tuple, bool]]:
    """(what, call arguments, whether the fast path may answer it)."""
    vjp = f"/v1/programs/{vjp_id}/vjp"
    wide = f"/v1/programs/{wide_id}/vjp"
    body = orjson.dumps(W1_BODY)
    json_h = {"Content-Type": "application/json", "X-Request-ID": "rid-1", **AUTH}
    header = orjson.dumps(
        {
            "inputs": [
                {"parameters": {"binary_data_size": 24}},
                {"parameters": {"binary_data_size": 16}},
            ],
            "cotangents": [{"parameters": {"binary_data_size": 8}}],
            "binary_data_output": True,
        }
    )
    raw = b"".join(a.astype("<f4").tobytes() for a in W1_ARRAYS)  # W1_BODY's numbers
    binary_h = {
        **json_h,
        "Content-Type": "application/octet-stream",
        "Inference-Header-Content-Length": str(len(header)),
    }
    infer_body = orjson.dumps(
        {
            "id": "req-9",
            "inputs": [
                {"name": "arg0", "datatype": "FP32", "shape": [6], "data": [1, 2, 3, 4, 5, 6]},
                {"name": "arg1", "datatype": "FP32", "shape": [2, 2], "data": [1, 2, 3, 4]},
                {"name": "ct0", "datatype": "FP32", "shape": [2], "data": [5, 9]},
            ],
        }
    )
    bad_infer = orjson.dumps(
        {"inputs": [{"name": "nope", "datatype": "FP32", "shape": [6], "data": [1] * 6}]}
    )
    cotangent = np.linspace(-1, 1, N_WIDE, dtype="<f4").tobytes()
    wide_header = {
        "inputs": [{"data": 0.5}],
        "cotangents": [{"parameters": {"binary_data_size": len(cotangent)}}],
    }
    wide_json_out = orjson.dumps(wide_header)
    wide_binary_out = orjson.dumps({**wide_header, "binary_data_output": True})

    def framed(header: bytes) -> tuple[bytes, dict]:
        return header + cotangent, {**binary_h, "Inference-Header-Content-Length": str(len(header))}

    no_id = {k: v for k, v in json_h.items() if k != "X-Request-ID"}
    return [
        ("json", ("POST", vjp, body, json_h), True),
        ("no request id", ("POST", vjp, body, no_id), True),
        ("bearer", ("POST", vjp, body, {"Authorization": f"Bearer {KEY}"}), True),
        ("no key", ("POST", vjp, body, {"Content-Type": "application/json"}), True),
        ("wrong key", ("POST", vjp, body, {**json_h, "X-API-Key": "nope"}), True),
        ("binary", ("POST", vjp, header + raw, binary_h), True),
        ("gzip", ("POST", vjp, gzip.compress(body), {**json_h, "Content-Encoding": "gzip"}), True),
        ("unknown encoding", ("POST", vjp, body, {**json_h, "Content-Encoding": "br"}), True),
        ("text/plain", ("POST", vjp, body, {**json_h, "Content-Type": "text/plain"}), True),
        ("chunked", ("POST", vjp, body, json_h, True), True),
        (
            "declared over max_body_bytes",
            ("POST", vjp, b"", {**json_h, "Content-Length": "4000001"}),
            True,
        ),
        ("over the program's budget", ("POST", vjp, b" " * 200_000, json_h), True),
        ("streamed over the budget", ("POST", vjp, b" " * 200_000, json_h, True), True),
        ("bad JSON", ("POST", vjp, b'{"inputs": [', json_h), True),
        ("not an object", ("POST", vjp, b"[1, 2]", json_h), True),
        ("no inputs", ("POST", vjp, b"{}", json_h), True),
        (
            "wrong shape",
            ("POST", vjp, orjson.dumps({**W1_BODY, "inputs": [{"data": [1, 2]}, {}]}), json_h),
            True,
        ),
        (
            "bad flag",
            ("POST", vjp, orjson.dumps({**W1_BODY, "binary_data_output": "yes"}), json_h),
            True,
        ),
        ("over max_output_bytes", ("POST", wide, *framed(wide_json_out)), True),
        ("binary under max_output_bytes", ("POST", wide, *framed(wide_binary_out)), True),
        ("infer by name", ("POST", "/v2/models/w1/infer", infer_body, json_h), True),
        ("infer by version", ("POST", "/v2/models/w1/versions/1/infer", infer_body, json_h), True),
        ("infer by id", ("POST", f"/v2/models/{vjp_id}/infer", infer_body, json_h), True),
        ("infer bad input", ("POST", "/v2/models/w1/infer", bad_infer, json_h), True),
        ("infer no key", ("POST", "/v2/models/w1/infer", infer_body, {}), True),
        # not eligible: the app answers
        ("not cached", ("POST", "/v1/programs/" + "0" * 64 + "/vjp", body, json_h), False),
        ("no such model", ("POST", "/v2/models/nope/infer", infer_body, json_h), False),
        ("no such version", ("POST", "/v2/models/w1/versions/7/infer", infer_body, json_h), False),
        ("GET", ("GET", vjp, b"", json_h), False),
        ("trailing slash", ("POST", vjp + "/", body, json_h), False),
        ("inline /vjp", ("POST", "/vjp", orjson.dumps({"id": vjp_id, **W1_BODY}), json_h), False),
    ]


def _same_id_rule(headers: list, url: str) -> list:
    """Headers with a generated request id replaced by a marker (after checking its form), and
    the server's own address (a redirect's location) by another."""
    out = []
    for k, v in headers:
        v = v.replace(url, "<server>")
        if k == "x-request-id" and v != "rid-1":
            assert re.fullmatch(r"[0-9a-f]{32}", v), v
            v = "<generated>"
        out.append((k, v))
    return out


def test_fast_path_answers_exactly_as_the_app(servers):
    fast, plain, vjp_id, wide_id = servers
    before = metrics(fast)
    metrics(plain)  # the same requests on both servers, scrapes included
    cases = requests(vjp_id, wide_id)
    answers = {}
    for what, args, _ in cases:
        a = call(fast, *args)
        b = call(plain, *args)
        assert a[0] == b[0], (what, a, b)
        assert a[1] == b[1], (what, a[1][:300], b[1][:300])
        assert _same_id_rule(a[2], fast) == _same_id_rule(b[2], plain), (what, a[2], b[2])
        answers[what] = a

    # what the answers are (the same on both servers, checked above)
    def problem(what: str) -> dict:
        status, body, headers = answers[what]
        assert dict(headers)["content-type"] == "application/problem+json", what
        return orjson.loads(body)

    assert answers["json"][0] == 200 and dict(answers["json"][2])["x-request-id"] == "rid-1"
    out = orjson.loads(answers["json"][1])
    ref = sx.compile(sx.vjp_program(sx.parse(W1)))(*W1_ARRAYS)
    for i, (name, want) in enumerate(zip(("arg0", "arg1"), ref[1:], strict=True)):
        gradient = out["gradients"][i]
        assert gradient["name"] == f"grad_{name}"
        assert np.allclose(np.asarray(gradient["data"], "f4"), np.ravel(want), rtol=1e-5)
    for what in ("bearer", "binary", "gzip", "text/plain", "chunked", "infer by name"):
        assert answers[what][0] == 200, (what, answers[what][1][:300])
    assert dict(answers["binary"][2])["content-type"] == "application/octet-stream"
    status, out, headers = answers["binary under max_output_bytes"]  # streamed, 1.2 MB
    assert status == 200 and len(out) > N_WIDE * 4
    assert int(dict(headers)["content-length"]) == len(out)
    for what in ("no key", "wrong key", "infer no key"):
        assert answers[what][0] == 401 and problem(what)["type"].endswith("unauthorized")
        assert "www-authenticate" in dict(answers[what][2])
    assert problem("declared over max_body_bytes")["limit"] == "max_body_bytes"
    assert problem("over the program's budget")["limit"] == "body_bytes_per_element"
    assert problem("streamed over the budget")["limit"] == "body_bytes_per_element"
    for what in ("declared over max_body_bytes", "over the program's budget"):
        assert answers[what][0] == 413 and dict(answers[what][2])["connection"] == "close"
    assert answers["over max_output_bytes"][0] == 413
    assert problem("over max_output_bytes")["limit"] == "max_output_bytes"
    assert answers["unknown encoding"][0] == 415
    assert answers["bad JSON"][0] == 400 and answers["not an object"][0] == 400
    assert "'inputs'" in problem("no inputs")["detail"]
    assert problem("wrong shape")["tensor"] == "arg0"
    assert "binary_data_output" in problem("bad flag")["detail"]
    assert "nope" in problem("infer bad input")["detail"]
    assert answers["not cached"][0] == 404 and answers["GET"][0] == 405

    # the metrics saw the same requests, by route template and status, on both servers
    after_fast, after_plain = metrics(fast), metrics(plain)
    key = "shax_fast_path_requests_total"
    taken = sum(eligible for _, _, eligible in cases)
    assert float(after_fast[key]) - float(before.get(key, 0)) == taken
    assert key not in after_plain
    del after_fast[key]
    assert after_fast == after_plain
    route = 'shax_requests_total{route="/v1/programs/{program_id}/vjp",status="200"}'
    assert float(after_fast[route]) >= 6
    assert 'shax_requests_total{route="unmatched",status="401"}' in after_fast


def test_a_program_compiled_after_start_takes_the_fast_path_once_cached(servers):
    fast, _, _, _ = servers
    text = "def later(a :: f32[3]) = let y = sin a in [y]"
    body = orjson.dumps(
        {"inputs": [{"data": [0.0, 0.5, 1.0]}], "cotangents": [{"data": [1, 1, 1]}]}
    )
    counter = "shax_fast_path_requests_total"
    status, out, _ = call(fast, "POST", "/v1/programs", orjson.dumps({"program": text}), AUTH)
    assert status == 200
    path = f"/v1/programs/{orjson.loads(out)['id']}/vjp"
    before = float(metrics(fast)[counter])
    status, out, _ = call(fast, "POST", path, body, AUTH)
    assert status == 200
    grads = orjson.loads(out)["gradients"][0]["data"]
    assert grads == pytest.approx([1.0, 0.8775825618903728, 0.5403023058681398], rel=1e-6)
    assert float(metrics(fast)[counter]) == before + 1


@pytest.mark.anyio
async def test_log_records_made_on_the_fast_path_carry_the_request_id(caplog):
    """A warning logged while the fast path serves a call (the shared store failing its
    background check, in a worker thread) names the call's request id."""

    class FailingStore(MemoryStore):
        def exists(self, key: str) -> bool:
            raise ConnectionError("the store is down")

    app = create_app(Settings(store_recheck_seconds=0), store=FailingStore())
    transport = httpx.ASGITransport(app=app)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://t") as c,
    ):
        r = await c.post("/v1/programs", json={"program": W1})
        path = f"/v1/programs/{r.json()['id']}/vjp"
        with caplog.at_level(logging.WARNING, logger="shax_server"):
            r = await c.post(path, json=W1_BODY, headers={"X-Request-ID": "trace-fast"})
            await asyncio.gather(*app.state.shax.cache.tasks)
    assert r.status_code == 200 and r.headers["X-Request-ID"] == "trace-fast"
    assert app.state.shax.metrics.fast_path.values[()] == 1  # the fast path answered it
    records = [rec for rec in caplog.records if "exists" in rec.getMessage()]
    assert records and all(rec.request_id == "trace-fast" for rec in records)


class _Receiver:
    """An ASGI receive: each message after ``delay`` seconds (0: at once, without waiting;
    None: never)."""

    def __init__(self, messages: list[dict], delay: float | None):
        self.messages, self.delay = list(messages), delay

    async def __call__(self) -> dict:
        if self.delay is None:
            await asyncio.Event().wait()
        if self.delay:
            await asyncio.sleep(self.delay)
        return self.messages.pop(0)


def _request(receive) -> Request:
    return Request({"type": "http", "method": "POST", "path": "/", "headers": []}, receive)


@pytest.mark.anyio
async def test_the_body_reader_waits_for_chunks_under_its_deadlines():
    """Chunks that are already there are taken at once; chunks that come later are waited for
    (within body_timeout); a body that stops is answered 408; a cancellation from outside (the
    client left, the server stops) stays a cancellation."""
    settings = Settings(body_timeout=0.3, upload_timeout=5)
    chunks = [
        {"type": "http.request", "body": b'{"a": ', "more_body": True},
        {"type": "http.request", "body": b"1}", "more_body": False},
    ]
    for delay in (0, 0.05):
        got = await body.receive(_request(_Receiver(chunks, delay)), settings, 100)
        assert got == b'{"a": 1}', delay
    with pytest.raises(Problem) as refused:
        await body.receive(_request(_Receiver(chunks, None)), settings, 100)
    assert refused.value.status == 408 and "SHAX_BODY_TIMEOUT" in refused.value.detail
    reading = asyncio.ensure_future(body.receive(_request(_Receiver(chunks, None)), settings, 100))
    await asyncio.sleep(0.05)
    reading.cancel()
    with pytest.raises(asyncio.CancelledError):
        await reading
    loop = asyncio.get_running_loop()

    def future_receive():  # an ASGI receive may return any awaitable, not only a coroutine
        message = loop.create_future()
        message.set_result({"type": "http.request", "body": b"{}", "more_body": False})
        return message

    assert await body.receive(_request(future_receive), settings, 100) == b"{}"
    slow = Settings(body_timeout=0.2, upload_timeout=0.3)  # each pause allowed, not the sum
    many = [{"type": "http.request", "body": b" ", "more_body": True}] * 5 + chunks
    with pytest.raises(Problem) as refused:
        await body.receive(_request(_Receiver(many, 0.1)), slow, 100)
    assert refused.value.status == 408
