"""Issue 12's attacks at a small size against a real ``shax serve``, each under a liveness probe.

Every test asserts what the attack must get (the refusal, or the right answer) and that no
``/v2/health/live`` probe, sent every 100 ms during the attack, waited more than 250 ms. The
full-size figures come from ``run_full.py`` (docs/security.md).
"""

from __future__ import annotations

import math
import subprocess
import sys

import httpx
import pytest

from tests.attacks import attacks
from tests.attacks.attacks import LIVENESS_BOUND, LivenessProbe

pytestmark = pytest.mark.timeout(240)

SMALL = {
    "SHAX_MAX_OUTPUT_BYTES": str(4 * 2**20),
    "SHAX_HEADER_TIMEOUT": "1",
    "SHAX_BODY_TIMEOUT": "1",
    "SHAX_SMALL_COMPILE_EQUATIONS": "300",
    "SHAX_MAX_BODY_BYTES": str(16 * 2**20),
}


@pytest.fixture(scope="module")
def server():
    with attacks.serve(SMALL) as (url, _):
        yield url


def check_probe(probe: LivenessProbe) -> None:
    assert not probe.failures, probe.failures
    assert len(probe.waits) >= 3, probe.waits
    assert probe.worst <= LIVENESS_BOUND, probe.summary()


def test_output_bomb_is_refused_from_the_output_types(server):
    with LivenessProbe(server) as probe:
        seen = attacks.output_bomb(server, side=2048)  # 16 MiB of f32 (the issue: 8192)
    assert seen["statuses"] == [413] * 4, seen
    assert seen["limits"] == ["max_output_bytes"], seen
    assert str(4 * 2**20) in seen["details"][0], seen  # names the limit's value
    check_probe(probe)


def test_a_big_binary_response_is_streamed_whole(server):
    """Under the limit, a large binary output arrives complete and exact."""
    prog = "def f(x :: f32[]) = let y = broadcast [] [700,700] x  z = sin y in [z]"
    pid = httpx.post(f"{server}/v1/programs", json={"program": prog}).json()["id"]
    body = {"inputs": [{"data": 0.3}], "binary_data_output": True}
    r = httpx.post(f"{server}/v1/programs/{pid}/eval", json=body, timeout=60)
    assert r.status_code == 200, r.text
    n = int(r.headers["inference-header-content-length"])
    import numpy as np
    import orjson

    header = orjson.loads(r.content[:n])
    size = header["outputs"][0]["parameters"]["binary_data_size"]
    assert size == 700 * 700 * 4 == len(r.content) - n
    values = np.frombuffer(r.content[n:], dtype="<f4")
    np.testing.assert_array_equal(values, np.full(700 * 700, np.sin(np.float32(0.3))))
    # the same output as JSON is over the limit (16 bytes an element): refused, saying so
    r = httpx.post(f"{server}/v1/programs/{pid}/eval", json={"inputs": [{"data": 0.3}]})
    assert r.status_code == 413 and "binary_data_output" in r.json()["detail"], r.text


def test_escaped_brackets_in_a_string_do_not_stall_the_loop(server):
    with LivenessProbe(server) as probe:
        seen = attacks.escaped_brackets(server, mib=6)  # the issue: 60 MiB
    assert seen["status"] == 200, seen
    assert seen["gradient"] == pytest.approx(math.cos(0.5), rel=1e-6)
    check_probe(probe)


def test_a_lying_shape_is_refused_before_its_data_is_parsed(server):
    with LivenessProbe(server) as probe:
        seen = attacks.lying_shape(server, elements=1_500_000)  # ~14 MiB (the issue: 16 M)
    for what in ("by_id", "inline"):
        assert seen[what]["status"] == 413, seen
        assert seen[what]["limit"] == "body_bytes_per_element", seen
    check_probe(probe)


def test_an_unauthenticated_upload_is_refused_before_its_body():
    with attacks.serve({**SMALL, "SHAX_API_KEYS": "k-0123456789abcdef"}) as (url, _):
        with LivenessProbe(url) as probe:
            seen = attacks.unauthenticated_upload(url, mib=15)
        # every path but the health probes needs the key (docs, schema, metrics, metadata)
        for path in ("/metrics", "/docs", "/redoc", "/openapi.json", "/v2"):
            assert httpx.get(f"{url}{path}").status_code == 401, path
        assert httpx.get(f"{url}/v2/health/ready").status_code == 200
        h = {"X-API-Key": "k-0123456789abcdef"}
        assert httpx.get(f"{url}/metrics", headers=h).status_code == 200
    assert seen["status"] == 401, seen
    check_probe(probe)


def test_big_compiles_do_not_starve_a_small_one(server):
    with LivenessProbe(server) as probe:
        seen = attacks.compile_flood(server, equations=1200, head_start=0.1)
    assert set(seen["statuses"].values()) == {200}, seen
    assert seen["small_first"], seen
    check_probe(probe)


def test_slow_and_idle_connections_are_closed(server):
    with LivenessProbe(server) as probe:
        seen = attacks.slow_connections(server, idle=20, header_timeout=1.0)
    assert seen["closed"] == seen["connections"], seen
    assert seen["big_header_status"] == 431, seen
    assert seen["slow_body_status"] == 408, seen
    check_probe(probe)


def test_several_workers_without_a_shared_store_are_refused():
    cmd = [sys.executable, "-m", "shax_server.cli", "--port", str(attacks.free_port())]
    env = {k: v for k, v in __import__("os").environ.items() if k != "SHAX_REDIS_URL"}
    done = subprocess.run(
        [*cmd, "--workers", "2"], capture_output=True, text=True, timeout=60, env=env
    )
    assert done.returncode == 2
    assert "--workers 2 needs a store the workers share" in done.stderr
    assert "SHAX_REDIS_URL" in done.stderr


def test_serve_flags_reach_uvicorn_with_sane_defaults(monkeypatch):
    import os

    import uvicorn
    from shax_server import cli

    for k in list(os.environ):
        if k.startswith("SHAX_"):
            monkeypatch.delenv(k)
    for env in ("SHAX_PORT", *(e for e, _, _ in cli.FLAGS.values())):
        monkeypatch.setenv(env, "")  # so that monkeypatch removes what serve() sets
        monkeypatch.delenv(env)
    seen = {}
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: seen.update(kw))
    cli.serve_main(["--port", "0"])
    assert seen["timeout_keep_alive"] == 5 and seen["limit_concurrency"] == 512
    assert seen["http"] == "shax_server.http:GuardedHttpToolsProtocol"
    assert seen["h11_max_incomplete_event_size"] == 16 * 1024
    flags = ["--timeout-keep-alive", "2", "--limit-concurrency", "64", "--max-header-bytes", "4096"]
    cli.serve_main(["--port", "0", *flags, "--log-format", "json"])
    assert (seen["timeout_keep_alive"], seen["limit_concurrency"]) == (2, 64)
    assert seen["h11_max_incomplete_event_size"] == 4096
    assert "JsonFormatter" in str(seen["log_config"]["formatters"])
