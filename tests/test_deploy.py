"""Deployment: the Redis shared store (against a real redis-server) and the docker/ files.

- ``RedisStore``: JSON entries under a key naming the pipeline version, TTL, corrupt entries
  ignored (bad JSON, checksum, text that does not parse, text of another program, bad VJP text),
  Redis refused or blackholed: no exception, bounded latency, counted in /metrics, ready stays
  ready, rate-limited warnings.
- docker/docker-compose.yml, Dockerfile and nginx.conf checked without a Docker engine: services,
  healthchecks, files they name, and ports/environment against ``shax_server.Settings``.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest
import redis
import yaml
from fastapi.testclient import TestClient
from shax_server.app import create_app
from shax_server.redis_store import RedisSettings, RedisStore, encode_entry, from_url
from shax_server.settings import Settings
from shax_server.store import make_store

from tests.metrics_text import metric_sum
from tests.servers import free_port, running

ROOT = Path(__file__).parent.parent
DOCKER = ROOT / "docker"
REDIS_SERVER = shutil.which("redis-server")
needs_redis = pytest.mark.skipif(
    REDIS_SERVER is None,
    reason="redis-server is not installed (apt-get install redis-server; .ci/run does)",
)

X = np.array([0.5, -1.0, 2.0], dtype=np.float32)


def program(c: float) -> str:
    return (
        "def f(arg0 :: f32[3]) =\n"
        "  let x0 :: f32[3] = sin arg0\n"
        f"      x1 :: f32[] = fromList [] [{c}]\n"
        "      x2 :: f32[3] = broadcast [] [3] x1\n"
        "      x3 :: f32[3] = mul x0 x2\n"
        "      x4 :: f32[] = reduce_sum [0] x3\n"
        "  in [x4]\n"
    )


INPUTS = [{"name": "arg0", "shape": [3], "datatype": "FP32", "data": X.tolist()}]


def check(doc: dict, c: float) -> None:
    np.testing.assert_allclose(doc["outputs"][0]["data"], c * np.sin(X).sum(), rtol=1e-5)
    np.testing.assert_allclose(doc["gradients"][0]["data"], c * np.cos(X), rtol=1e-5)


def scrape(client, name: str, **labels) -> float:
    return metric_sum(client.get("/metrics").text, name, **labels)


# ---------------------------------------------------------------------------------------------
# a real redis-server


@pytest.fixture(scope="module")
def redis_url():
    if REDIS_SERVER is None:
        pytest.skip("redis-server is not installed (apt-get install redis-server; .ci/run does)")
    tmp = tempfile.mkdtemp(prefix="shax-redis-")
    port = free_port()
    cmd = [REDIS_SERVER, "--bind", "127.0.0.1", "--port", str(port), "--save", ""]
    cmd += ["--appendonly", "no", "--dir", tmp]
    ping = redis.Redis(port=port, socket_timeout=1).ping
    quiet = dict(stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        with running(cmd, ping, what="redis-server", ready_within=15, **quiet):
            yield f"redis://127.0.0.1:{port}/0"
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


@pytest.fixture
def store(redis_url):
    s = from_url(redis_url, RedisSettings(ttl=600, key_prefix=f"t{time.monotonic_ns()}"))
    yield s
    s.close()


def app_client(store) -> TestClient:
    # the replicas share SHAX_CACHE_SECRET (as docker-compose.yml sets it): signed entries
    return TestClient(create_app(Settings(cache_secret="deploy-test-secret"), store=store))


@needs_redis
def test_entries_are_json_under_a_versioned_key_with_ttl(store):
    store.put("abc", "def f() = ...", {"wrt": [0], "pipeline_version": "1"})
    assert store.get("abc") == ("def f() = ...", {"wrt": [0], "pipeline_version": "1"})
    assert store.get("missing") is None
    key = store.key("abc")
    assert re.fullmatch(r"t\d+:p1:abc", key)
    raw = store.client.get(key)
    assert not raw.startswith(b"\x80")  # not a pickle
    doc = json.loads(raw)
    assert doc["text"] == "def f() = ..." and doc["id"] == "abc"
    assert 0 < store.client.ttl(key) <= 600


@needs_redis
def test_ttl_zero_means_no_expiry(redis_url):
    s = from_url(redis_url, RedisSettings(ttl=0, key_prefix="noexpiry"))
    s.put("k", "text", {})
    assert s.client.ttl(s.key("k")) == -1


@needs_redis
@pytest.mark.parametrize(
    "raw, why",
    [
        (b"{not json", "not JSON"),
        (b"\x80\x04\x95pickle", "not JSON"),
        (b'["a list"]', "format"),
        (encode_entry("abc", "text", {}).replace(b'"text"', b'"texT"', 1), "'text'"),
        (encode_entry("other", "text", {}), "entry of"),
        (encode_entry("abc", "text", {}).replace(b':"text"', b':"tExt"'), "checksum"),
    ],
)
def test_corrupt_values_are_ignored_logged_and_deleted(store, raw, why, caplog):
    from shax_server.metrics import Metrics

    metrics = Metrics()
    store.bind_metrics(metrics)
    store.client.set(store.key("abc"), raw)
    with caplog.at_level(logging.WARNING, logger="shax_server.redis"):
        assert store.get("abc") is None
    assert why in caplog.text
    assert metrics.store_corrupt.values[()] == 1
    assert store.client.exists(store.key("abc")) == 0


@needs_redis
def test_a_program_compiled_by_one_app_is_served_by_id_by_another(redis_url, store):
    other = from_url(redis_url, store.settings)
    with app_client(store) as a, app_client(other) as b:
        r = a.post("/v1/programs", json={"program": program(1.5)})
        assert r.status_code == 200 and r.json()["cached"] is False
        pid = r.json()["id"]
        r = b.post(f"/v1/programs/{pid}/vjp", json={"inputs": INPUTS})
        assert r.status_code == 200, r.text
        check(r.json(), 1.5)
        assert scrape(b, "shax_store_hits_total") == 1
        assert scrape(b, "shax_compile_duration_seconds_count") == 0
        # compiling the same program on b: found, not compiled, reported as cached
        assert b.post("/v1/programs", json={"program": program(1.5)}).json()["cached"] is True


@needs_redis
def test_an_entry_holding_another_program_is_not_served(store, caplog):
    """A valid entry under the wrong id (hash mismatch): ignored, then compiled correctly."""
    with app_client(store) as a:
        one = a.post("/v1/programs", json={"program": program(1.0)}).json()["id"]
        two = a.post("/v1/programs", json={"program": program(2.0)}).json()["id"]
        text, metadata = store.get(one)
        store.put(two, text, metadata)  # program 1's text and VJP under program 2's id
    with app_client(store) as b, caplog.at_level(logging.WARNING):
        r = b.post(f"/v1/programs/{two}/vjp", json={"inputs": INPUTS})
        assert r.status_code == 404  # the SDK uploads the program again on a 404
        assert "hashes to" in caplog.text
        r = b.post("/vjp", json={"program": program(2.0), "inputs": INPUTS})
        assert r.status_code == 200
        check(r.json(), 2.0)  # program 2's numbers, not program 1's VJP
        # by id: its text hashes to another id; inline: its signature is for another id
        assert scrape(b, "shax_store_corrupt_total") == 1
        assert scrape(b, "shax_store_refused_total", reason="bad-signature") == 1
        assert scrape(b, "shax_compile_duration_seconds_count") == 1
    # the recompiled program replaced the bad entry
    assert store.get(two)[0] != text


@needs_redis
@pytest.mark.parametrize(
    "change",
    [
        lambda t, m: ("def broken(", m),  # text that does not parse
        lambda t, m: (t, {**m, "vjp": "def nope("}),  # VJP text that does not parse
        lambda t, m: (t, {**m, "vjp": program(3.0)}),  # a VJP with the wrong signature
        lambda t, m: (t, {k: v for k, v in m.items() if k != "vjp"}),  # no VJP: compile
    ],
)
def test_unusable_entries_are_recompiled(store, change):
    with app_client(store) as a:
        pid = a.post("/v1/programs", json={"program": program(4.0)}).json()["id"]
    store.put(pid, *change(*store.get(pid)))
    with app_client(store) as b:
        r = b.post("/vjp", json={"program": program(4.0), "inputs": INPUTS})
        assert r.status_code == 200, r.text
        check(r.json(), 4.0)
        assert scrape(b, "shax_compile_duration_seconds_count") == 1
        assert scrape(b, "shax_store_hits_total") == 0


def test_make_store_builds_the_redis_store_from_the_url():
    s = make_store("redis://127.0.0.1:1/0")
    assert isinstance(s, RedisStore)
    assert s.where == "redis://127.0.0.1:1/0"
    assert from_url("redis://:secret@127.0.0.1:1/0").where == "redis://127.0.0.1:1/0"


# ---------------------------------------------------------------------------------------------
# Redis down or slow


def test_redis_refusing_connections_never_fails_a_request(caplog):
    port = free_port()  # nothing listens there
    store = from_url(f"redis://127.0.0.1:{port}/0", RedisSettings(retry_interval=0))
    with app_client(store) as c, caplog.at_level(logging.WARNING, logger="shax_server.redis"):
        assert c.get("/v2/health/ready").status_code == 200
        for i in range(5):
            r = c.post("/vjp", json={"program": program(5.0 + i), "inputs": INPUTS})
            assert r.status_code == 200, r.text
            check(r.json(), 5.0 + i)
        assert c.get("/v2/health/ready").status_code == 200
        assert scrape(c, "shax_redis_errors_total", op="get", reason="connection") == 5
        assert scrape(c, "shax_redis_errors_total", op="put", reason="connection") == 5
        assert scrape(c, "shax_redis_up") == 0
        assert c.post("/v1/programs/0000/vjp", json={"inputs": INPUTS}).status_code == 404
    # ten failures, one warning (rate-limited)
    assert len([r for r in caplog.records if "failed" in r.getMessage()]) == 1


@pytest.fixture
def blackhole():
    """A TCP port that accepts connections (kernel backlog) and never answers."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(16)
        yield s.getsockname()[1]


def test_slow_redis_costs_one_timeout_per_retry_interval(blackhole):
    settings = RedisSettings(timeout=0.2, retry_interval=30)
    store = from_url(f"redis://127.0.0.1:{blackhole}/0", settings)
    start = time.perf_counter()
    assert store.get("x") is None
    first = time.perf_counter() - start
    start = time.perf_counter()
    for _ in range(100):
        assert store.get("x") is None
        store.put("x", "t", {})
    rest = (time.perf_counter() - start) / 200
    print(f"blackholed Redis: first call {first * 1e3:.0f} ms, then {rest * 1e6:.1f} us per call")
    assert 0.15 < first < 1.0
    assert rest < 0.001
    with app_client(store) as c:
        start = time.perf_counter()
        r = c.post("/vjp", json={"program": program(7.0), "inputs": INPUTS})
        assert r.status_code == 200
        check(r.json(), 7.0)
        assert c.get("/v2/health/ready").status_code == 200
        took = time.perf_counter() - start
        print(f"blackholed Redis (skipped): /vjp with compile {took * 1e3:.0f} ms")


# ---------------------------------------------------------------------------------------------
# docker/: compose, Dockerfile, nginx.conf (no Docker engine here: checked as files)


def compose() -> dict:
    return yaml.safe_load((DOCKER / "docker-compose.yml").read_text())


def nginx_conf() -> str:
    return (DOCKER / "nginx.conf").read_text()


def nginx_size(value: str) -> int:
    m = re.fullmatch(r"(\d+)([kKmMgG]?)", value)
    assert m, value
    return int(m[1]) * {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3}[m[2].lower()]


def env_of(service: dict) -> dict[str, str]:
    env = service.get("environment", {})
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {k: str(v) for k, v in env.items()}


def healthcheck_text(service: dict) -> str:
    test = service["healthcheck"]["test"]
    return " ".join(test) if isinstance(test, list) else test


def test_compose_services_and_healthchecks():
    doc = compose()
    services = doc["services"]
    assert set(services) == {"redis", "shax", "nginx"}
    for name, service in services.items():
        assert service.get("healthcheck", {}).get("test"), f"{name} has no healthcheck"
    assert "/v2/health/ready" in healthcheck_text(services["shax"])
    assert "/v2/health/ready" in healthcheck_text(services["nginx"])
    assert "ping" in healthcheck_text(services["redis"])
    assert services["shax"]["depends_on"]["redis"]["condition"] == "service_healthy"
    assert services["nginx"]["depends_on"]["shax"]["condition"] == "service_healthy"
    assert services["shax"]["deploy"]["replicas"] >= 2
    assert "ports" not in services["shax"] and "ports" not in services["redis"]
    # bounded Redis memory with an LRU policy
    command = services["redis"]["command"]
    command = command if isinstance(command, list) else command.split()
    assert "--maxmemory" in command
    assert command[command.index("--maxmemory-policy") + 1] == "allkeys-lru"


def test_every_file_the_compose_file_names_exists():
    services = compose()["services"]
    build = services["shax"]["build"]
    context = (DOCKER / build["context"]).resolve()
    dockerfile = context / build["dockerfile"]
    assert context == ROOT and dockerfile.is_file()
    for service in services.values():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith((".", "/")):
                assert (DOCKER / source).exists(), volume
    # and every file the Dockerfile copies from the context, and its ignore file lets through
    text = dockerfile.read_text()
    copies = re.findall(r"^COPY (?!--from)(.+) \S+$", text, flags=re.M)
    sources = [s for line in copies for s in line.split()]
    assert sources, "no COPY in the Dockerfile"
    ignore = (DOCKER / "Dockerfile.dockerignore").read_text().splitlines()
    for source in sources:
        assert (ROOT / source).exists(), source
        assert f"!{source.rstrip('/')}/" in ignore or f"!{source}" in ignore, source


def test_compose_ports_and_environment_agree_with_the_settings():
    services = compose()["services"]
    env = env_of(services["shax"])
    redis_fields = {f"REDIS_{f}".upper() for f in RedisSettings.model_fields}
    values: dict[str, str] = {}
    for name, value in env.items():
        assert name.startswith("SHAX_"), name
        field = name.removeprefix("SHAX_").lower()
        assert field in Settings.model_fields or name.removeprefix("SHAX_") in redis_fields, name
        if field in Settings.model_fields:
            values[field] = value
    settings = Settings(**values)  # every value is valid for its field
    RedisSettings(
        **{
            k.removeprefix("SHAX_REDIS_").lower(): v
            for k, v in env.items()
            if k.removeprefix("SHAX_") in redis_fields
        }
    )
    assert settings.host == "0.0.0.0"  # inside the container network; nginx is the only way in
    assert settings.workers == 1  # one process per container: scale with replicas
    assert settings.redis_url.startswith("redis://redis:6379")

    conf = nginx_conf()
    upstream = re.findall(r"^\s*set \$shax_upstream http://shax:(\d+);", conf, flags=re.M)
    assert upstream == [str(settings.port)]
    assert services["shax"]["expose"] == [str(settings.port)]
    assert f"127.0.0.1:{settings.port}/v2/health/ready" in healthcheck_text(services["shax"])
    dockerfile = (DOCKER / "Dockerfile").read_text()
    assert re.search(rf"^EXPOSE {settings.port}$", dockerfile, flags=re.M)
    assert f"SHAX_PORT={settings.port}" in dockerfile

    # one published port, and it is the port nginx listens on
    published = [p for s in services.values() for p in s.get("ports", [])]
    assert len(published) == 1 and "ports" in services["nginx"]
    container_port = str(published[0]).split(":")[-1]
    assert re.findall(r"^\s*listen (\d+);", conf, flags=re.M) == [container_port]
    assert f"127.0.0.1:{container_port}/" in healthcheck_text(services["nginx"])

    # nginx lets through every body the server accepts (and the server's default)
    size = nginx_size(re.search(r"client_max_body_size (\S+);", conf)[1])
    assert size >= settings.max_body_bytes
    assert size >= Settings.model_fields["max_body_bytes"].default


def test_nginx_conf_re_resolves_replicas_and_times_out():
    conf = nginx_conf()
    # replicas are found through Docker's DNS at request time, not once at start-up
    assert re.search(r"^\s*resolver 127\.0\.0\.11 valid=\d+s ipv6=off;", conf, flags=re.M)
    assert "upstream shax" not in conf  # an upstream block's names are resolved only once
    passes = re.findall(r"proxy_pass (\S+);", conf)
    assert passes and set(passes) == {"$shax_upstream"}
    assert "proxy_http_version 1.1;" in conf
    for directive in ("proxy_connect_timeout", "proxy_read_timeout", "proxy_send_timeout"):
        assert re.search(rf"{directive} \d+s;", conf), directive
    read = int(re.search(r"proxy_read_timeout (\d+)s;", conf)[1])
    assert read > Settings().eval_timeout  # the server answers 503 first
    assert re.search(r"proxy_next_upstream error timeout", conf)
    assert "non_idempotent" not in conf


def test_dockerfile_is_multi_stage_non_root_with_a_healthcheck():
    text = (DOCKER / "Dockerfile").read_text()
    assert len(re.findall(r"^FROM \$\{PYTHON_IMAGE\} AS \w+$", text, re.M)) == 2
    # installs only hashed, pinned files, then shax itself without resolving anything
    assert "pip install --require-hashes --no-deps -r docker/requirements.lock" in text
    assert "pip install --no-deps --no-build-isolation ." in text
    user = re.findall(r"^USER (\S+)$", text, flags=re.M)
    assert user and re.fullmatch(r"[1-9]\d*:[1-9]\d*", user[-1]), user  # numeric, not root
    assert "HEALTHCHECK" in text and "/v2/health/ready" in text
    cmd = re.search(r"^CMD (.+)$", text, flags=re.M)[1]
    assert json.loads(cmd)[:3] == ["python", "-m", "shax_server.cli"]
    assert "--workers" not in cmd


def images_env() -> dict[str, str]:
    lines = (DOCKER / ".env").read_text().splitlines()
    return dict(line.split("=", 1) for line in lines if line and not line.startswith("#"))


def test_base_images_are_pinned_in_one_place():
    images = images_env()
    assert set(images) == {"PYTHON_IMAGE", "REDIS_IMAGE", "NGINX_IMAGE"}
    for name, image in images.items():
        # a full version (x.y.z) or a digest, never a floating tag like 3.11-slim or latest
        assert re.search(
            r":\d+\.\d+\.\d+[-\w.]*(@sha256:[0-9a-f]{64})?$|@sha256:[0-9a-f]{64}$", image
        ), (
            name,
            image,
        )
    dockerfile = (DOCKER / "Dockerfile").read_text()
    assert re.search(rf"^ARG PYTHON_IMAGE={re.escape(images['PYTHON_IMAGE'])}$", dockerfile, re.M)
    services = compose()["services"]
    assert services["redis"]["image"] == "${REDIS_IMAGE}"
    assert services["nginx"]["image"] == "${NGINX_IMAGE}"
    assert services["shax"]["build"]["args"]["PYTHON_IMAGE"] == "${PYTHON_IMAGE}"
    k8s_redis = yaml.safe_load_all((ROOT / "deploy" / "k8s" / "base" / "redis.yaml").read_text())
    (redis_deployment,) = [d for d in k8s_redis if d["kind"] == "Deployment"]
    (container,) = redis_deployment["spec"]["template"]["spec"]["containers"]
    assert container["image"] == images["REDIS_IMAGE"]


def test_the_lock_file_pins_every_server_dependency_with_hashes():
    import tomllib

    lock = (DOCKER / "requirements.lock").read_text()
    pinned = dict(re.findall(r"^([A-Za-z0-9_.-]+)==(\S+) \\$", lock, flags=re.M))
    blocks = re.split(r"\n(?=[A-Za-z0-9_.-]+==)", lock.split("\n\n", 1)[-1])
    for block in blocks:
        if "==" in block:
            assert "--hash=sha256:" in block, block.splitlines()[0]
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = meta["dependencies"] + meta["optional-dependencies"]["server"]
    norm = {k.lower().replace("_", "-"): v for k, v in pinned.items()}
    for requirement in wanted:
        name = re.match(r"[A-Za-z0-9_.-]+", requirement)[0].lower().replace("_", "-")
        assert name in norm, f"{name} is in pyproject.toml but not in docker/requirements.lock"
    assert "setuptools" in norm  # the build backend, so that the image builds without resolving


def test_nginx_accepts_the_rendered_conf(tmp_path):
    nginx = shutil.which("nginx") or next(
        (p for p in ("/usr/sbin/nginx", "/usr/local/sbin/nginx") if os.access(p, os.X_OK)), None
    )
    if nginx is None:
        pytest.skip("nginx is not installed (apt-get install nginx; .ci/run does)")
    from tests.test_stack import render_nginx_conf

    tmp_path.chmod(0o755)
    (tmp_path / "cache").mkdir()
    conf = tmp_path / "nginx.conf"
    conf.write_text(render_nginx_conf(nginx_conf(), free_port(), free_port(), tmp_path, 53))
    r = subprocess.run(
        [nginx, "-t", "-p", str(tmp_path), "-c", str(conf), "-e", "stderr"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert r.returncode == 0, r.stderr


def test_every_package_the_image_needs_is_in_pyproject():
    """The image installs the distribution (not editable): pyproject's package search must
    find every package dir (tests/test_packaging.py installs the built wheel itself)."""
    import tomllib

    from setuptools import find_packages

    find = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]
    listed = {p for where in find["find"]["where"] for p in find_packages(ROOT / where)}
    listed = {p for p in listed if p.split(".")[0] in ("shax_core", "shax_server", "shax_client")}
    found = set()
    for top, base in [
        ("shax_core", ROOT / "shax_core"),
        ("shax_server", ROOT / "server" / "shax_server"),
        ("shax_client", ROOT / "client" / "shax_client"),
    ]:
        for init in base.rglob("__init__.py"):
            if "__pycache__" not in init.parts:
                found.add(".".join((top, *init.parent.relative_to(base).parts)))
    assert found <= listed, sorted(found - listed)
