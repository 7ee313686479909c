"""A bounded load test of the shax service: many concurrent clients against a real uvicorn.

    python tests/load/loadtest.py --clients 32 --requests 4000 --duration 60

Two phases, each against its own uvicorn subprocess on 127.0.0.1 (a free port):

1. **Mixed load** (``SHAX_MAX_INFLIGHT`` and ``SHAX_MAX_COMPILE_QUEUE`` >= clients, a small
   ``SHAX_CACHE_ENTRIES``): clients
   send a fixed number of requests in total (or stop at ``--duration``), mixing compile
   (``POST /v1/programs`` over more distinct programs than the cache holds, so it keeps
   evicting), VJP by id and inline (``/vjp`` with the program), forward eval, and metadata
   (``GET /v1/programs/{id}``, ``/v2/models/{id}``, ``/metrics``, ``/v2/health/ready``). Reports
   throughput, p50/p99 latency per kind, errors (any non-2xx or transport error; must be 0), and
   the server's resident memory (``VmRSS`` from ``/proc/<pid>/status``) after a warm-up that
   fills the cache and again after the run: with a bounded cache it must not keep growing.
2. **Overload** (``SHAX_MAX_INFLIGHT=2``, one eval thread, a program that takes a while): a burst
   of concurrent requests must each get an answer within the client timeout, either 200 or 503
   with ``Retry-After``; none may hang.

Exit status 0 when every check passes; ``--json`` prints the report as JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))  # run as a script too: the shared process helpers
from tests.servers import free_port, shax_process  # noqa: E402

MEDIUM = (ROOT / "tests" / "fixtures" / "seed_medium_traced.shax").read_text()


def program(k: int) -> str:
    """Distinct small programs (k gives the size, so each has its own cache entry)."""
    n = 2 + k
    return (
        f"def f(a :: f32[{n}], b :: f32[{n}]) = "
        "let x = mul a b y = sin x z = add y a w = reduce_sum [0] z in [w]"
    )


def inputs(k: int) -> list[dict]:
    n = 2 + k
    return [{"data": [0.25] * n}, {"data": [0.5] * n}]


# ---- server process ---------------------------------------------------------------------------


@contextmanager
def server(env_overrides: dict[str, str]):
    """A uvicorn subprocess on 127.0.0.1 (no SHAX_ settings but these); yields (url, pid)."""
    with shax_process(free_port(), env_overrides, inherit_shax=False) as (url, proc):
        yield url, proc.pid


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


# ---- the mixed load ---------------------------------------------------------------------------


@dataclass
class Stats:
    latencies: dict[str, list[float]] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    count: int = 0
    reuploads: int = 0

    def add(self, kind: str, seconds: float) -> None:
        self.latencies.setdefault(kind, []).append(seconds)
        self.count += 1


def percentile(xs: list[float], q: float) -> float:
    if not xs:
        return float("nan")
    xs = sorted(xs)
    return xs[min(len(xs) - 1, max(0, round(q / 100 * len(xs)) - 1))]


KINDS = [
    ("compile", 15),
    ("vjp", 30),
    ("vjp_inline", 10),
    ("eval", 20),
    ("metadata", 15),
    ("oip_infer", 10),
]


async def one_request(c, rng: random.Random, ids: dict, n_programs: int, stats: Stats):
    """One request of a random kind; a by-id call whose program was evicted (404) re-uploads
    it and retries once, as the SDK does (counted as ``reuploads``, not as an error)."""
    kind = rng.choices([k for k, _ in KINDS], weights=[w for _, w in KINDS])[0]
    k = rng.randrange(n_programs)
    kind, r = await _request(c, kind, k, ids)
    if r.status_code == 404 and kind not in ("compile", "vjp_inline"):
        stats.reuploads += 1
        await _request(c, "compile", k, ids)
        kind, r = await _request(c, kind, k, ids)
    return kind, r


async def _request(c: httpx.AsyncClient, kind: str, k: int, ids: dict):
    if kind == "compile" or k not in ids:
        r = await c.post("/v1/programs", json={"program": program(k)})
        if r.status_code == 200:
            ids[k] = r.json()["id"]
        return "compile", r
    pid = ids[k]
    if kind == "vjp":
        return kind, await c.post(f"/v1/programs/{pid}/vjp", json={"inputs": inputs(k)})
    if kind == "vjp_inline":
        return kind, await c.post("/vjp", json={"program": program(k), "inputs": inputs(k)})
    if kind == "eval":
        return kind, await c.post(f"/v1/programs/{pid}/eval", json={"inputs": inputs(k)})
    if kind == "oip_infer":
        n = 2 + k
        body = {
            "inputs": [
                {"name": name, "shape": [n], "datatype": "FP32", "data": [0.5] * n}
                for name in ("a0", "a1")
            ]
        }
        return kind, await c.post(f"/v2/models/{pid}/infer", json=body)
    paths = [f"/v1/programs/{pid}", f"/v2/models/{pid}", "/metrics", "/v2/health/ready", "/v2"]
    path = paths[k % len(paths)]
    return kind, await c.get(path)


async def mixed_load(
    url: str, clients: int, requests: int, duration: float, n_programs: int, seed: int
) -> tuple[Stats, float]:
    stats = Stats()
    ids: dict[int, str] = {}
    remaining = [requests]
    deadline = time.monotonic() + duration

    async def client(i: int) -> None:
        rng = random.Random(seed * 1000 + i)
        limits = httpx.Limits(max_connections=1)
        async with httpx.AsyncClient(base_url=url, timeout=30, limits=limits) as c:
            while remaining[0] > 0 and time.monotonic() < deadline:
                remaining[0] -= 1
                start = time.perf_counter()
                try:
                    kind, r = await one_request(c, rng, ids, n_programs, stats)
                except httpx.HTTPError as e:
                    stats.errors.append(f"transport: {type(e).__name__}: {e}")
                    continue
                elapsed = time.perf_counter() - start
                if r.status_code // 100 != 2:
                    stats.errors.append(f"{kind} {r.request.url.path}: {r.status_code} {r.text}")
                stats.add(kind, elapsed)

    start = time.perf_counter()
    await asyncio.gather(*(client(i) for i in range(clients)))
    return stats, time.perf_counter() - start


# ---- overload ---------------------------------------------------------------------------------

HEAVY = (
    "def f(a :: f32[384, 384]) = let b = dot a a c = dot b a d = dot c a e = dot d a "
    "g = sin e h = reduce_sum [0,1] g in [h]"
)


async def overload(url: str, burst: int, timeout: float) -> dict:
    async with httpx.AsyncClient(base_url=url, timeout=timeout) as c:
        r = await c.post("/v1/programs", json={"program": HEAVY})
        r.raise_for_status()
        pid = r.json()["id"]
        body = {"inputs": [{"data": [0.001] * (384 * 384)}]}

        async def one():
            start = time.perf_counter()
            try:
                resp = await c.post(f"/v1/programs/{pid}/vjp", json=body)
            except httpx.TimeoutException:
                return "hang", time.perf_counter() - start, None
            return resp.status_code, time.perf_counter() - start, resp.headers.get("Retry-After")

        start = time.perf_counter()
        results = await asyncio.gather(*(one() for _ in range(burst)))
        wall = time.perf_counter() - start
        healthy = (await c.get("/v2/health/ready")).status_code == 200
    statuses: dict[str, int] = {}
    for status, _, _ in results:
        statuses[str(status)] = statuses.get(str(status), 0) + 1
    return {
        "burst": burst,
        "statuses": statuses,
        "busy_with_retry_after": sum(1 for s, _, ra in results if s == 503 and ra),
        "max_latency_s": round(max(t for _, t, _ in results), 3),
        "wall_s": round(wall, 3),
        "healthy_after": healthy,
    }


# ---- the whole run ----------------------------------------------------------------------------


def run(
    clients: int = 16,
    requests: int = 600,
    duration: float = 20.0,
    n_programs: int = 48,
    cache_entries: int = 16,
    burst: int = 24,
    rss_slack_mib: float = 48.0,
    seed: int = 1,
) -> dict:
    env = {
        "SHAX_CACHE_ENTRIES": str(cache_entries),
        "SHAX_MAX_INFLIGHT": str(max(64, 2 * clients)),
        "SHAX_MAX_COMPILE_QUEUE": str(max(64, 2 * clients)),  # the mixed phase refuses nothing
        "SHAX_EVAL_THREADS": "2",
    }
    report: dict = {"clients": clients, "requests": requests, "programs": n_programs}
    with server(env) as (url, pid):
        # warm-up: every program compiled and evaluated once, so the cache is full and evicting
        warm, _ = asyncio.run(
            mixed_load(url, 8, n_programs * 3, duration, n_programs, seed=seed + 99)
        )
        rss_before = rss_bytes(pid)
        stats, elapsed = asyncio.run(mixed_load(url, clients, requests, duration, n_programs, seed))
        rss_after = rss_bytes(pid)
        metrics = httpx.get(f"{url}/metrics", timeout=10).text
    all_lat = [t for ts in stats.latencies.values() for t in ts]
    report.update(
        {
            "completed": stats.count,
            "seconds": round(elapsed, 3),
            "throughput_rps": round(stats.count / elapsed, 1),
            "p50_ms": round(1000 * percentile(all_lat, 50), 2),
            "p99_ms": round(1000 * percentile(all_lat, 99), 2),
            "per_kind": {
                k: {
                    "n": len(v),
                    "p50_ms": round(1000 * percentile(v, 50), 2),
                    "p99_ms": round(1000 * percentile(v, 99), 2),
                    "mean_ms": round(1000 * statistics.fmean(v), 2),
                }
                for k, v in sorted(stats.latencies.items())
            },
            "errors": len(stats.errors) + len(warm.errors),
            "reuploads_after_eviction": stats.reuploads,
            "error_samples": (warm.errors + stats.errors)[:5],
            "rss_before_mib": round(rss_before / 2**20, 1),
            "rss_after_mib": round(rss_after / 2**20, 1),
            "rss_growth_mib": round((rss_after - rss_before) / 2**20, 1),
            "cache_entries_metric": _metric(metrics, "shax_cache_entries"),
        }
    )
    env = {"SHAX_MAX_INFLIGHT": "2", "SHAX_EVAL_THREADS": "1", "SHAX_RETRY_AFTER": "1"}
    with server(env) as (url, _):
        report["overload"] = asyncio.run(overload(url, burst, timeout=30))
    report["checks"] = checks(report, cache_entries, rss_slack_mib)
    return report


def _metric(text: str, name: str) -> float | None:
    for line in text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    return None


def checks(report: dict, cache_entries: int, rss_slack_mib: float) -> dict[str, bool]:
    ov = report["overload"]
    cached = report["cache_entries_metric"]
    return {
        "zero_errors": report["errors"] == 0,
        "all_requests_done": report["completed"] == report["requests"],
        "cache_within_bounds": cached is not None and cached <= cache_entries,
        "rss_bounded": report["rss_growth_mib"] <= rss_slack_mib,
        "overload_answered_no_hang": "hang" not in ov["statuses"]
        and set(ov["statuses"]) <= {"200", "503"},
        "overload_503_has_retry_after": ov["busy_with_retry_after"] == ov["statuses"].get("503", 0)
        and ov["busy_with_retry_after"] > 0,
        "healthy_after_overload": ov["healthy_after"],
    }


def markdown(report: dict) -> str:
    lines = [
        f"- clients: {report['clients']}, requests: {report['completed']} of "
        f"{report['requests']}, distinct programs: {report['programs']}",
        f"- throughput: {report['throughput_rps']} req/s over {report['seconds']} s",
        f"- latency: p50 {report['p50_ms']} ms, p99 {report['p99_ms']} ms",
        f"- errors: {report['errors']} (by-id calls that found their program evicted and "
        f"re-uploaded it first: {report['reuploads_after_eviction']})",
        f"- server RSS: {report['rss_before_mib']} MiB before, {report['rss_after_mib']} MiB "
        f"after ({report['rss_growth_mib']:+} MiB); cache entries at the end: "
        f"{report['cache_entries_metric']}",
        f"- overload burst of {report['overload']['burst']}: {report['overload']['statuses']}, "
        f"slowest answer {report['overload']['max_latency_s']} s, "
        f"healthy after: {report['overload']['healthy_after']}",
        "",
        "| kind | n | p50 ms | p99 ms | mean ms |",
        "|---|---|---|---|---|",
    ]
    for k, v in report["per_kind"].items():
        lines.append(f"| {k} | {v['n']} | {v['p50_ms']} | {v['p99_ms']} | {v['mean_ms']} |")
    lines.append("")
    lines += [f"- check {k}: {'ok' if ok else 'FAILED'}" for k, ok in report["checks"].items()]
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--clients", type=int, default=32)
    ap.add_argument("--requests", type=int, default=4000)
    ap.add_argument("--duration", type=float, default=60.0, help="time bound of the main phase")
    ap.add_argument("--programs", type=int, default=96)
    ap.add_argument("--cache-entries", type=int, default=32)
    ap.add_argument("--burst", type=int, default=48)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    report = run(
        clients=args.clients,
        requests=args.requests,
        duration=args.duration,
        n_programs=args.programs,
        cache_entries=args.cache_entries,
        burst=args.burst,
    )
    print(json.dumps(report, indent=2) if args.json else markdown(report))
    return 0 if all(report["checks"].values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
