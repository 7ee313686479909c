"""A small HTTP/1.1 load generator for W5, run as its own process (never inside the server's).

    python load.py SPEC.json   ->  one JSON line of results on stdout

SPEC: ``{"host", "port", "method", "path", "headers": {..}, "body_file", "connections",
"requests", "duration", "warmup"}``. Each connection is a keep-alive asyncio stream (uvloop when
installed) sending the same pre-built request back to back; the run stops after ``requests``
responses or ``duration`` seconds, whichever comes first, and every read has a timeout. A raw
client instead of httpx keeps the client's own cost per request small next to the server's, so
the floor measured is the server's and not the load generator's.

Results: ok (2xx) and failed counts by status, elapsed, requests/s of 2xx responses, latency
p50/p99 (2xx) in seconds, and response bytes.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time

READ_TIMEOUT = 30.0


def build_request(spec: dict, body: bytes) -> bytes:
    lines = [
        f"{spec.get('method', 'POST')} {spec['path']} HTTP/1.1",
        f"Host: {spec['host']}:{spec['port']}",
        f"Content-Length: {len(body)}",
        "Connection: keep-alive",
    ]
    lines += [f"{k}: {v}" for k, v in spec.get("headers", {}).items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


async def read_response(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    headers = {}
    for line in lines[1:]:
        if ":" in line:
            k, v = line.split(":", 1)
            headers[k.strip().lower()] = v.strip()
    if "content-length" in headers:
        return status, await reader.readexactly(int(headers["content-length"]))
    if headers.get("transfer-encoding", "").lower() == "chunked":
        parts = []
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            chunk = await reader.readexactly(size + 2)
            if size == 0:
                return status, b"".join(parts)
            parts.append(chunk[:-2])
    return status, b""


async def connection(spec, request, stop_at, budget, stats, record: bool):
    reader, writer = await asyncio.wait_for(
        asyncio.open_connection(spec["host"], spec["port"]), READ_TIMEOUT
    )
    try:
        while budget[0] > 0 and time.monotonic() < stop_at:
            budget[0] -= 1
            t0 = time.perf_counter()
            writer.write(request)
            status, body = await asyncio.wait_for(read_response(reader), READ_TIMEOUT)
            dt = time.perf_counter() - t0
            if not record:
                continue
            stats["status"][status] = stats["status"].get(status, 0) + 1
            stats["bytes"] += len(body)
            if 200 <= status < 300:
                stats["latency"].append(dt)
    finally:
        writer.close()


async def run(spec: dict) -> dict:
    body = b""
    if spec.get("body_file"):
        with open(spec["body_file"], "rb") as fh:
            body = fh.read()
    request = build_request(spec, body)
    conns = int(spec.get("connections", 1))
    # warm-up: a few requests per connection, not recorded
    warm = int(spec.get("warmup", 0))
    if warm:
        stats = {"status": {}, "bytes": 0, "latency": []}
        budget = [warm]
        stop = time.monotonic() + 10
        await asyncio.gather(
            *(connection(spec, request, stop, budget, stats, False) for _ in range(conns))
        )
    stats = {"status": {}, "bytes": 0, "latency": []}
    budget = [int(spec["requests"])]
    t0 = time.perf_counter()
    stop = time.monotonic() + float(spec["duration"])
    await asyncio.gather(
        *(connection(spec, request, stop, budget, stats, True) for _ in range(conns))
    )
    elapsed = time.perf_counter() - t0
    lat = sorted(stats["latency"])
    ok = len(lat)

    def pct(q):
        return lat[min(len(lat) - 1, int(q * len(lat)))] if lat else None

    return {
        "connections": conns,
        "ok": ok,
        "status": {str(k): v for k, v in sorted(stats["status"].items())},
        "elapsed": elapsed,
        "rps": ok / elapsed if elapsed > 0 else 0.0,
        "p50": pct(0.50),
        "p99": pct(0.99),
        "bytes": stats["bytes"],
        "request_bytes": len(body),
    }


def main(argv: list[str]) -> int:
    with open(argv[0]) as fh:
        spec = json.load(fh)
    try:
        import uvloop

        factory = uvloop.new_event_loop
    except ImportError:
        factory = None
    with asyncio.Runner(loop_factory=factory) as runner:
        print(json.dumps(runner.run(run(spec))))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
