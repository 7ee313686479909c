"""Latency of one inference by protocol and body: tritonclient over HTTP (JSON, binary, binary +
gzip) and gRPC, against a real ``shax serve`` on 127.0.0.1 with a model repository.

    python bench/protocols.py                 writes docs/protocols.md
    python bench/protocols.py --quick         fewer requests, report to stdout only

Two models of one program, least squares loss(w, x, y) = sum((x w - y)^2) and its gradient in w:
``small`` (x: 4 x 3) and ``large`` (x: 512 x 1024, 2 MiB of f32 per request). Each cell is the
median (and 90th percentile) of N sequential requests after a warm-up, one client thread, client
and server on the same machine (they share its cores, and other work on the machine shows up).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.servers import free_port  # noqa: E402

PROGRAM = """def least_squares(w :: f32[{n}], x :: f32[{m}, {n}], y :: f32[{m}]) =
  let p :: f32[{m}] = dot x w
      r :: f32[{m}] = sub p y
      s :: f32[{m}] = mul r r
      l :: f32[] = reduce_sum [0] s
  in [l]
"""
SIZES = {"small": (4, 3), "large": (512, 1024)}
CONFIG = {"inputs": ["w", "x", "y"], "outputs": ["loss"], "wrt": [0]}


def repository(root: Path) -> None:
    for name, (m, n) in SIZES.items():
        (root / name / "1").mkdir(parents=True)
        (root / name / "1" / "model.shax").write_text(PROGRAM.format(m=m, n=n))
        (root / name / "config.json").write_text(json.dumps(CONFIG))


def arrays(name: str):
    m, n = SIZES[name]
    rng = np.random.default_rng(0)
    return {
        "w": rng.standard_normal(n).astype(np.float32),
        "x": rng.standard_normal((m, n)).astype(np.float32),
        "y": rng.standard_normal(m).astype(np.float32),
    }


def http_call(client, name: str, binary: bool, compression: str | None):
    values = arrays(name)
    inputs = []
    for k, v in values.items():
        t = httpclient.InferInput(k, list(v.shape), "FP32")
        t.set_data_from_numpy(v, binary_data=binary)
        inputs.append(t)
    outputs = [httpclient.InferRequestedOutput(k, binary_data=binary) for k in ("loss", "w_grad")]

    def call():
        return client.infer(
            name, inputs, outputs=outputs, request_compression_algorithm=compression
        )

    return call, values


def grpc_call(client, name: str):
    values = arrays(name)
    inputs = []
    for k, v in values.items():
        t = grpcclient.InferInput(k, list(v.shape), "FP32")
        t.set_data_from_numpy(v)
        inputs.append(t)

    def call():
        return client.infer(name, inputs)

    return call, values


def measure(call, values, n: int) -> tuple[float, float]:
    """(median, p90) milliseconds of ``n`` calls; the first result is checked against NumPy."""
    result = call()
    r = values["x"].astype(np.float64) @ values["w"] - values["y"]
    np.testing.assert_allclose(result.as_numpy("w_grad"), 2 * values["x"].T @ r, rtol=1e-3)
    for _ in range(3):
        call()
    times = []
    for _ in range(n):
        start = time.perf_counter()
        call()
        times.append((time.perf_counter() - start) * 1e3)
    times.sort()
    return statistics.median(times), times[int(0.9 * (len(times) - 1))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", default=str(REPO / "docs" / "protocols.md"))
    args = parser.parse_args()
    n = {"small": 30, "large": 3} if args.quick else {"small": 300, "large": 12}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        repository(root)
        port, grpc_port = free_port(), free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("SHAX_")}
        cmd = [sys.executable, "-m", "shax_server.cli", "--port", str(port)]
        cmd += ["--grpc-port", str(grpc_port), "--model-repository", str(root)]
        proc = subprocess.Popen([*cmd, "--log-level", "warning"], env=env, cwd=REPO)
        try:
            http = httpclient.InferenceServerClient(f"127.0.0.1:{port}")
            deadline = time.monotonic() + 60
            while True:
                try:
                    if http.is_server_ready():
                        break
                except Exception:
                    pass
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise SystemExit("shax serve did not become ready")
                time.sleep(0.1)
            grpc = grpcclient.InferenceServerClient(f"127.0.0.1:{grpc_port}")
            rows = []
            for name in SIZES:
                cells = {
                    "HTTP JSON": measure(*http_call(http, name, False, None), n[name]),
                    "HTTP binary": measure(*http_call(http, name, True, None), n[name]),
                    "HTTP binary + gzip": measure(*http_call(http, name, True, "gzip"), n[name]),
                    "gRPC": measure(*grpc_call(grpc, name), n[name]),
                }
                rows.append((name, cells))
        finally:
            proc.terminate()
            proc.wait(timeout=20)
    m_small, m_large = SIZES["small"], SIZES["large"]
    lines = [
        "# Inference latency by protocol (tritonclient against shax serve)",
        "",
        f"`python bench/protocols.py` on {datetime.date.today()}, {platform.machine()}, "
        f"{os.cpu_count()} cores, Python {platform.python_version()}; client and server on one "
        "machine (loopback), one client thread, sequential requests.",
        "",
        f"Model: least squares and its gradient, small = x {m_small[0]}x{m_small[1]}, large = "
        f"x {m_large[0]}x{m_large[1]} f32 ({m_large[0] * m_large[1] * 4 / 2**20:.0f} MiB per "
        f"request). {n['small']} / {n['large']} requests per cell after a warm-up; "
        "median (p90), milliseconds.",
        "",
        "| model | " + " | ".join(rows[0][1]) + " |",
        "|---|" + "---|" * len(rows[0][1]),
    ]
    for name, cells in rows:
        lines.append(
            f"| {name} | " + " | ".join(f"{a:.2f} ({b:.2f})" for a, b in cells.values()) + " |"
        )
    lines += [
        "",
        "JSON pays for turning every float into text and back (the large model's 2 MiB of f32 is "
        "about 10 MB of JSON); the binary extension and gRPC carry the bytes. gzip shrinks "
        "random floats little and costs compression on both sides: it pays only on slow links.",
    ]
    report = "\n".join(lines) + "\n"
    print(report)
    if not args.quick:
        Path(args.out).write_text(report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
