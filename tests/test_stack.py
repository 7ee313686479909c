"""The compose stack reproduced on loopback: redis-server, two shax replicas and nginx.

There is no Docker engine here, so the same programs docker/docker-compose.yml runs are started as
subprocesses on 127.0.0.1 free ports: ``redis-server`` (bounded memory, LRU), two replicas
(``python -m shax_server.cli``, what ``shax serve`` and the image run) with ``SHAX_REDIS_URL``, and
nginx running docker/nginx.conf itself, with only the upstream addresses, the listen address and
file paths substituted (``render_nginx_conf``). Every process is stopped in teardown, also when a
test fails; every wait is bounded in time.

Skipped, saying why, when redis-server or nginx is not installed (.ci/run installs both).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np
import pytest
import redis
from shax_client import Client

from tests.dns_stub import StubDNS
from tests.servers import free_port

ROOT = Path(__file__).parent.parent
NGINX_CONF = ROOT / "docker" / "nginx.conf"
REDIS_SERVER = shutil.which("redis-server")
NGINX = shutil.which("nginx") or next(
    (p for p in ("/usr/sbin/nginx", "/usr/local/sbin/nginx") if os.access(p, os.X_OK)), None
)

pytestmark = [
    pytest.mark.skipif(
        REDIS_SERVER is None,
        reason="redis-server is not installed (apt-get install redis-server; .ci/run does)",
    ),
    pytest.mark.skipif(
        NGINX is None, reason="nginx is not installed (apt-get install nginx; .ci/run does)"
    ),
    pytest.mark.timeout(120),
]

X = np.array([0.5, -1.0, 2.0], dtype=np.float32)
START_TIMEOUT = 30.0
CACHE_SECRET = "stack-test-secret-4f1c"  # what docker-compose.yml sets as SHAX_CACHE_SECRET


def program(k: int) -> str:
    """A distinct small program per ``k``: f(x) = c * sum(sin x), c = 1 + k/8 (exact in f32)."""
    return (
        "def f(arg0 :: f32[3]) =\n"
        "  let x0 :: f32[3] = sin arg0\n"
        f"      x1 :: f32[] = fromList [] [{1 + k / 8}]\n"
        "      x2 :: f32[3] = broadcast [] [3] x1\n"
        "      x3 :: f32[3] = mul x0 x2\n"
        "      x4 :: f32[] = reduce_sum [0] x3\n"
        "  in [x4]\n"
    )


def expected(k: int) -> tuple[float, np.ndarray]:
    c = np.float32(1 + k / 8)
    return float(c * np.sin(X).sum()), c * np.cos(X)


def vjp_body(k: int) -> dict:
    return {
        "program": program(k),
        "inputs": [{"name": "arg0", "shape": [3], "datatype": "FP32", "data": X.tolist()}],
    }


def check_vjp(doc: dict, k: int) -> None:
    value, grad = expected(k)
    np.testing.assert_allclose(doc["outputs"][0]["data"], value, rtol=1e-5)
    np.testing.assert_allclose(doc["gradients"][0]["data"], grad, rtol=1e-5)


def render_nginx_conf(
    text: str, upstream_port: int, listen_port: int, prefix: Path, dns_port: int
) -> str:
    """docker/nginx.conf for loopback: the resolver (Docker's DNS, 127.0.0.11) becomes the stub
    DNS on 127.0.0.1:<dns_port>, the upstream ``http://shax:8000`` gets the replicas' port (they
    listen on distinct loopback addresses, as containers have distinct IPs), ``listen 8080``
    becomes 127.0.0.1:<port>, and the pid file and temp directories move under ``prefix``.
    Nothing else changes; a conf that no longer has exactly these lines is an error (so the
    test cannot silently run a different conf)."""

    def sub(pattern: str, repl, count: int) -> None:
        nonlocal text
        text, n = re.subn(pattern, repl, text, flags=re.M)
        if n != count:
            raise ValueError(f"docker/nginx.conf: {pattern!r} matched {n} times, not {count}")

    sub(
        r"^(\s*)resolver 127\.0\.0\.11( [^;]*)?;$",
        lambda m: f"{m[1]}resolver 127.0.0.1:{dns_port}{m[2] or ''};",
        1,
    )
    sub(
        r"^(\s*)set \$shax_upstream http://shax:8000;$",
        lambda m: f"{m[1]}set $shax_upstream http://shax:{upstream_port};",
        1,
    )
    sub(r"^(\s*)listen 8080;$", lambda m: f"{m[1]}listen 127.0.0.1:{listen_port};", 1)
    sub(r"^pid /var/run/nginx\.pid;$", lambda m: f"pid {prefix}/nginx.pid;", 1)
    sub(r"/var/cache/nginx/", lambda m: f"{prefix}/cache/", 5)
    return text


def free_port_on(hosts: list[str]) -> int:
    """A port free on every one of ``hosts`` (loopback addresses)."""
    for _ in range(50):
        port = free_port()
        try:
            for host in hosts:
                with socket.socket() as s:
                    s.bind((host, port))
            return port
        except OSError:
            continue
    raise RuntimeError(f"no common free port on {hosts}")


# ---------------------------------------------------------------------------------------------
# processes


@dataclass
class Proc:
    name: str
    cmd: list[str]
    env: dict
    log: Path
    popen: subprocess.Popen | None = None

    def start(self) -> None:
        with open(self.log, "ab") as out:
            self.popen = subprocess.Popen(
                self.cmd, env=self.env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT
            )

    @property
    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def stop(self, sig: int = signal.SIGTERM) -> None:
        p = self.popen
        if p is None or p.poll() is not None:
            return
        p.send_signal(sig)
        try:
            p.wait(timeout=10)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(timeout=10)

    def tail(self, n: int = 2000) -> str:
        try:
            return self.log.read_text(errors="replace")[-n:]
        except OSError:
            return ""


def wait_for(proc: Proc, check, what: str, timeout: float = START_TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if not proc.alive:
            raise RuntimeError(f"{proc.name} exited while {what}:\n{proc.tail()}")
        try:
            if check():
                return
        except (OSError, httpx.TransportError, redis.RedisError):
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"{proc.name}: not {what} after {timeout} s:\n{proc.tail()}")
        time.sleep(0.05)


def ready(url: str) -> bool:
    return httpx.get(f"{url}/v2/health/ready", timeout=1).status_code == 200


@dataclass
class Stack:
    tmp: Path
    redis_port: int
    redis: Proc
    replicas: list[Proc]
    replica_urls: list[str]
    nginx: Proc
    url: str
    procs: list[Proc] = field(default_factory=list)
    dns: StubDNS | None = None
    port: int = 0
    redis_url: str = ""

    def start(self, proc: Proc) -> None:
        if proc not in self.procs:
            self.procs.append(proc)
        proc.start()

    def start_redis(self) -> None:
        self.start(self.redis)
        r = redis.Redis(port=self.redis_port, socket_timeout=1)
        wait_for(self.redis, r.ping, "answering PING")

    def ensure(self) -> None:
        """Every process up (a previous test may have stopped Redis or killed a replica)."""
        if not self.redis.alive:
            self.start_redis()
        for proc, url in zip(self.replicas, self.replica_urls):
            if not proc.alive:
                self.start(proc)
                wait_for(proc, lambda u=url: ready(u), "ready")
        self.dns.records["shax"] = list(REPLICA_HOSTS)

    def stop_all(self) -> None:
        for proc in reversed(self.procs):
            proc.stop()

    def redis_client(self) -> redis.Redis:
        return redis.Redis(port=self.redis_port, socket_timeout=2)


def _replica(name: str, host: str, port: int, redis_url: str, tmp: Path) -> Proc:
    env = dict(
        os.environ,
        SHAX_REDIS_URL=redis_url,
        SHAX_REDIS_RETRY_INTERVAL="0.5",
        SHAX_CACHE_SECRET=CACHE_SECRET,
        SHAX_STORE_RECHECK_SECONDS="0.5",
    )
    for k in ("SHAX_API_KEYS", "SHAX_HOST", "SHAX_PORT", "SHAX_WORKERS"):
        env.pop(k, None)
    cmd = [sys.executable, "-m", "shax_server.cli", "--host", host, "--port", str(port)]
    return Proc(name, [*cmd, "--log-level", "warning"], env, tmp / f"{name}.log")


# replicas listen on distinct loopback addresses and one port, as containers do on a network;
# the stub DNS answers "shax" with the addresses of the replicas that are "running"
REPLICA_HOSTS = ["127.0.0.2", "127.0.0.3"]
SPARE_HOSTS = ["127.0.0.4", "127.0.0.5"]  # re-created and added replicas get new addresses


@pytest.fixture(scope="module")
def stack():
    tmp = Path(tempfile.mkdtemp(prefix="shax-stack-"))
    tmp.chmod(0o755)  # nginx workers run as an unprivileged user when the tests run as root
    (tmp / "cache").mkdir()
    redis_port, nginx_port = free_port(), free_port()
    port = free_port_on(REPLICA_HOSTS + SPARE_HOSTS)
    dns = StubDNS({"shax": list(REPLICA_HOSTS)})
    redis_url = f"redis://127.0.0.1:{redis_port}/0"
    redis_proc = Proc(
        "redis",
        [
            REDIS_SERVER,
            "--bind",
            "127.0.0.1",
            "--port",
            str(redis_port),
            "--save",
            "",
            "--appendonly",
            "no",
            "--maxmemory",
            "64mb",
            "--maxmemory-policy",
            "allkeys-lru",
            "--dir",
            str(tmp),
        ],
        dict(os.environ),
        tmp / "redis.log",
    )
    replicas = [
        _replica(f"replica{i}", h, port, redis_url, tmp) for i, h in enumerate(REPLICA_HOSTS)
    ]
    conf = tmp / "nginx.conf"
    conf.write_text(render_nginx_conf(NGINX_CONF.read_text(), port, nginx_port, tmp, dns.port))
    nginx = Proc(
        "nginx",
        [NGINX, "-p", str(tmp), "-c", str(conf), "-e", "stderr", "-g", "daemon off;"],
        dict(os.environ),
        tmp / "nginx.log",
    )
    urls = [f"http://{h}:{port}" for h in REPLICA_HOSTS]
    s = Stack(tmp, redis_port, redis_proc, replicas, urls, nginx, f"http://127.0.0.1:{nginx_port}")
    s.dns, s.port, s.redis_url = dns, port, redis_url
    try:
        s.start_redis()
        for proc in replicas:
            s.start(proc)
        for proc, url in zip(replicas, urls):
            wait_for(proc, lambda u=url: ready(u), "ready")
        s.start(nginx)
        wait_for(nginx, lambda: ready(s.url), "proxying /v2/health/ready")
        yield s
    finally:
        s.stop_all()
        dns.close()
        shutil.rmtree(tmp, ignore_errors=True)


# ---------------------------------------------------------------------------------------------
# metrics


def metrics(url: str) -> dict[str, list[tuple[dict, float]]]:
    samples: dict[str, list[tuple[dict, float]]] = {}
    text = httpx.get(f"{url}/metrics", timeout=5).text
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = re.match(r"^([a-zA-Z_:][\w:]*)(?:\{(.*)\})? (\S+)$", line)
        assert m, line
        labels = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', m[2] or ""))
        samples.setdefault(m[1], []).append((labels, float(m[3])))
    return samples


def value(samples, name: str, **where) -> float:
    """Sum of a metric's samples whose labels contain ``where`` (0 when absent)."""
    return sum(
        v
        for labels, v in samples.get(name, [])
        if all(
            w(labels.get(k, "")) if callable(w) else labels.get(k) == w for k, w in where.items()
        )
    )


COUNTERS = {
    "compiles": ("shax_compile_duration_seconds_count", {}),
    "misses": ("shax_cache_misses_total", {}),
    "store_hits": ("shax_store_hits_total", {}),
    "vjp_ok": ("shax_requests_total", {"route": lambda r: r.endswith("vjp"), "status": "200"}),
}


def counters(url: str) -> dict[str, float]:
    s = metrics(url)
    return {k: value(s, name, **where) for k, (name, where) in COUNTERS.items()}


def delta(before: dict, after: dict) -> dict:
    return {k: after[k] - before[k] for k in before}


_k = iter(range(1, 10**6))  # a fresh program number for every use (Redis lives for the module)


# ---------------------------------------------------------------------------------------------
# tests


def test_render_keeps_everything_but_addresses_and_paths(tmp_path):
    text = NGINX_CONF.read_text()
    out = render_nginx_conf(text, 1111, 3333, tmp_path, 5353)
    assert "resolver 127.0.0.1:5353 valid=5s ipv6=off;" in out
    assert "set $shax_upstream http://shax:1111;" in out
    assert "listen 127.0.0.1:3333;" in out and "shax:8000" not in out
    changed = {line.strip() for line in text.splitlines()} ^ {x.strip() for x in out.splitlines()}
    allowed = re.compile(
        r"^(resolver 127\.0\.0\.|set \$shax_upstream |listen |pid |\w+_temp_path )"
    )
    assert all(allowed.match(line) for line in changed), changed


def test_requests_are_spread_over_both_replicas(stack):
    stack.ensure()
    before = [counters(u) for u in stack.replica_urls]
    k = next(_k)
    with httpx.Client(base_url=stack.url, timeout=10) as c:
        pid = c.post("/v1/programs", json={"program": program(k)}).json()["id"]
        for _ in range(20):
            r = c.post(f"/v1/programs/{pid}/vjp", json={"inputs": vjp_body(k)["inputs"]})
            assert r.status_code == 200, r.text
            check_vjp(r.json(), k)
    served = [delta(b, counters(u))["vjp_ok"] for b, u in zip(before, stack.replica_urls)]
    assert sum(served) == 20 and min(served) >= 5, served
    # the replica that did not compile it got it from Redis: one compile across the stack
    compiles = [delta(b, counters(u))["compiles"] for b, u in zip(before, stack.replica_urls)]
    assert sum(compiles) == 1, compiles


def test_compiled_on_one_replica_is_evaluated_by_id_on_the_other(stack):
    stack.ensure()
    a, b = stack.replica_urls
    k, k2 = next(_k), next(_k)
    r = httpx.post(f"{a}/v1/programs", json={"program": program(k)}, timeout=10)
    assert r.status_code == 200 and r.json()["cached"] is False, r.text
    pid = r.json()["id"]

    # stored as JSON text under a key that names the pipeline version, never a pickle
    raw = stack.redis_client().get(f"shax:p1:{pid}")
    doc = json.loads(raw)
    assert doc["text"].startswith("def ") and doc["metadata"]["pipeline_version"] == "1"
    assert doc["metadata"]["vjp"].startswith("def ")

    before = counters(b)
    r = httpx.post(f"{b}/v1/programs/{pid}/vjp", json={"inputs": vjp_body(k)["inputs"]})
    assert r.status_code == 200, r.text
    check_vjp(r.json(), k)
    d = delta(before, counters(b))
    assert d["misses"] == 1 and d["store_hits"] == 1 and d["compiles"] == 0, d

    # the same for a program sent inline to /vjp: compiled on A, planned from Redis on B
    assert httpx.post(f"{a}/vjp", json=vjp_body(k2), timeout=10).status_code == 200
    before = counters(b)
    r = httpx.post(f"{b}/vjp", json=vjp_body(k2), timeout=10)
    assert r.status_code == 200, r.text
    check_vjp(r.json(), k2)
    d = delta(before, counters(b))
    assert d["store_hits"] == 1 and d["compiles"] == 0, d


def test_stopping_redis_mid_run_causes_no_client_visible_error(stack):
    stack.ensure()
    k_by_id = next(_k)
    latencies: dict[str, list[float]] = {"redis up": [], "redis down": []}
    try:
        with (
            httpx.Client(base_url=stack.url, timeout=10) as c,
            Client(stack.url, retries=4, backoff=0.05, max_backoff=1.0) as sdk,
        ):
            rf = sdk.compile(program(k_by_id))
            for i in range(30):
                if i == 10:
                    stack.redis.stop()
                phase = "redis down" if i >= 10 else "redis up"
                k = next(_k)  # a new program: every request misses locally and asks Redis
                start = time.perf_counter()
                r = c.post("/vjp", json=vjp_body(k))  # no retries: it must just work
                latencies[phase].append(time.perf_counter() - start)
                assert r.status_code == 200, (i, r.status_code, r.text)
                check_vjp(r.json(), k)
                value_, grad = rf.value_and_grad(X)  # by id (re-uploaded by the SDK on a 404)
                np.testing.assert_allclose(grad, expected(k_by_id)[1], rtol=1e-5)
        for url in stack.replica_urls:  # nginx may have sent all the misses to one of them
            k = next(_k)
            r = httpx.post(f"{url}/vjp", json=vjp_body(k), timeout=10)
            assert r.status_code == 200, r.text
            check_vjp(r.json(), k)
            assert ready(url)
            s = metrics(url)
            assert value(s, "shax_redis_errors_total") > 0
            assert value(s, "shax_redis_up") == 0
        for phase, xs in latencies.items():
            print(f"inline /vjp via nginx, {phase}: median {statistics.median(xs) * 1e3:.1f} ms,")
            print(f"  max {max(xs) * 1e3:.1f} ms over {len(xs)} requests")
        # a slow or failing Redis costs at most one timeout per retry interval, never an error
        assert max(latencies["redis down"]) < 2.0
    finally:
        stack.ensure()  # Redis back on the same port
    # ... and the replicas use it again once it is back
    deadline = time.monotonic() + 10
    while not all(value(metrics(u), "shax_redis_up") == 1 for u in stack.replica_urls):
        assert time.monotonic() < deadline, "replicas did not reconnect to Redis in 10 s"
        for url in stack.replica_urls:
            assert httpx.post(f"{url}/vjp", json=vjp_body(next(_k)), timeout=10).status_code == 200
        time.sleep(0.1)


def test_killing_a_replica_mid_run_loses_no_request(stack):
    stack.ensure()
    ks = [next(_k) for _ in range(3)]
    errors: list[BaseException] = []
    done = [0] * 3
    stop_at = time.monotonic() + 20

    def worker(i: int) -> None:
        k = ks[i]
        try:
            with Client(stack.url, retries=5, backoff=0.05, max_backoff=1.0) as sdk:
                rf = sdk.compile(program(k))
                for _ in range(40):
                    if time.monotonic() > stop_at:
                        break
                    value_, grad = rf.value_and_grad(X)
                    assert abs(float(value_) - expected(k)[0]) < 1e-4
                    np.testing.assert_allclose(grad, expected(k)[1], rtol=1e-5)
                    done[i] += 1
        except BaseException as e:  # reported by the main thread
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(3)]
    try:
        for t in threads:
            t.start()
        deadline = time.monotonic() + 10
        while sum(done) < 20 and time.monotonic() < deadline and not errors:
            time.sleep(0.01)
        killed_at = time.monotonic()
        stack.replicas[0].stop(signal.SIGKILL)  # mid-run, requests in flight
        for t in threads:
            t.join(timeout=60)
        assert not any(t.is_alive() for t in threads)
        assert not errors, errors
        assert sum(done) == 3 * 40, done
        print(
            f"replica kill: {sum(done)} of {3 * 40} SDK calls answered correctly, 0 errors; "
            f"the rest took {time.monotonic() - killed_at:.2f} s on the surviving replica"
        )
    finally:
        stack.ensure()


def test_load_balancer_errors_are_problem_json(stack, tmp_path):
    stack.ensure()
    # a body over client_max_body_size: nginx refuses it from the declared length alone
    host, port = stack.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=5) as s:
        s.sendall(
            b"POST /vjp HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: 70000000\r\n\r\n"
        )
        reply = b""
        while b"\r\n\r\n" not in reply or not reply.rstrip().endswith(b"}"):
            chunk = s.recv(65536)
            if not chunk:
                break
            reply += chunk
    head, _, body = reply.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 413"), head
    assert b"application/problem+json" in head
    assert re.search(rb"(?im)^x-request-id: \S+", head), head  # nginx's own answers carry it
    assert json.loads(body)["status"] == 413

    # no replica answering: a 503 problem with Retry-After, which the SDK retries
    tmp_path.chmod(0o755)
    (tmp_path / "cache").mkdir()
    port = free_port()
    nobody = StubDNS({"shax": ["127.0.0.9"]})  # an address where no replica listens
    conf = tmp_path / "nginx.conf"
    conf.write_text(
        render_nginx_conf(NGINX_CONF.read_text(), free_port(), port, tmp_path, nobody.port)
    )
    proc = Proc(
        "nginx-dead-upstream",
        [NGINX, "-p", str(tmp_path), "-c", str(conf), "-e", "stderr", "-g", "daemon off;"],
        dict(os.environ),
        tmp_path / "nginx.log",
    )
    try:
        proc.start()
        url = f"http://127.0.0.1:{port}"
        wait_for(proc, lambda: httpx.get(f"{url}/v2/health/live", timeout=1).status_code, "up")
        r = httpx.post(f"{url}/vjp", json=vjp_body(1), timeout=10)
        assert r.status_code == 503 and r.headers["retry-after"] == "1", r.text
        assert r.headers["content-type"].startswith("application/problem+json")
        assert r.json()["title"] == "Service unavailable"
        # a name the DNS does not know (every replica gone): the same 503
        nobody.records.clear()
        time.sleep(5.5)  # nginx's cached answer expires (valid=5s)
        r = httpx.post(f"{url}/vjp", json=vjp_body(1), timeout=10)
        assert r.status_code == 503 and r.headers["retry-after"] == "1", r.text
    finally:
        proc.stop()
        nobody.close()


# ---------------------------------------------------------------------------------------------
# forged entries, Redis restarts: the fault suite's figures (printed; run with -s to see them)


def two(n: int) -> str:
    """f(a, b) = sum(sin(a) * b) on f32[n]: gradients cos(a) * b and sin(a), easy to swap."""
    return (
        f"def f(a :: f32[{n}], b :: f32[{n}]) =\n"
        f"  let s :: f32[{n}] = sin a\n"
        f"      p :: f32[{n}] = mul s b\n"
        "      r :: f32[] = reduce_sum [0] p\n"
        "  in [r]\n"
    )


def _two_inputs(a, b):
    return [
        {"name": "a0", "shape": [a.size], "datatype": "FP32", "data": a.tolist()},
        {"name": "a1", "shape": [b.size], "datatype": "FP32", "data": b.tolist()},
    ]


def _forge(raw: bytes, program_id: str, resign: bool) -> bytes:
    """The entry with the VJP's two gradient outputs swapped and its (unkeyed) checksum
    recomputed, as someone with write access to Redis could; the old signature kept or gone."""
    from shax_server.redis_store import encode_entry

    doc = json.loads(raw)
    metadata = dict(doc["metadata"])
    lines = metadata["vjp"].rstrip().splitlines()
    outs = re.fullmatch(r"(\s*in \[)(.*)(\])", lines[-1])
    names = outs[2].split(", ")
    assert len(names) == 3, lines[-1]
    lines[-1] = f"{outs[1]}{names[0]}, {names[2]}, {names[1]}{outs[3]}"
    metadata["vjp"] = "\n".join(lines)
    if not resign:
        metadata.pop("signature", None)
    return encode_entry(program_id, doc["text"], metadata)


def test_a_forged_redis_entry_gives_zero_wrong_answers(stack):
    stack.ensure()
    a, b = stack.replica_urls
    r = stack.redis_client()
    rng = np.random.default_rng(7)
    report = {}
    for n, (variant, resign) in enumerate((("unsigned", False), ("stale signature", True)), 3):
        xa, xb = (rng.standard_normal(n).astype(np.float32) for _ in range(2))
        true_ga, true_gb = np.cos(xa) * xb, np.sin(xa)
        pid = httpx.post(f"{a}/v1/programs", json={"program": two(n)}, timeout=10).json()["id"]
        key = f"shax:p1:{pid}"
        r.set(key, _forge(r.get(key), pid, resign))
        before = metrics(b)
        wrong = answered = 0
        deadline = time.monotonic() + 8
        with httpx.Client(timeout=10) as c:
            while time.monotonic() < deadline and answered < 200:
                for url in (b, stack.url):  # the cold replica, and whichever nginx picks
                    got = c.post(
                        f"{url}/v1/programs/{pid}/vjp", json={"inputs": _two_inputs(xa, xb)}
                    )
                    assert got.status_code == 200, got.text
                    ga, gb = (np.array(g["data"]) for g in got.json()["gradients"])
                    answered += 1
                    ok = np.allclose(ga, true_ga, rtol=1e-5) and np.allclose(gb, true_gb, rtol=1e-5)
                    wrong += not ok
        after = metrics(b)
        refused = value(after, "shax_store_refused_total") - value(
            before, "shax_store_refused_total"
        )
        report[variant] = {"answers": answered, "wrong": wrong, "refused_on_b": refused}
        assert wrong == 0, report
        assert refused >= 1, report
    print("forged Redis entries:", report)


def test_redis_restart_entries_are_republished_and_health_is_probed(stack):
    stack.ensure()
    a, b = stack.replica_urls
    ks = [next(_k) for _ in range(3)]
    pids = [
        httpx.post(f"{a}/v1/programs", json={"program": program(k)}, timeout=10).json()["id"]
        for k in ks
    ]
    r = stack.redis_client()
    assert all(r.exists(f"shax:p1:{p}") for p in pids)
    stack.redis.stop()
    t0 = time.monotonic()
    while not all(value(metrics(u), "shax_redis_up") == 0 for u in stack.replica_urls):
        assert time.monotonic() - t0 < 5, "shax_redis_up stayed 1 with Redis down"
        time.sleep(0.1)
    down_seen = time.monotonic() - t0
    stack.start_redis()  # empty: no persistence, as in the compose file
    t1 = time.monotonic()
    while not all(value(metrics(u), "shax_redis_up") == 1 for u in stack.replica_urls):
        assert time.monotonic() - t1 < 5, "shax_redis_up stayed 0 with Redis back"
        time.sleep(0.1)
    up_seen = time.monotonic() - t1
    assert not any(r.exists(f"shax:p1:{p}") for p in pids)
    # program 0 is uploaded again, program 1 is evaluated by id on A (a local hit); program 2
    # is left alone: nothing brings it back until a replica that has it serves it
    t2 = time.monotonic()
    assert httpx.post(f"{a}/v1/programs", json={"program": program(ks[0])}).status_code == 200
    time.sleep(0.6)  # > SHAX_STORE_RECHECK_SECONDS of the replicas
    got = httpx.post(f"{a}/v1/programs/{pids[1]}/vjp", json={"inputs": vjp_body(ks[1])["inputs"]})
    assert got.status_code == 200
    while not (r.exists(f"shax:p1:{pids[0]}") and r.exists(f"shax:p1:{pids[1]}")):
        assert time.monotonic() - t2 < 5, "entries were not republished"
        time.sleep(0.05)
    republished = time.monotonic() - t2
    assert not r.exists(f"shax:p1:{pids[2]}")
    # and the other replica, which never compiled them, now serves them by id
    for k, pid in zip(ks[:2], pids[:2]):
        got = httpx.post(f"{b}/v1/programs/{pid}/vjp", json={"inputs": vjp_body(k)["inputs"]})
        assert got.status_code == 200, got.text
        check_vjp(got.json(), k)
    print(
        f"Redis restart: shax_redis_up 0 after {down_seen:.2f} s, back to 1 after {up_seen:.2f} s;"
        f" 2 entries republished within {republished:.2f} s of re-upload / local hit"
    )


def test_two_workers_share_programs_and_metrics_through_redis(stack, tmp_path):
    """``shax serve --workers 2`` with Redis: a program compiled by one worker is served by id
    by both (never a 404), model-ready never flaps, and /metrics sums both workers (prometheus-
    client multiprocess files), so request counts only grow, whichever worker answers."""
    stack.ensure()
    port = free_port()
    env = dict(stack.replicas[0].env)
    cmd = [sys.executable, "-m", "shax_server.cli", "--host", "127.0.0.1", "--port", str(port)]
    proc = Proc(
        "workers2", [*cmd, "--workers", "2", "--log-level", "warning"], env, tmp_path / "w.log"
    )
    url = f"http://127.0.0.1:{port}"
    try:
        proc.start()
        wait_for(proc, lambda: ready(url), "ready")
        k = next(_k)
        statuses, counts = [], []
        with httpx.Client(base_url=url, timeout=10) as c:
            pid = c.post("/v1/programs", json={"program": program(k)}).json()["id"]
            for _ in range(40):
                r = c.post(f"/v1/programs/{pid}/vjp", json={"inputs": vjp_body(k)["inputs"]})
                statuses.append(r.status_code)
                if r.status_code == 200:
                    check_vjp(r.json(), k)
                statuses.append(c.get(f"/v2/models/{pid}/ready").status_code)
                counts.append(value(metrics(url), "shax_requests_total"))
        assert statuses == [200] * 80, statuses
        assert counts == sorted(counts) and counts[-1] >= 80, counts
    finally:
        proc.stop()


def _served_by(urls: list[str]) -> list[float]:
    return [counters(u)["vjp_ok"] for u in urls]


def _until_served(stack: Stack, url: str, k: int, pid: str, within: float = 20.0) -> str:
    """Send VJPs through nginx until replica ``url`` has served one; every request must
    succeed (no retries). Says how many requests and seconds that took."""
    start = counters(url)["vjp_ok"]
    began = time.monotonic()
    deadline = began + within
    sent = 0
    with httpx.Client(base_url=stack.url, timeout=10) as c:
        while counters(url)["vjp_ok"] == start:
            assert time.monotonic() < deadline, f"{url} got no traffic in {within} s"
            r = c.post(f"/v1/programs/{pid}/vjp", json={"inputs": vjp_body(k)["inputs"]})
            assert r.status_code == 200, r.text
            check_vjp(r.json(), k)
            sent += 1
            time.sleep(0.05)
    return f"{sent} requests, {time.monotonic() - began:.1f} s"


def test_added_and_recreated_replicas_get_traffic_without_restarting_nginx(stack):
    """`docker compose up --scale shax=3`, then a replica re-created with a new address: nginx
    finds both through DNS (its cached answer lives 5 s) while its master process runs on."""
    stack.ensure()
    nginx_pid = stack.nginx.popen.pid
    k = next(_k)
    pid = httpx.post(f"{stack.url}/v1/programs", json={"program": program(k)}).json()["id"]
    spares = [
        _replica(f"spare{i}", host, stack.port, stack.redis_url, stack.tmp)
        for i, host in enumerate(SPARE_HOSTS)
    ]
    spare_urls = [f"http://{h}:{stack.port}" for h in SPARE_HOSTS]
    try:
        # scale up: a third replica appears in DNS
        stack.start(spares[0])
        wait_for(spares[0], lambda: ready(spare_urls[0]), "ready")
        stack.dns.records["shax"] = [*REPLICA_HOSTS, SPARE_HOSTS[0]]
        took = _until_served(stack, spare_urls[0], k, pid)
        print(f"added replica served after {took} through nginx")
        # re-create replica 1: the old container dies, the new one has another address
        stack.replicas[1].stop(signal.SIGKILL)
        stack.start(spares[1])
        wait_for(spares[1], lambda: ready(spare_urls[1]), "ready")
        stack.dns.records["shax"] = [REPLICA_HOSTS[0], *SPARE_HOSTS]
        took = _until_served(stack, spare_urls[1], k, pid)
        print(f"re-created replica served after {took} through nginx")
        # and once DNS no longer names the dead one, every replica in it shares the load. The
        # first request after the cached answer expires makes nginx ask again, and requests go
        # on by the old answer until the new one arrives (with the dead address, whose share
        # nginx passes to the next replica): a few paced requests first, not counted
        time.sleep(5.5)
        urls = [stack.replica_urls[0], *spare_urls]
        with httpx.Client(base_url=stack.url, timeout=10) as c:
            for _ in range(10):
                r = c.post(f"/v1/programs/{pid}/vjp", json={"inputs": vjp_body(k)["inputs"]})
                assert r.status_code == 200, r.text
                time.sleep(0.05)
        before = _served_by(urls)
        with httpx.Client(base_url=stack.url, timeout=10) as c:
            for _ in range(30):
                r = c.post(f"/v1/programs/{pid}/vjp", json={"inputs": vjp_body(k)["inputs"]})
                assert r.status_code == 200, r.text
        served = [a - b for a, b in zip(_served_by(urls), before)]
        assert sum(served) == 30 and min(served) >= 5, served
        assert stack.nginx.alive and stack.nginx.popen.pid == nginx_pid  # never restarted
        assert "reload" not in stack.nginx.tail(20000)
    finally:
        for spare in spares:
            spare.stop()
        stack.ensure()
