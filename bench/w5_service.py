"""W5 service: the cached VJP endpoint against the framework's floor, and tensor transport.

A real uvicorn serves each app on a free port of 127.0.0.1 in its own subprocess (``serve.py``,
same settings for all); the load comes from another subprocess (``load.py``), bounded in
requests and seconds; every server is stopped at the end, also on errors.

- Requests/s, p50, p99 at 1 and 16 connections of ``POST /v1/programs/{id}/vjp`` for W1 (the
  program compiled once beforehand, so every request is a cache hit), with the cached-call
  fast path (the default) and without it (``SHAX_FAST_PATH=false``: the FastAPI route), and of
  the echo app's ``POST /echo``, which parses the same JSON body through pydantic and returns
  it. The three servers run side by side and are loaded in interleaved rounds (each figure is
  the median over the rounds), so that the other jobs on this shared machine weigh on all
  three alike. The servers' own CPU time per request (from /proc) is the load-independent
  figure: what one request costs the server process.
- With ``SHAX_BENCH_W5_BASELINE=<a source tree>`` (e.g. ``git worktree add`` of the commit
  before a change), that tree's fast path is a fourth server in the same rounds, so a change's
  before and after come from one run.
- In-process CPU per cached call: the app called as ASGI in a fresh process (this tree's, and
  the baseline's), no HTTP, in interleaved rounds: what the server's own code costs per call.
- Targets (issue 18): the fast path's requests/s at 16 connections >= 80% of the echo
  floor's, with p99 <= 2x the floor's.
- A 4 MiB f32 tensor (1,048,576 elements) round trip, one connection: through shax's
  ``POST /v1/programs/{id}/eval`` of ``negate`` as JSON and as the binary tensor extension, and
  through the echo app as a raw ``application/octet-stream`` body (the floor) and as a JSON list
  with orjson. MB/s = 4,194,304 bytes / median round-trip time / 10^6 (the tensor travels both
  ways in that time).
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import statistics
import subprocess
import sys
import tempfile

import common
import numpy as np
import orjson

from tests.servers import free_port, running

N_TENSOR = 1 << 20  # 4 MiB of f32
W1_BODY = {
    "inputs": [{"data": [1, 2, 3, 4, 5, 6]}, {"data": [[1, 2], [3, 4]]}],
    "cotangents": [{"data": [5, 9]}],
}
HEADER_LENGTH = "Inference-Header-Content-Length"
ROUNDS = 3  # interleaved load rounds per point (1 in --quick)
# another source tree (a checkout of the code before a change): its fast path is loaded in
# the same interleaved rounds, and its in-process cost measured alike ("before" and "after"
# from one run)
BASELINE = os.environ.get("SHAX_BENCH_W5_BASELINE")
# (key, label, server kind, extra environment); the floor last in each round
SERVERS = (
    ("shax", "shax cached POST /v1/programs/{id}/vjp (W1), fast path", "shax", {}),
    (
        "shax-app",
        "the same through the FastAPI route (SHAX_FAST_PATH=false)",
        "shax",
        {"SHAX_FAST_PATH": "false"},
    ),
    ("floor", "FastAPI echo of the same body (floor)", "echo", {}),
)
if BASELINE:
    SERVERS = (
        (
            "shax-base",
            f"the fast path of {BASELINE} (baseline)",
            "shax",
            {"PYTHONPATH": f"{BASELINE}{os.pathsep}{os.path.join(BASELINE, 'server')}"},
        ),
        *SERVERS,
    )


class Server:
    """``python serve.py KIND PORT`` in a subprocess; a context manager that always stops it."""

    def __init__(self, kind: str, ready_path: str, env: dict | None = None):
        self.kind, self.ready_path, self.extra_env = kind, ready_path, env or {}
        self.port = free_port()
        self.proc: subprocess.Popen | None = None
        self.log = tempfile.TemporaryFile()
        self._running = contextlib.ExitStack()

    def __enter__(self) -> Server:
        env = {k: v for k, v in os.environ.items() if not k.startswith("SHAX_")}
        env.update(self.extra_env)
        cmd = [sys.executable, os.path.join(common.BENCH_DIR, "serve.py"), self.kind]
        try:
            self.proc = self._running.enter_context(
                running(
                    [*cmd, str(self.port)],
                    lambda: self.request("GET", self.ready_path)[0] == 200,
                    what=f"the {self.kind} server",
                    stdout=self.log,
                    stderr=subprocess.STDOUT,
                    env=env,
                    cwd=common.BENCH_DIR,
                )
            )
        except RuntimeError as e:
            raise RuntimeError(f"{e}: {self.tail()}") from None
        return self

    def __exit__(self, *exc) -> None:
        self._running.close()

    def cpu_seconds(self) -> float:
        """User plus system CPU time the server process has used so far."""
        with open(f"/proc/{self.proc.pid}/stat") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def tail(self) -> str:
        self.log.seek(0)
        return self.log.read().decode(errors="replace")[-500:]

    def request(self, method, path, body: bytes | None = None, headers=None) -> tuple[int, bytes]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            conn.request(method, path, body=body, headers=headers or {})
            resp = conn.getresponse()
            return resp.status, resp.read()
        finally:
            conn.close()


def load(
    server: Server,
    path: str,
    body: bytes,
    headers: dict,
    connections: int,
    requests: int,
    duration: float,
    warmup: int,
    tmp: str,
) -> dict:
    body_file = os.path.join(tmp, f"body-{len(body)}-{abs(hash(body)) % 10**8}")
    if not os.path.exists(body_file):
        with open(body_file, "wb") as fh:
            fh.write(body)
    spec = {
        "host": "127.0.0.1",
        "port": server.port,
        "method": "POST",
        "path": path,
        "headers": headers,
        "body_file": body_file,
        "connections": connections,
        "requests": requests,
        "duration": duration,
        "warmup": warmup,
    }
    spec_file = os.path.join(tmp, "spec.json")
    with open(spec_file, "w") as fh:
        json.dump(spec, fh)
    proc = subprocess.run(
        [sys.executable, os.path.join(common.BENCH_DIR, "load.py"), spec_file],
        capture_output=True,
        text=True,
        timeout=duration + 90,
        cwd=common.BENCH_DIR,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"load generator failed: {proc.stderr.strip()[-300:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def rounds(
    servers: dict, paths: dict, body: bytes, headers: dict, connections: int, n: int, **kw
) -> dict[str, dict]:
    """``n`` interleaved rounds of load on each server (key -> Server); per server: the median
    requests/s, p50 and p99 over the rounds, all statuses, and the server's CPU per request."""
    runs: dict[str, list[dict]] = {key: [] for key in servers}
    cpu = dict.fromkeys(servers, 0.0)
    for _ in range(n):
        for key, server in servers.items():
            before = server.cpu_seconds()
            r = load(server, paths[key], body, headers, connections, **kw)
            cpu[key] += server.cpu_seconds() - before
            r["served"] = sum(r["status"].values()) + kw["warmup"]
            runs[key].append(r)
    out = {}
    for key, rs in runs.items():
        status: dict[str, int] = {}
        for r in rs:
            for k, v in r["status"].items():
                status[k] = status.get(k, 0) + v
        out[key] = {
            "rps": statistics.median(r["rps"] for r in rs),
            "p50": statistics.median(r["p50"] for r in rs if r["p50"] is not None),
            "p99": statistics.median(r["p99"] for r in rs if r["p99"] is not None),
            "ok": sum(r["ok"] for r in rs),
            "status": status,
            "cpu_per_request": cpu[key] / sum(r["served"] for r in rs),
            "rounds": rs,
        }
    return out


async def _asgi_call(app, path: str, body: bytes) -> tuple[int, bytes]:
    """One POST through the ASGI app itself (no HTTP): (status, body)."""
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [
            (b"host", b"127.0.0.1"),
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
        ],
        "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 80),
    }
    messages = [{"type": "http.request", "body": body, "more_body": False}]
    sent: list[dict] = []

    async def receive():
        return messages.pop() if messages else {"type": "http.disconnect"}

    async def send(message):
        sent.append(message)

    await app(scope, receive, send)
    return sent[0]["status"], b"".join(m.get("body", b"") for m in sent[1:])


def in_process(calls: int = 2000, repeats: int = 5) -> float:
    """CPU µs per cached by-id VJP call of W1 through the app in this process (no HTTP;
    uvloop when installed): the best of ``repeats`` loops of ``calls`` calls."""
    import asyncio
    import importlib.util
    import time

    from shax_server.app import create_app

    import shax_core as sx
    from shax_core.demo import SEED_A, SEED_B, medium

    async def measure() -> float:
        app = create_app()
        text = sx.print_program(sx.trace(medium, SEED_A, SEED_B))
        async with app.router.lifespan_context(app):
            status, out = await _asgi_call(app, "/v1/programs", orjson.dumps({"program": text}))
            _check(status, out, "compile W1")
            path = f"/v1/programs/{orjson.loads(out)['id']}/vjp"
            body = orjson.dumps(W1_BODY)
            for _ in range(max(calls // 4, 50)):  # warm: the plan's generated code, caches
                _check(*await _asgi_call(app, path, body), "W1 vjp")
            best = float("inf")
            for _ in range(repeats):
                start = time.process_time()
                for _ in range(calls):
                    await _asgi_call(app, path, body)
                best = min(best, (time.process_time() - start) / calls)
            return best * 1e6

    if importlib.util.find_spec("uvloop"):
        import uvloop

        return uvloop.run(measure())
    return asyncio.run(measure())


def _in_process_subprocess(tree: str | None, calls: int) -> float | None:
    """``in_process`` in a fresh process, of ``tree``'s code when given (else this one's)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SHAX_")}
    if tree:
        env["PYTHONPATH"] = f"{tree}{os.pathsep}{os.path.join(tree, 'server')}"
    proc = subprocess.run(
        [sys.executable, os.path.abspath(__file__), "--in-process", str(calls)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=common.BENCH_DIR,
        env=env,
    )
    if proc.returncode != 0:
        common.log(f"W5 in-process ({tree or 'this tree'}) failed: {proc.stderr[-300:]}")
        return None
    return float(proc.stdout.strip().splitlines()[-1])


def _check(status: int, body: bytes, what: str) -> None:
    if status != 200:
        raise RuntimeError(f"{what}: HTTP {status}: {body[:300]!r}")


def run(cfg: common.Config) -> common.Section:
    sec = common.Section("w5", "W5 service")
    try:
        import fastapi  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError as e:
        sec.notes.append(f"W5 skipped: {e} (install the server extra)")
        return sec
    import shax_core as sx
    from shax_core.demo import SEED_A, SEED_B, SEED_CT, medium

    duration = 0.6 if cfg.quick else 4.0
    requests = 400 if cfg.quick else 60_000
    warmup = 20 if cfg.quick else 300
    rt_requests = 3 if cfg.quick else 15
    w1_text = sx.print_program(sx.trace(medium, SEED_A, SEED_B))
    w1_body = orjson.dumps(W1_BODY)
    x = np.random.default_rng(0).standard_normal(N_TENSOR).astype(np.float32)
    json_body = orjson.dumps({"inputs": [{"data": x}]}, option=orjson.OPT_SERIALIZE_NUMPY)
    bin_header = orjson.dumps(
        {"inputs": [{"parameters": {"binary_data_size": x.nbytes}}], "binary_data_output": True}
    )
    bin_body = bin_header + x.tobytes()
    bin_headers = {"Content-Type": "application/octet-stream", HEADER_LENGTH: str(len(bin_header))}
    json_headers = {"Content-Type": "application/json"}
    echo_json_body = orjson.dumps({"data": x}, option=orjson.OPT_SERIALIZE_NUMPY)
    rt_text = f"def roundtrip(x :: f32[{N_TENSOR}]) = let y = negate x in [y]"

    rps: dict[tuple[str, int], dict] = {}
    rt: dict[str, dict] = {}
    n_rounds = 1 if cfg.quick else ROUNDS
    common.log("W5: in-process CPU per cached call")
    inproc: dict[str, list[float]] = {"this tree": []}
    if BASELINE:
        inproc[BASELINE] = []
    for _ in range(n_rounds):  # interleaved, as the servers are
        for tree, got in inproc.items():
            us = _in_process_subprocess(
                None if tree == "this tree" else tree, 300 if cfg.quick else 2000
            )
            if us is not None:
                got.append(us)
    with tempfile.TemporaryDirectory(prefix="shax-bench-") as tmp, contextlib.ExitStack() as up:
        common.log("W5: the echo app (framework floor) and shax with and without the fast path")
        servers = {
            key: up.enter_context(
                Server(kind, "/health" if kind == "echo" else "/v2/health/ready", env)
            )
            for key, _, kind, env in SERVERS
        }
        echo, shax = servers["floor"], servers["shax"]
        _check(*echo.request("POST", "/echo", w1_body, json_headers), "echo")
        paths = {"floor": "/echo"}
        for key in (k for k, _, kind, _ in SERVERS if kind == "shax"):
            st, out = servers[key].request(
                "POST", "/v1/programs", orjson.dumps({"program": w1_text}), json_headers
            )
            _check(st, out, "compile W1")
            paths[key] = f"/v1/programs/{orjson.loads(out)['id']}/vjp"
            st, out = servers[key].request("POST", paths[key], w1_body, json_headers)
            _check(st, out, "W1 vjp")
            grads = orjson.loads(out)["gradients"]
            ref = sx.compile(sx.vjp_program(sx.parse(w1_text)))(SEED_A, SEED_B, SEED_CT)
            if not np.allclose(np.asarray(grads[0]["data"], np.float32), ref[1].ravel(), rtol=1e-5):
                sec.notes.append(f"{key} /vjp returned gradients that differ from in-process")
        load_before = os.getloadavg()
        for c in (1, 16):
            measured = rounds(
                servers,
                paths,
                w1_body,
                json_headers,
                c,
                n_rounds,
                requests=requests // n_rounds,
                duration=duration / n_rounds,
                warmup=warmup // n_rounds,
                tmp=tmp,
            )
            for key, r in measured.items():
                rps[(key, c)] = r
        load_after = os.getloadavg()
        st, out = echo.request(
            "POST", "/raw", x.tobytes(), {"Content-Type": "application/octet-stream"}
        )
        _check(st, out, "raw echo")
        if np.frombuffer(out, np.float32).shape != x.shape:
            sec.notes.append("raw echo returned the wrong size")
        rt["raw octet-stream (echo app, floor)"] = load(
            echo,
            "/raw",
            x.tobytes(),
            {"Content-Type": "application/octet-stream"},
            1,
            rt_requests,
            60,
            1,
            tmp,
        )
        rt["JSON list, orjson (echo app)"] = load(
            echo, "/json", echo_json_body, json_headers, 1, rt_requests, 60, 1, tmp
        )
        st, out = shax.request(
            "POST", "/v1/programs", orjson.dumps({"program": rt_text}), json_headers
        )
        _check(st, out, "compile roundtrip")
        rpath = f"/v1/programs/{orjson.loads(out)['id']}/eval"
        _check(*shax.request("POST", rpath, bin_body, bin_headers), "binary eval")
        rt["shax binary extension (/eval)"] = load(
            shax, rpath, bin_body, bin_headers, 1, rt_requests, 60, 1, tmp
        )
        rt["shax JSON (/eval)"] = load(
            shax, rpath, json_body, json_headers, 1, rt_requests, 60, 1, tmp
        )

    from serve import uvicorn_options

    opts = uvicorn_options()
    sec.lines += [
        f"uvicorn: 1 worker, loop={opts['loop']}, http={opts['http']}, access log off, on "
        f"127.0.0.1; load from a separate process; the {len(SERVERS)} servers loaded in {n_rounds} "
        f"interleaved round(s) of {duration / n_rounds:g} s or {requests // n_rounds:,} "
        "requests per point, after a warm-up (figures: medians over the rounds). Load average "
        f"{', '.join(f'{v:.2f}' for v in load_before)} before, "
        f"{', '.join(f'{v:.2f}' for v in load_after)} after.",
        "",
    ]
    sec.lines += [
        "In-process CPU per cached by-id VJP call of W1 (the ASGI app called directly, no "
        "HTTP; best loop of 5, min over the rounds): "
        + "; ".join(f"{tree}: {min(v):.0f} µs" for tree, v in inproc.items() if v)
        + ".",
        "",
    ]
    rows = []
    for c in (1, 16):
        for key, label, _, _ in SERVERS:
            r = rps.get((key, c))
            if not r:
                rows.append([label, str(c), "—", "—", "—", "—", "not measured"])
                continue
            bad = {k: v for k, v in r["status"].items() if not k.startswith("2")}
            rows.append(
                [
                    label,
                    str(c),
                    f"{r['rps']:,.0f}",
                    common.fmt_time(r["p50"]),
                    common.fmt_time(r["p99"]),
                    common.fmt_time(r["cpu_per_request"]),
                    ", ".join(f"{v} x HTTP {k}" for k, v in bad.items()) or f"{r['ok']:,} ok",
                ]
            )
    sec.lines += common.table(
        [
            "endpoint",
            "connections",
            "requests/s",
            "p50",
            "p99",
            "server CPU per request",
            "responses",
        ],
        rows,
    )

    def mbps(r):
        return N_TENSOR * 4 / r["p50"] / 1e6 if r and r.get("p50") else None

    rows = [
        [
            k,
            common.fmt_time(v.get("p50")),
            f"{mbps(v):,.1f}" if mbps(v) else "—",
            f"{v['ok']}/{sum(v['status'].values())}",
        ]
        for k, v in rt.items()
    ]
    sec.lines += ["", "4 MiB f32 tensor round trip (one connection):", ""]
    sec.lines += common.table(["path", "round trip (median)", "MB/s", "ok"], rows)

    s16, f16 = rps.get(("shax", 16)), rps.get(("floor", 16))
    r = s16["rps"] / f16["rps"] if s16 and f16 and f16["rps"] else None
    sec.targets.append(
        common.Target(
            "W5",
            "cached VJP req/s vs floor at 16 connections",
            f"{100 * r:.0f}%" if r else "—",
            ">= 80%",
            None if r is None else r >= 0.8,
        )
    )
    r = s16["p99"] / f16["p99"] if s16 and f16 and f16["p99"] else None
    sec.targets.append(
        common.Target(
            "W5",
            "cached VJP p99 vs floor's at 16 connections",
            common.fmt_ratio(r),
            "<= 2x",
            None if r is None else r <= 2,
        )
    )
    b16 = rps.get(("shax-base", 16))
    if s16 and f16 and b16:
        sec.lines += [
            "",
            "At 16 connections, the baseline's fast path: "
            f"{100 * b16['rps'] / f16['rps']:.0f}% of the floor's requests/s, p99 "
            f"{b16['p99'] / f16['p99']:.2f}x the floor's, server CPU per request "
            f"{b16['cpu_per_request'] / f16['cpu_per_request']:.2f}x the floor's "
            f"({common.fmt_time(b16['cpu_per_request'])} against "
            f"{common.fmt_time(s16['cpu_per_request'])} now).",
        ]
    a16 = rps.get(("shax-app", 16))
    if s16 and f16 and a16:
        sec.lines += [
            "",
            "At 16 connections, requests/s vs the floor: fast path "
            f"{100 * s16['rps'] / f16['rps']:.0f}%, FastAPI route "
            f"{100 * a16['rps'] / f16['rps']:.0f}%; server CPU per request vs the floor's: "
            f"fast path {s16['cpu_per_request'] / f16['cpu_per_request']:.2f}x, FastAPI route "
            f"{a16['cpu_per_request'] / f16['cpu_per_request']:.2f}x.",
        ]
    b = mbps(rt.get("shax binary extension (/eval)"))
    raw = mbps(rt.get("raw octet-stream (echo app, floor)"))
    js = mbps(rt.get("shax JSON (/eval)"))
    r = b / raw if b and raw else None
    sec.targets.append(
        common.Target(
            "W5",
            "binary 4 MiB round trip vs raw octet-stream",
            f"{100 * r:.0f}%" if r else "—",
            ">= 50%",
            None if r is None else r >= 0.5,
        )
    )
    r = b / js if b and js else None
    sec.targets.append(
        common.Target(
            "W5",
            "binary vs JSON round trip",
            common.fmt_ratio(r),
            ">= 10x",
            None if r is None else r >= 10,
        )
    )
    sec.data = {
        "rps": {f"{k[0]}@{k[1]}": v for k, v in rps.items()},
        "roundtrip": rt,
        "in_process_us": inproc,
    }
    return sec


if __name__ == "__main__":
    if sys.argv[1:2] == ["--in-process"]:
        print(f"{in_process(int(sys.argv[2]) if len(sys.argv) > 2 else 2000):.1f}")
