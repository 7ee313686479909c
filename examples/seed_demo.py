"""The seed's whole demo, through the SDK: trace here, differentiate and descend on a server.

    make run                                  # in one terminal: the server on 127.0.0.1:8000
    .venv/bin/python examples/seed_demo.py    # in another

    .venv/bin/python examples/seed_demo.py --in-process      # no server needed: the app runs here
    .venv/bin/python examples/seed_demo.py --url http://host:8000 --api-key KEY

Prints what the seed prints: f's program, gradient descent's 40 iterations and the minimum, then
medium's stages (traced here; typed, rewritten, linearized, transposed and zipped by the server)
and the numbers f(x), df(dx), dft(ct) and the VJP.
"""

from __future__ import annotations

import argparse
import contextlib

import numpy as np
from shax_client import Client

# the seed's two functions (in shax_core.numpy) and its inputs
from shax_core.demo import REWRITES_HEADING, SEED_A, SEED_B, SEED_CT, f, medium
from shax_core.text import format_float


def fmt(arrays) -> str:
    """Arrays printed one per line, in a list, as the seed does (without its boxes)."""
    return "[" + ",\n ".join(np.array2string(np.asarray(a), precision=8) for a in arrays) + "]"


def f32(x) -> str:
    return format_float(float(x), "f32")


def run(client: Client, out=print, progress: bool = False) -> None:
    """The demo against ``client``; ``out`` receives each printed block."""
    x0 = (np.float32(0.5), np.float32(-0.75))
    rf = client.compile(f, *x0)
    out(rf.program)  # as traced here (the server names its stages canonically: a0, v0, ...)
    result = client.minimize(f, x0, steps=40, lr=0.05, optimizer="gd", progress=progress)
    for step in result.trajectory:
        out(f"Iteration {step.step}: {f32(step.value)}")
    location = ",".join(f"fromList [] [{f32(x)}]" for x in result.params)
    out(f"Minimum location: [{location}]")
    out(f"Minimum value: {f32(result.value)}")

    rm = client.compile(medium, SEED_A, SEED_B)
    stages = rm.stages()
    out("\nAfter tracing:")
    out(rm.program)
    out("After type inference:")
    out(stages["typed"])
    out(REWRITES_HEADING)
    out(stages["rewritten"])
    out("Linearized definition(s):")
    out(stages["linearized"])
    out(stages["linear"])
    out("f(x):")
    out(fmt([rm(SEED_A, SEED_B)]))
    out("df(dx):")
    out(fmt([rm.jvp((SEED_A, SEED_B), (SEED_A, SEED_B))[1]]))
    out("Transposed definition(s):")
    out(stages["transposed"])
    outputs, gradients = rm.vjp(SEED_A, SEED_B, cotangents=SEED_CT)
    out("f(x) (again):")
    out(fmt([outputs]))
    out("dft(ct):")
    out(fmt(gradients))
    out("Zipped primal and transpose:")
    out(stages["vjp"])
    out("VJP:")
    out(fmt([outputs, *gradients]))


@contextlib.contextmanager
def connect(args):
    """A Client for the URL, or for an app running in this process (``--in-process``)."""
    if not args.in_process:
        with Client(args.url, api_key=args.api_key) as client:
            yield client
        return
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Starlette deprecates TestClient over httpx
        from fastapi.testclient import TestClient
    from shax_server.app import create_app

    with TestClient(create_app()) as http, Client("http://testserver", http=http) as client:
        yield client


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="http://127.0.0.1:8000", help="the shax server")
    parser.add_argument("--api-key", default=None, help="if the server sets SHAX_API_KEYS")
    parser.add_argument(
        "--in-process", action="store_true", help="run the server app in this process instead"
    )
    parser.add_argument("--progress", action="store_true", help="show a progress bar")
    args = parser.parse_args(argv)
    with connect(args) as client:
        run(client, progress=args.progress)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
