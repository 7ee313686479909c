"""SDK robustness: retries with backoff, eviction recovery, timeouts, typed errors."""

from __future__ import annotations

import warnings
from pathlib import Path

import httpx
import numpy as np
import pytest
from shax_client import AsyncClient, Client, errors
from shax_client._base import MinimizeReader, RetryPolicy
from shax_client.errors import error_from_problem

import shax_core.numpy as snp
from shax_core import ShaxError

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # Starlette deprecates TestClient over httpx
    from fastapi.testclient import TestClient

from shax_server.app import create_app
from shax_server.settings import Settings

from tests.seed_numbers import SEED_VALUES
from tests.servers import free_port, shax_server

ROOT = Path(__file__).parent.parent
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def f(x, y):
    z = x + y
    return snp.sin(z) * snp.cos(z)


F0 = np.float32(SEED_VALUES[0])


@pytest.fixture
def anyio_backend():
    return "asyncio"


def busy(retry_after: str = "0") -> httpx.Response:
    problem = {
        "type": "urn:shax:problem:busy",
        "title": "Service busy",
        "status": 503,
        "detail": "8 evaluations are in flight",
        "error": "8 evaluations are in flight",
    }
    return httpx.Response(503, json=problem, headers={"Retry-After": retry_after})


# ---------------------------------------------------------------------------------------------
# retries


def test_retries_503_then_succeeds_sync():
    app = create_app()
    calls: list[str] = []
    with TestClient(app) as tc:

        def handler(request: httpx.Request) -> httpx.Response:
            calls.append(request.url.path)
            if len(calls) in (1, 2, 4):  # compile twice busy, then the vjp once
                return busy()
            r = tc.send(request)
            return httpx.Response(r.status_code, headers=r.headers, content=r.content)

        transport = httpx.MockTransport(handler)
        with Client("http://testserver", transport=transport, backoff=0.001) as client:
            value, grads = client.value_and_grad(f, argnums=(0, 1))(0.5, -0.75)
    assert value == F0 and len(grads) == 2
    assert calls[:3] == ["/v1/programs"] * 3 and len(calls) == 5


@pytest.mark.anyio
async def test_retries_503_then_succeeds_async():
    app = create_app()
    calls: list[str] = []
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app)) as inner:

        async def handler(request: httpx.Request) -> httpx.Response:
            calls.append(request.url.path)
            if len(calls) <= 2:
                return busy()
            r = await inner.send(request)
            return httpx.Response(r.status_code, headers=r.headers, content=r.content)

        transport = httpx.MockTransport(handler)
        async with AsyncClient("http://test", transport=transport, backoff=0.001) as client:
            assert await client.value_and_grad(f)(0.5, -0.75) is not None
    assert len(calls) == 4


def test_retries_are_bounded_and_carry_the_problem():
    calls = []

    def handler(request):
        calls.append(request)
        return busy(retry_after="0")

    with Client("http://x", transport=httpx.MockTransport(handler), retries=2) as client:
        with pytest.raises(errors.Unavailable) as info:
            client.compile(f, 0.5, -0.75)
    assert len(calls) == 3  # one try and two retries
    assert info.value.status == 503 and info.value.kind == "busy"
    assert info.value.retry_after == 0.0 and "in flight" in info.value.detail


def test_non_idempotent_calls_are_not_retried():
    calls = []

    def handler(request):
        calls.append(request)
        return busy()

    with Client("http://x", transport=httpx.MockTransport(handler)) as client:
        with pytest.raises(errors.Unavailable):
            client.request("POST", "/v1/programs/abc/vjp", {"inputs": []})
    assert len(calls) == 1


def test_connection_errors_are_retried_then_mapped():
    calls = []

    def flaky(request):
        calls.append(request)
        if len(calls) == 1:
            raise httpx.ConnectError("connection refused", request=request)
        return httpx.Response(200, json={"id": "abc", "cached": False, "signature": {}})

    with Client("http://x", transport=httpx.MockTransport(flaky), backoff=0.001) as client:
        assert client.compile(f, 0.5, -0.75).id == "abc"
    assert len(calls) == 2

    port = free_port()  # nothing listens there
    with Client(f"http://127.0.0.1:{port}", retries=1, backoff=0.001) as client:
        with pytest.raises(errors.ConnectionFailed) as info:
            client.compile(f, 0.5, -0.75)
    assert isinstance(info.value.__cause__, httpx.ConnectError)
    assert isinstance(info.value, errors.Unavailable)


def test_read_timeout_is_not_retried():
    calls = []

    def slow(request):
        calls.append(request)
        raise httpx.ReadTimeout("timed out", request=request)

    with Client("http://x", transport=httpx.MockTransport(slow), timeout=0.1) as client:
        with pytest.raises(errors.Timeout):
            client.compile(f, 0.5, -0.75)
    assert len(calls) == 1


def test_backoff_policy():
    policy = RetryPolicy(retries=5, backoff=0.1, max_backoff=1.0)
    assert [policy.delay(k) for k in range(5)] == [0.1, 0.2, 0.4, 0.8, 1.0]
    assert policy.delay(0, retry_after="0.5") == 0.5
    assert policy.delay(0, retry_after="120") == 1.0  # capped
    assert policy.delay(2, retry_after="soon") == 0.4  # unparseable: exponential


# ---------------------------------------------------------------------------------------------
# eviction: the server forgot the id


def test_reupload_after_cache_eviction_in_process():
    app = create_app()
    with TestClient(app) as tc, Client("http://testserver", http=tc) as client:
        df = client.grad(f, argnums=(0, 1))
        first = df(0.5, -0.75)
        cache = app.state.shax.cache
        cache.entries.clear()
        cache.bytes = 0
        assert df(0.5, -0.75) == first
        assert client.uploads == 2
        rf = client.compile(f, 0.5, -0.75, wrt=(0, 1))
        cache.entries.clear()
        cache.bytes = 0
        assert set(rf.stages()) >= {"vjp"}  # GET re-uploads too
        assert client.uploads == 3


def test_reupload_after_server_restart():
    port = free_port()
    with Client(f"http://127.0.0.1:{port}", backoff=0.05) as client:
        with shax_server(port):
            rf = client.compile(f, 0.5, -0.75)
            before = rf.vjp(0.5, -0.75)
        with shax_server(port):  # a fresh process: empty cache, and the old connection is gone
            after = rf.vjp(0.5, -0.75)
            result = client.minimize(f, (0.5, -0.75), progress=False)  # memoised: no upload
    assert after[0] == before[0] == F0 and after[1] == before[1]
    assert client.uploads == 2
    assert result.value == np.float32(-0.5)


# ---------------------------------------------------------------------------------------------
# error mapping


@pytest.mark.parametrize(
    ("status", "kind", "cls"),
    [
        (400, "parse-error", errors.ProgramError),
        (400, "type-error", errors.ProgramError),
        (400, "graph-error", errors.ProgramError),
        (400, "differentiation-error", errors.ProgramError),
        (400, "tensor-error", errors.InvalidTensor),
        (400, "invalid-request", errors.InvalidRequest),
        (401, "unauthorized", errors.AuthError),
        (404, "not-found", errors.NotFound),
        (413, "limit-exceeded", errors.LimitExceeded),
        (500, None, errors.ServerError),
        (503, "busy", errors.Unavailable),
    ],
)
def test_error_classes(status, kind, cls):
    problem = {"title": "t", "status": status, "detail": "what went wrong"}
    if kind:
        problem["type"] = f"urn:shax:problem:{kind}"
    exc = error_from_problem(status, problem)
    assert type(exc) is cls and isinstance(exc, errors.ShaxClientError)
    assert exc.status == status and exc.problem == problem and "what went wrong" in str(exc)


def test_error_mapping_from_a_real_app():
    app = create_app(Settings(max_equations=50))
    with TestClient(app) as tc, Client("http://testserver", http=tc) as client:
        with pytest.raises(errors.ProgramError) as info:
            client.compile("def g(a :: f32[3]) =\n  let x = sin\n  in [x]")
        assert (info.value.line, info.value.column) == (2, 11)
        assert info.value.kind == "parse-error"

        with pytest.raises(errors.ProgramError) as info:
            client.compile("def g(a :: f32[3], b :: f32[2]) = let x = add a b in [x]")
        assert info.value.kind == "type-error" and info.value.equation.startswith("x = add")

        rf = client.compile(f, 0.5, -0.75)
        with pytest.raises(errors.InvalidTensor) as info:
            rf(np.zeros(3), 1.0)
        assert (
            info.value.tensor == "x" and "expected shape []" in info.value.detail
        )  # f(x, y): the user's name

        with pytest.raises(errors.InvalidRequest, match="optimizer"):
            rf.minimize((0.5, -0.75), optimizer="newton", progress=False)

        with pytest.raises(errors.InvalidRequest, match="optimizer"):  # not a name at all
            client.request(
                "POST", f"/v1/programs/{rf.id}/minimize", {"x0": [], "optimizer": ["gd"]}
            )

        with pytest.raises(errors.NotFound):
            client.request("GET", "/v1/programs/" + "0" * 64)

        def long(x):
            for _ in range(60):
                x = snp.sin(x)
            return x

        with pytest.raises(errors.LimitExceeded) as info:
            client.compile(long, 0.5)
        assert info.value.limit == "max_equations"

        with pytest.raises(ShaxError, match="scalar"):  # local check, before any request
            client.compile(lambda x: x * 2.0, np.zeros(3, np.float32)).grad(np.ones(3))


def test_api_keys():
    app = create_app(Settings(api_keys="sesame"))
    with TestClient(app) as tc:
        with Client("http://testserver", http=tc) as client:
            with pytest.raises(errors.AuthError) as info:
                client.compile(f, 0.5, -0.75)
            assert info.value.status == 401
        with Client("http://testserver", http=tc, api_key="sesame") as client:
            assert client.grad(f)(0.5, -0.75).dtype == np.float32


def test_minimize_stream_error_line_is_typed():
    reader = MinimizeReader()
    assert reader.feed(b'{"step": 1, "value": -0.25, "params": []}').value == np.float32(-0.25)
    line = b'{"error": {"status": 503, "title": "Service busy", "detail": "busy", "type": "urn:shax:problem:busy"}}'  # noqa: E501
    with pytest.raises(errors.Unavailable):
        reader.feed(line)
    with pytest.raises(errors.ShaxClientError, match="ended before"):
        MinimizeReader().finish()
