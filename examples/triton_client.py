"""A Triton client script, run unchanged against shax (HTTP and gRPC).

Start shax with the example repository, then run this script::

    shax serve --port 8000 --grpc-port 8001 --model-repository examples/model_repository
    python examples/triton_client.py --http 127.0.0.1:8000 --grpc 127.0.0.1:8001

It uses nothing but ``tritonclient``: model names and versions, metadata, config, the repository
index, unload and load, statistics, and ``infer`` with JSON, binary and gzip bodies and a NaN
input. ``least_squares`` is loss(w, x, y) = sum((x @ w - y)**2) (version 1) or a quarter of it
(version 2); the gradient with respect to w is 2 x^T (x @ w - y), times 1/4 for version 2. The
script checks every number against NumPy and exits with 1 on a mismatch.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient

MODEL = "least_squares"
rng = np.random.default_rng(0)
W = rng.standard_normal(3).astype(np.float32)
X = rng.standard_normal((4, 3)).astype(np.float32)
Y = rng.standard_normal(4).astype(np.float32)


def expected(version: str, w=W, x=X, y=Y) -> tuple[np.ndarray, np.ndarray]:
    scale = {"1": 1.0, "2": 0.25}[version]
    r = x.astype(np.float64) @ w - y
    return scale * (r @ r), scale * 2 * x.T.astype(np.float64) @ r


def inputs(client, binary: bool, w=W, x=X, y=Y):
    made = []
    for name, value in (("w", w), ("x", x), ("y", y)):
        tensor = client.InferInput(name, list(value.shape), "FP32")
        if client is httpclient:
            tensor.set_data_from_numpy(value, binary_data=binary)
        else:
            tensor.set_data_from_numpy(value)
        made.append(tensor)
    return made


def check(what: str, got, want) -> None:
    if not np.allclose(got, want, rtol=1e-4, atol=1e-5, equal_nan=True):
        print(f"MISMATCH {what}: got {got}, expected {want}")
        sys.exit(1)
    print(f"ok  {what}")


def run_http(url: str) -> None:
    client = httpclient.InferenceServerClient(url)
    assert client.is_server_live() and client.is_server_ready()
    print("server:", client.get_server_metadata())
    print("index:", client.get_model_repository_index())
    meta = client.get_model_metadata(MODEL)
    print("metadata:", meta["name"], meta["versions"], [t["name"] for t in meta["inputs"]])
    config = client.get_model_config(MODEL, "1")
    print("config inputs:", [(t["name"], t["data_type"], t["dims"]) for t in config["input"]])
    for version in ("1", "2"):
        for binary, compression in (
            (False, None),
            (True, None),
            (True, "gzip"),
            (False, "deflate"),
        ):
            result = client.infer(
                MODEL,
                inputs(httpclient, binary),
                model_version=version,
                outputs=[
                    httpclient.InferRequestedOutput("loss", binary_data=binary),
                    httpclient.InferRequestedOutput("w_grad", binary_data=binary),
                ],
                request_compression_algorithm=compression,
            )
            loss, grad = expected(version)
            how = f"http v{version} {'binary' if binary else 'json'} {compression or ''}"
            check(f"{how} loss", result.as_numpy("loss"), loss)
            check(f"{how} w_grad", result.as_numpy("w_grad"), grad)
    # a NaN in y, sent as JSON (tritonclient writes a bare NaN token)
    y = Y.copy()
    y[2] = np.nan
    result = client.infer(MODEL, inputs(httpclient, False, y=y), model_version="1")
    loss, grad = expected("1", y=y)
    check("http NaN input loss", result.as_numpy("loss"), loss)
    check("http NaN input w_grad", result.as_numpy("w_grad"), grad)
    stats = client.get_inference_statistics(MODEL, "1")["model_stats"][0]
    print("stats v1: inference_count", stats["inference_count"])
    client.unload_model(MODEL)
    assert not client.is_model_ready(MODEL)
    client.load_model(MODEL)
    assert client.is_model_ready(MODEL, "2")
    print("unload/load: ok")


def run_grpc(url: str) -> None:
    client = grpcclient.InferenceServerClient(url)
    assert client.is_server_live() and client.is_server_ready()
    print("grpc server:", client.get_server_metadata(as_json=True)["extensions"])
    print("grpc index:", client.get_model_repository_index(as_json=True))
    meta = client.get_model_metadata(MODEL, "2", as_json=True)
    print("grpc metadata:", meta["name"], meta["versions"])
    config = client.get_model_config(MODEL, as_json=True)["config"]
    print("grpc config inputs:", [t["name"] for t in config["input"]])
    for version in ("1", "2"):
        result = client.infer(MODEL, inputs(grpcclient, True), model_version=version)
        loss, grad = expected(version)
        check(f"grpc v{version} loss", result.as_numpy("loss"), loss)
        check(f"grpc v{version} w_grad", result.as_numpy("w_grad"), grad)
    x = X.copy()
    x[0, 1] = np.nan
    result = client.infer(MODEL, inputs(grpcclient, True, x=x), model_version="1")
    loss, grad = expected("1", x=x)
    check("grpc NaN input w_grad", result.as_numpy("w_grad"), grad)
    stats = client.get_inference_statistics(MODEL, as_json=True)["model_stats"]
    print("grpc stats:", [(s["version"], s.get("inference_count", "0")) for s in stats])
    client.unload_model(MODEL)
    assert not client.is_model_ready(MODEL)
    client.load_model(MODEL)
    assert client.is_model_ready(MODEL)
    print("grpc unload/load: ok")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--http", default="127.0.0.1:8000")
    parser.add_argument("--grpc", default="127.0.0.1:8001", help="'' to skip gRPC")
    args = parser.parse_args()
    run_http(args.http)
    if args.grpc:
        run_grpc(args.grpc)
    print("all checks passed")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
