"""The SDK reproduces the seed through a server: sync and async, in-process and real uvicorn.

In-process: the sync client talks to the app through Starlette's TestClient (an httpx.Client),
the async one through ``httpx.ASGITransport``. Real: the session's uvicorn (``server_url`` from
conftest.py).
"""

from __future__ import annotations

import subprocess
import sys
import warnings
from pathlib import Path

import httpx
import numpy as np
import pytest
from shax_client import AsyncClient, Client

import shax_core.numpy as snp
from shax_core.wire import HEADER_LENGTH

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # Starlette deprecates TestClient over httpx
    from fastapi.testclient import TestClient

from shax_server.app import create_app

from shax_core.demo import f, medium
from tests.seed_numbers import DF, DFT0, DFT1, SEED_A, SEED_B, SEED_CT, SEED_MIN, SEED_VALUES, F

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

A0, A1, CT = SEED_A, SEED_B, SEED_CT
STAGES = {"typed", "rewritten", "linearized", "linear", "transposed", "vjp"}


def close(a, b):
    np.testing.assert_allclose(a, b, rtol=2e-6, atol=2e-5)


@pytest.fixture
def app():
    return create_app()


@pytest.fixture
def sync_client(app):
    with TestClient(app) as tc, Client("http://testserver", http=tc) as client:
        yield client


@pytest.fixture
def anyio_backend():
    return "asyncio"


def async_client(app) -> AsyncClient:
    return AsyncClient("http://test", transport=httpx.ASGITransport(app=app))


# ---------------------------------------------------------------------------------------------
# the seed's checks, written once for both clients


def check_medium_sync(client: Client) -> None:
    rf = client.compile(medium, A0, A1)
    assert rf.id and rf.signature["wrt"] == [0, 1]
    out = rf(A0, A1)
    assert out.dtype == np.float32 and out.shape == (2,)
    close(out, F)
    outs, (g0, g1) = rf.vjp(A0, A1, cotangents=CT)
    close(outs, F)
    close(g0, DFT0)
    close(g1, DFT1)
    assert g0.dtype == g1.dtype == np.float32 and g1.shape == (2, 2)
    value, tangent = rf.jvp((A0, A1), (A0, A1))
    close(value, F)
    close(tangent, DF)
    assert STAGES <= set(rf.stages())


def check_gradient_descent_sync(client: Client) -> None:
    value, grads = client.value_and_grad(f, argnums=(0, 1))(0.5, -0.75)
    assert value.dtype == np.float32 and value == np.float32(SEED_VALUES[0])
    assert len(grads) == 2 and grads[0] == grads[1]
    assert client.grad(f)(0.5, -0.75).shape == ()
    result = client.minimize(f, (0.5, -0.75), steps=40, lr=0.05, progress=False)
    check_trajectory(result)


def check_trajectory(result) -> None:
    # the first points exactly; later ones may differ from the seed's libm by an ulp
    assert [float(v) for v in result.values[:3]] == [float(np.float32(v)) for v in SEED_VALUES[:3]]
    np.testing.assert_allclose(result.values, SEED_VALUES, rtol=1e-6)
    assert len(result.trajectory) == 40 and result.trajectory[0].step == 1
    assert tuple(result.params) == SEED_MIN
    assert result.params[0].dtype == np.float32
    assert result.value == np.float32(-0.5)
    assert result.trajectory[-1].value == np.float32(-0.5)


async def check_medium_async(client: AsyncClient) -> None:
    rf = await client.compile(medium, A0, A1)
    close(await rf(A0, A1), F)
    outs, (g0, g1) = await rf.vjp(A0, A1, cotangents=[CT])
    close(outs, F)
    close(g0, DFT0)
    close(g1, DFT1)
    _, tangent = await rf.jvp((A0, A1), (A0, A1))
    close(tangent, DF)
    assert STAGES <= set(await rf.stages())


async def check_gradient_descent_async(client: AsyncClient) -> None:
    value, grads = await client.value_and_grad(f, argnums=(0, 1))(0.5, -0.75)
    assert value == np.float32(SEED_VALUES[0]) and len(grads) == 2
    assert (await client.grad(f)(0.5, -0.75)).shape == ()
    check_trajectory(await client.minimize(f, (0.5, -0.75), progress=False))


async def check_seed_async(client: AsyncClient) -> None:
    await check_medium_async(client)
    await check_gradient_descent_async(client)


# ---------------------------------------------------------------------------------------------
# in-process


def test_seed_medium_sync_in_process(sync_client):
    check_medium_sync(sync_client)


def test_seed_gradient_descent_sync_in_process(sync_client):
    check_gradient_descent_sync(sync_client)


@pytest.mark.anyio
async def test_seed_async_in_process(app):
    async with async_client(app) as client:
        await check_seed_async(client)


# ---------------------------------------------------------------------------------------------
# real uvicorn on 127.0.0.1


def test_seed_sync_real_server(server_url):
    with Client(server_url) as client:
        check_medium_sync(client)
        check_gradient_descent_sync(client)


@pytest.mark.anyio
async def test_seed_async_real_server(server_url):
    async with AsyncClient(server_url) as client:
        await check_seed_async(client)


# ---------------------------------------------------------------------------------------------
# memoised upload


def count_requests(tc: TestClient) -> list[httpx.Request]:
    seen: list[httpx.Request] = []
    tc.event_hooks = {"request": [seen.append], "response": []}
    return seen


def uploads(seen) -> int:
    return sum(1 for r in seen if r.method == "POST" and r.url.path == "/v1/programs")


def test_upload_is_memoised_per_function_and_signature(app):
    with TestClient(app) as tc, Client("http://testserver", http=tc) as client:
        seen = count_requests(tc)
        df = client.grad(f, argnums=(0, 1))
        for x in (0.5, 0.25, -1.0):
            df(x, -0.75)
        client.compile(f, 0.5, -0.75, wrt=(0, 1))  # the same signature: no upload
        assert uploads(seen) == 1 and client.uploads == 1
        client.compile(f, np.float64(0.5), np.float64(-0.75))  # f64: a new signature
        assert uploads(seen) == 2
        client.compile(f, np.zeros(3, np.float32), np.zeros(3, np.float32))  # new shapes
        assert uploads(seen) == 3

        def g(a, b):  # another function, same program: uploaded, but the server has it
            z = a + b
            return snp.sin(z) * snp.cos(z)

        rf_f, rf_g = client.compile(f, 1.0, 2.0, wrt=(0, 1)), client.compile(g, 1.0, 2.0)
        assert uploads(seen) == 4
        assert rf_g.id == rf_f.id and rf_g._entry.cached is True


# ---------------------------------------------------------------------------------------------
# binary encoding above the threshold, both directions


def test_binary_threshold_both_directions(app):
    def h(x):
        return snp.sin(x) * 2.0

    small = np.linspace(0, 1, 8, dtype=np.float32)
    big = np.linspace(0, 1, 50_000, dtype=np.float32)  # 200 kB > 64 KiB default threshold
    with TestClient(app) as tc, Client("http://testserver", http=tc) as client:
        exchanged: list[tuple[httpx.Request, httpx.Response]] = []
        tc.event_hooks = {"request": [], "response": [lambda r: exchanged.append((r.request, r))]}

        for x, binary in ((small, False), (big, True)):
            exchanged.clear()
            out, (g,) = client.compile(h, x).vjp(x, cotangents=np.ones_like(x))
            close(out, np.sin(x) * 2)
            close(g, np.cos(x) * 2)
            request, response = exchanged[-1]
            assert request.url.path.endswith("/vjp")
            assert (HEADER_LENGTH.lower() in request.headers) is binary
            assert (HEADER_LENGTH.lower() in response.headers) is binary

    # the threshold is a setting: 0 sends even a scalar as binary
    with TestClient(app) as tc, Client("http://testserver", http=tc, binary_threshold=0) as client:
        tc.event_hooks = {"request": [], "response": [lambda r: exchanged.append((r.request, r))]}
        exchanged.clear()
        assert client.compile(h, small)(small).dtype == np.float32
        request, response = exchanged[-1]
        assert HEADER_LENGTH.lower() in request.headers
        assert HEADER_LENGTH.lower() in response.headers


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_arrays_in_and_out(sync_client):
    def h(x, y):
        return x * y, snp.log(x)

    rf = sync_client.compile(h, np.zeros(3, np.float64), 2.0)
    x = np.array([1.0, -1.0, 0.0])
    prod, logx = rf(x, 3)  # a Python int is cast to the compiled f64 scalar
    assert prod.dtype == logx.dtype == np.float64 and prod.shape == (3,)
    close(prod, [3.0, -3.0, 0.0])
    assert np.isnan(logx[1]) and logx[2] == -np.inf  # non-finite values survive JSON


# ---------------------------------------------------------------------------------------------
# minimize options


def test_minimize_optimizers_and_reporting(sync_client):
    def bowl(x):
        return snp.sum((x - 3.0) * (x - 3.0))

    x0 = np.zeros(4, np.float32)
    for name in ("gd", "momentum", "adam"):
        lr = 0.3 if name == "adam" else 0.1
        result = sync_client.minimize(bowl, (x0,), steps=200, lr=lr, optimizer=name, progress=False)
        np.testing.assert_allclose(result.params[0], np.full(4, 3.0), atol=1e-3, err_msg=name)
    result = sync_client.minimize(bowl, x0, steps=25, lr=0.1, every=10, progress=False)
    assert len(result.trajectory) == 25
    reported = [s.step for s in result.trajectory if s.params is not None]
    assert reported == [1, 10, 20, 25]


def test_minimize_progress_bar(sync_client, capsys):
    sync_client.minimize(f, (0.5, -0.75), steps=5, progress=True)
    assert "minimize" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------
# the example script


def test_seed_demo_script_against_real_server(server_url):
    script = Path(__file__).parent.parent / "examples" / "seed_demo.py"
    done = subprocess.run(
        [sys.executable, str(script), "--url", server_url],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    out = done.stdout
    assert "Iteration 1: -0.23971277\nIteration 2: -0.31265023\nIteration 3: -0.36950287" in out
    assert "Minimum location: [fromList [] [0.23235208],fromList [] [-1.0176479]]" in out
    assert "Minimum value: -0.5" in out
    for label in ("After tracing:", "Linearized definition(s):", "dft(ct):", "VJP:"):
        assert label in out
    assert "34.731194" in out and "120.34088" in out and "-86.82799" in out
