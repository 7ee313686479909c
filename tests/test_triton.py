"""Triton and KServe clients against a real ``shax serve`` with a model repository.

One server per module: ``shax serve --model-repository <copy of examples/model_repository>
--grpc-port P`` on 127.0.0.1. tritonclient (HTTP and gRPC), unchanged, drives it the way a
Triton user does: names and versions, metadata, config, repository index/load/unload,
statistics, infer with JSON, binary, gzip and deflate bodies and NaN inputs. Every number is
checked against NumPy in f64 (least squares has a closed-form gradient), and the example client
script ``examples/triton_client.py`` runs against the same server.
"""

from __future__ import annotations

import gzip
import re
import shutil
import subprocess
import sys
import zlib

import httpx
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from tests.conftest import ROOT
from tests.metrics_text import metric_sum
from tests.servers import free_port, shax_server

REPOSITORY = ROOT / "examples" / "model_repository"
MODEL = "least_squares"
KEY = "triton-test-key"
rng = np.random.default_rng(7)
W = rng.standard_normal(3).astype(np.float32)
X = rng.standard_normal((4, 3)).astype(np.float32)
Y = rng.standard_normal(4).astype(np.float32)
SINSUM = (
    "def f(v :: f32[3]) =\n"
    "  let s :: f32[3] = sin v\n"
    "      l :: f32[] = reduce_sum [0] s\n"
    "  in [l]\n"
)


def expected(version: str, w=W, x=X, y=Y):
    """loss and d loss / d w in f64: sum(r^2) and 2 x^T r, r = x w - y (version 2: / 4)."""
    scale = {"1": 1.0, "2": 0.25}[version]
    r = x.astype(np.float64) @ w.astype(np.float64) - y
    return scale * (r @ r), scale * 2 * x.T.astype(np.float64) @ r


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    root = tmp_path_factory.mktemp("repository")
    shutil.copytree(REPOSITORY, root, dirs_exist_ok=True)
    # a model that cannot load: the server still starts, the index says why
    (root / "broken" / "1").mkdir(parents=True)
    (root / "broken" / "1" / "model.shax").write_text("def f(x :: f32[2]) =\n  in [y]\n")
    return root


@pytest.fixture(scope="module")
def server(repo):
    grpc_port = free_port()
    args = ["--model-repository", str(repo), "--grpc-port", str(grpc_port)]
    env = {"SHAX_MAX_BODY_BYTES": str(4 * 1024 * 1024)}
    with shax_server(free_port(), env, args=args) as url:
        yield url, f"127.0.0.1:{grpc_port}"


@pytest.fixture(scope="module")
def http(server):
    return httpclient.InferenceServerClient(server[0].removeprefix("http://"))


@pytest.fixture(scope="module")
def grpc(server):
    return grpcclient.InferenceServerClient(server[1])


def http_inputs(binary: bool, w=W, x=X, y=Y):
    made = []
    for name, value in (("w", w), ("x", x), ("y", y)):
        t = httpclient.InferInput(name, list(value.shape), "FP32")
        t.set_data_from_numpy(value, binary_data=binary)
        made.append(t)
    return made


def grpc_inputs(w=W, x=X, y=Y):
    made = []
    for name, value in (("w", w), ("x", x), ("y", y)):
        t = grpcclient.InferInput(name, list(value.shape), "FP32")
        t.set_data_from_numpy(value)
        made.append(t)
    return made


def check(result, version: str, **inputs) -> None:
    loss, grad = expected(version, **inputs)
    assert result.as_numpy("loss").dtype == np.float32
    np.testing.assert_allclose(result.as_numpy("loss"), loss, rtol=1e-5)
    np.testing.assert_allclose(result.as_numpy("w_grad"), grad, rtol=1e-4, atol=1e-6)


def metric(url: str, name: str, **labels) -> float:
    return metric_sum(httpx.get(f"{url}/metrics").text, name, **labels)


# ---------------------------------------------------------------------------------------------
# HTTP


def test_server_metadata_health_and_head(http, server):
    assert http.is_server_live() and http.is_server_ready()
    extensions = http.get_server_metadata()["extensions"]
    for ext in ("binary_tensor_data", "model_repository", "model_configuration", "statistics"):
        assert ext in extensions
    for path in ("/v2/health/live", "/v2/health/ready", f"/v2/models/{MODEL}/ready"):
        r = httpx.head(server[0] + path)
        assert r.status_code == 200 and r.content == b"", path
    assert httpx.head(server[0] + "/v2/models/nope/ready").status_code == 404


def test_repository_index_lists_versions_and_the_model_that_failed(http):
    index = http.get_model_repository_index()
    ready = {(m["name"], m.get("version")) for m in index if m["state"] == "READY"}
    assert {(MODEL, "1"), (MODEL, "2"), ("sinsum", "1")} <= ready
    broken = [m for m in index if m["name"] == "broken"]
    assert broken and broken[0]["state"] == "UNAVAILABLE"
    assert "model.shax" in broken[0]["reason"] and "line 2" in broken[0]["reason"]
    assert not http.is_model_ready("broken")


def test_metadata_by_name_and_version(http):
    meta = http.get_model_metadata(MODEL)
    assert meta["name"] == MODEL and meta["versions"] == ["1", "2"]
    assert [(t["name"], t["shape"]) for t in meta["inputs"]] == [
        ("w", [3]),
        ("x", [4, 3]),
        ("y", [4]),
        ("loss_ct", []),
    ]
    assert [t["name"] for t in meta["outputs"]] == ["loss", "w_grad"]
    assert http.get_model_metadata(MODEL, "2")["name"] == MODEL
    with pytest.raises(InferenceServerException, match="no version '9'"):
        http.get_model_metadata(MODEL, "9")
    # a model without a config keeps the names its program carries (whatever they are)
    sinsum = http.get_model_metadata("sinsum")
    assert len(sinsum["inputs"]) == 2 and len(sinsum["outputs"]) == 2


def test_model_config(http):
    config = http.get_model_config(MODEL, "1")
    assert config["name"] == MODEL and config["max_batch_size"] == 0
    assert config["input"][1] == {"name": "x", "data_type": "TYPE_FP32", "dims": [4, 3]}
    assert config["output"][1]["name"] == "w_grad"
    assert config["parameters"]["wrt"] == {"string_value": "0"}
    assert re.fullmatch(r"[0-9a-f]{64}", config["parameters"]["content_id"]["string_value"])


@pytest.mark.parametrize("version", ["1", "2"])
@pytest.mark.parametrize(
    "binary, compression",
    [(False, None), (True, None), (True, "gzip"), (False, "gzip"), (True, "deflate")],
)
def test_infer_json_binary_and_compressed(http, version, binary, compression):
    outputs = [httpclient.InferRequestedOutput(n, binary_data=binary) for n in ("loss", "w_grad")]
    result = http.infer(
        MODEL,
        http_inputs(binary),
        model_version=version,
        outputs=outputs,
        request_id="req-7",
        request_compression_algorithm=compression,
    )
    check(result, version)
    response = result.get_response()
    assert response["model_name"] == MODEL and response["model_version"] == version
    assert response["id"] == "req-7"


def test_latest_version_is_the_default(http):
    result = http.infer(MODEL, http_inputs(True))
    assert result.get_response()["model_version"] == "2"
    check(result, "2")


@pytest.mark.parametrize("where", ["y", "x", "w"])
def test_nan_and_infinity_inputs_as_bare_json_tokens(http, where):
    inputs = {"w": W.copy(), "x": X.copy(), "y": Y.copy()}
    inputs[where].flat[1] = np.nan
    inputs["y"].flat[3] = np.inf if where != "y" else 1.0
    result = http.infer(MODEL, http_inputs(False, **inputs), model_version="1")
    loss, grad = expected("1", **inputs)
    got = result.as_numpy("w_grad")
    assert np.array_equal(np.isnan(got), np.isnan(grad)) and np.isnan(result.as_numpy("loss"))
    np.testing.assert_allclose(got[~np.isnan(got)], grad[~np.isnan(grad)], rtol=1e-4)


def test_a_zip_bomb_stops_at_the_body_limit(server):
    bomb = gzip.compress(b"0" * (64 * 1024 * 1024))  # 64 MiB of zeros, ~64 kB compressed
    assert len(bomb) < 4 * 1024 * 1024
    r = httpx.post(
        f"{server[0]}/v2/models/{MODEL}/infer",
        content=bomb,
        headers={"Content-Encoding": "gzip", "Content-Type": "application/json"},
        timeout=30,
    )
    assert r.status_code == 413 and r.json()["limit"] == "max_body_bytes"
    r = httpx.post(
        f"{server[0]}/v2/models/{MODEL}/infer",
        content=zlib.compress(b"{")[:-3],
        headers={"Content-Encoding": "deflate"},
    )
    assert r.status_code == 400 and "does not decompress" in r.json()["detail"]
    r = httpx.post(
        f"{server[0]}/v2/models/{MODEL}/infer", content=b"{}", headers={"Content-Encoding": "br"}
    )
    assert r.status_code == 415


def test_statistics_and_metrics_count_each_request(http, server):
    before = http.get_inference_statistics(MODEL, "1")["model_stats"][0]
    url = server[0]
    success = metric(url, "nv_inference_request_success", model=MODEL, version="1")
    for _ in range(3):
        http.infer(MODEL, http_inputs(True), model_version="1")
    with pytest.raises(InferenceServerException, match="missing input"):
        http.infer(MODEL, http_inputs(True)[:2], model_version="1")
    after = http.get_inference_statistics(MODEL, "1")["model_stats"][0]
    assert (after["name"], after["version"]) == (MODEL, "1")
    assert after["inference_count"] == before["inference_count"] + 3
    stats, old = after["inference_stats"], before["inference_stats"]
    assert stats["success"]["count"] == old["success"]["count"] + 3
    assert stats["fail"]["count"] == old["fail"]["count"] + 1
    assert stats["success"]["ns"] > old["success"]["ns"]
    assert stats["compute_infer"]["count"] == stats["success"]["count"]
    assert metric(url, "nv_inference_request_success", model=MODEL, version="1") == success + 3
    assert metric(url, "nv_inference_request_failure", model=MODEL, version="1") >= 1
    assert metric(url, "nv_inference_request_duration_us", model=MODEL, version="1") > 0
    every = http.get_inference_statistics()["model_stats"]
    assert {(MODEL, "1"), (MODEL, "2"), ("sinsum", "1")} <= {
        (s["name"], s["version"]) for s in every
    }
    assert len(http.get_inference_statistics(MODEL)["model_stats"]) == 2
    # /v2/models/stats is the statistics route, not the metadata of a model called "stats"
    assert "model_stats" in httpx.get(f"{url}/v2/models/stats").json()


def test_unload_and_load(http, repo):
    http.unload_model(MODEL)
    assert not http.is_model_ready(MODEL)
    with pytest.raises(InferenceServerException):
        http.infer(MODEL, http_inputs(True))
    index = {m["name"]: m for m in http.get_model_repository_index() if m["name"] == MODEL}
    assert index[MODEL]["state"] == "UNAVAILABLE" and index[MODEL]["reason"] == "unloaded"
    # a version added on disk is picked up by the next load
    shutil.copytree(repo / MODEL / "1", repo / MODEL / "3")
    try:
        http.load_model(MODEL)
        assert http.is_model_ready(MODEL, "3")
        assert http.get_model_metadata(MODEL)["versions"] == ["1", "2", "3"]
        check(http.infer(MODEL, http_inputs(True), model_version="3"), "1")
    finally:
        shutil.rmtree(repo / MODEL / "3")
        http.load_model(MODEL)
    assert http.get_model_metadata(MODEL)["versions"] == ["1", "2"]
    with pytest.raises(InferenceServerException, match="no model 'nope'"):
        http.load_model("nope")
    with pytest.raises(InferenceServerException):
        http.load_model("../etc")


def test_load_with_a_config_override(http):
    config = '{"inputs": ["v"], "outputs": ["total"]}'
    http.load_model("sinsum", config=config)
    try:
        meta = http.get_model_metadata("sinsum")
        assert [t["name"] for t in meta["inputs"]] == ["v", "total_ct"]
        assert [t["name"] for t in meta["outputs"]] == ["total", "v_grad"]
        with pytest.raises(InferenceServerException, match="unknown config key"):
            http.load_model("sinsum", config='{"batch": 4}')
        assert http.is_model_ready("sinsum")  # a failed reload keeps the loaded versions
    finally:
        http.load_model("sinsum")


def test_programs_posted_by_name_are_versions_and_ids_still_work(http, server):
    url = server[0]
    first = httpx.post(f"{url}/v1/programs", json={"program": SINSUM, "name": "posted"}).json()
    assert (first["name"], first["version"]) == ("posted", "1")
    again = httpx.post(f"{url}/v1/programs", json={"program": SINSUM, "name": "posted"}).json()
    assert again["version"] == "1" and again["id"] == first["id"]
    cos = SINSUM.replace("sin v", "cos v")
    second = httpx.post(f"{url}/v1/programs", json={"program": cos, "name": "posted"}).json()
    assert second["version"] == "2" and second["id"] != first["id"]
    r = httpx.post(f"{url}/v1/programs", json={"program": cos, "name": "posted", "version": "1"})
    assert r.status_code == 409
    v = np.array([0.1, 0.2, 0.3], dtype=np.float32)
    for ref, version, fn in (("posted", "1", np.cos), ("posted", "2", lambda a: -np.sin(a))):
        meta = http.get_model_metadata(ref, version)
        t = httpclient.InferInput(meta["inputs"][0]["name"], [3], "FP32")
        t.set_data_from_numpy(v)
        result = http.infer(ref, [t], model_version=version)
        np.testing.assert_allclose(result.as_numpy(meta["outputs"][1]["name"]), fn(v), rtol=1e-5)
    # the bare content id is still a model (without versions)
    meta = http.get_model_metadata(first["id"])
    assert meta["name"] == first["id"] and "versions" not in meta
    t = httpclient.InferInput(meta["inputs"][0]["name"], [3], "FP32")
    t.set_data_from_numpy(v)
    out = http.infer(first["id"], [t]).as_numpy(meta["outputs"][0]["name"])
    np.testing.assert_allclose(out, np.sin(v).sum(), rtol=1e-5)


def test_the_example_client_script_runs_unchanged(server):
    r = subprocess.run(
        [
            sys.executable,
            str(ROOT / "examples" / "triton_client.py"),
            "--http",
            server[0].removeprefix("http://"),
            "--grpc",
            server[1],
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    assert "all checks passed" in r.stdout and "MISMATCH" not in r.stdout


# ---------------------------------------------------------------------------------------------
# gRPC


def test_grpc_health_metadata_and_config(grpc):
    assert grpc.is_server_live() and grpc.is_server_ready()
    assert grpc.is_model_ready(MODEL, "1") and not grpc.is_model_ready("nope")
    assert "model_repository" in grpc.get_server_metadata().extensions
    meta = grpc.get_model_metadata(MODEL)
    assert meta.name == MODEL and list(meta.versions) == ["1", "2"]
    assert [(t.name, list(t.shape)) for t in meta.inputs][:2] == [("w", [3]), ("x", [4, 3])]
    config = grpc.get_model_config(MODEL, "2").config
    assert config.name == MODEL and [t.name for t in config.output] == ["loss", "w_grad"]
    assert list(config.input[1].dims) == [4, 3]
    with pytest.raises(InferenceServerException, match="no version"):
        grpc.get_model_metadata(MODEL, "7")


@pytest.mark.parametrize("version", ["1", "2"])
def test_grpc_infer(grpc, version):
    result = grpc.infer(MODEL, grpc_inputs(), model_version=version, request_id="g1")
    check(result, version)
    response = result.get_response()
    assert (response.model_name, response.model_version, response.id) == (MODEL, version, "g1")
    only = grpc.infer(
        MODEL,
        grpc_inputs(),
        model_version=version,
        outputs=[grpcclient.InferRequestedOutput("w_grad")],
        compression_algorithm="gzip",  # gRPC's own message compression
    )
    np.testing.assert_allclose(only.as_numpy("w_grad"), expected(version)[1], rtol=1e-4)
    assert [o.name for o in only.get_response().outputs] == ["w_grad"]


def test_grpc_nan_input_and_bad_requests(grpc):
    x = X.copy()
    x[2, 0] = np.nan
    got = grpc.infer(MODEL, grpc_inputs(x=x), model_version="1").as_numpy("w_grad")
    assert np.isnan(got).all() == np.isnan(expected("1", x=x)[1]).all()
    bad = grpc_inputs()
    bad[0] = grpcclient.InferInput("w", [4], "FP32")
    bad[0].set_data_from_numpy(np.ones(4, np.float32))
    with pytest.raises(InferenceServerException, match="expected shape") as e:
        grpc.infer(MODEL, bad)
    assert "INVALID_ARGUMENT" in str(e.value.status())


def test_grpc_repository_and_statistics_share_the_http_state(grpc, http, server):
    rows = grpc.get_model_repository_index().models
    assert (MODEL, "2", "READY") in {(m.name, m.version, m.state) for m in rows}
    before = http.get_inference_statistics(MODEL, "1")["model_stats"][0]["inference_count"]
    grpc.infer(MODEL, grpc_inputs(), model_version="1")
    stats = grpc.get_inference_statistics(MODEL, "1").model_stats[0]
    assert stats.inference_count == before + 1  # one registry, one set of numbers
    grpc.unload_model("sinsum")
    assert not http.is_model_ready("sinsum")
    grpc.load_model("sinsum")
    assert http.is_model_ready("sinsum")
    # a model named over HTTP answers over gRPC: one cache and one registry
    program = SINSUM.replace("sin v", "tanh v")
    r = httpx.post(f"{server[0]}/v1/programs", json={"program": program, "name": "over_http"})
    assert r.status_code == 200, r.text
    meta = grpc.get_model_metadata("over_http", "1")
    v = np.array([0.5, 1.0, 1.5], np.float32)
    t = grpcclient.InferInput(meta.inputs[0].name, [3], "FP32")
    t.set_data_from_numpy(v)
    grad = grpc.infer("over_http", [t]).as_numpy(meta.outputs[1].name)
    np.testing.assert_allclose(grad, 1 - np.tanh(v) ** 2, rtol=1e-5)


@pytest.fixture(scope="module")
def keyed(repo):
    grpc_port = free_port()
    args = ["--model-repository", str(repo), "--grpc-port", str(grpc_port)]
    with shax_server(free_port(), {"SHAX_API_KEYS": KEY}, args=args) as url:
        yield url, f"127.0.0.1:{grpc_port}"


def test_api_keys_over_grpc_metadata_and_http_headers(keyed):
    url, grpc_url = keyed
    client = grpcclient.InferenceServerClient(grpc_url)
    assert client.is_server_live() and client.is_server_ready()  # as over HTTP: no key
    with pytest.raises(InferenceServerException):
        client.get_server_metadata()
    with pytest.raises(InferenceServerException) as e:
        client.infer(MODEL, grpc_inputs())
    assert "UNAUTHENTICATED" in str(e.value.status())
    with pytest.raises(InferenceServerException):
        client.infer(MODEL, grpc_inputs(), headers={"x-api-key": "wrong"})
    check(client.infer(MODEL, grpc_inputs(), model_version="1", headers={"x-api-key": KEY}), "1")
    bearer = {"authorization": f"Bearer {KEY}"}
    assert client.get_model_repository_index(headers=bearer).models
    h = httpclient.InferenceServerClient(url.removeprefix("http://"))
    with pytest.raises(InferenceServerException):
        h.get_model_repository_index()
    assert h.get_model_repository_index(headers={"X-API-Key": KEY})


# ---------------------------------------------------------------------------------------------
# start-up, model control and bounds


def test_readiness_waits_for_the_repository_to_load(tmp_path):
    """The server is live while the repository loads and ready once it has: a model whose
    file is a pipe cannot load until the test writes the program into it."""
    import os
    import threading
    import time

    shutil.copytree(REPOSITORY / "sinsum", tmp_path / "sinsum")
    (tmp_path / "late" / "1").mkdir(parents=True)
    pipe = tmp_path / "late" / "1" / "model.shax"
    os.mkfifo(pipe)
    port, grpc_port = free_port(), free_port()
    cmd = [sys.executable, "-m", "shax_server.cli", "--host", "127.0.0.1", "--port", str(port)]
    cmd += ["--model-repository", str(tmp_path), "--grpc-port", str(grpc_port)]
    env = {k: v for k, v in __import__("os").environ.items() if not k.startswith("SHAX_")}
    proc = subprocess.Popen([*cmd, "--log-level", "warning"], env=env, cwd=ROOT)
    url = f"http://127.0.0.1:{port}"
    writer = None
    try:
        deadline = time.monotonic() + 30
        while True:
            assert proc.poll() is None and time.monotonic() < deadline
            try:
                if httpx.get(f"{url}/v2/health/live", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.05)
        r = httpx.get(f"{url}/v2/health/ready")
        assert r.status_code == 503 and "loading" in r.json()["detail"]
        assert not grpcclient.InferenceServerClient(f"127.0.0.1:{grpc_port}").is_server_ready()
        states = {m["name"]: m["state"] for m in httpx.post(f"{url}/v2/repository/index").json()}
        assert states["late"] == "LOADING"
        writer = threading.Thread(target=pipe.write_text, args=(SINSUM,))
        writer.start()
        while httpx.get(f"{url}/v2/health/ready").status_code != 200:
            assert time.monotonic() < deadline, "not ready 30 s after the pipe was written"
            time.sleep(0.05)
        h = httpclient.InferenceServerClient(f"127.0.0.1:{port}")
        assert h.is_model_ready("late") and h.is_model_ready("sinsum")
    finally:
        if writer is None:  # unblock the loader so that the server can stop
            with open(pipe, "w") as f:
                f.write(SINSUM)
        else:
            writer.join(timeout=10)
        proc.terminate()
        proc.wait(timeout=20)


def test_model_control_none_refuses_load_and_unload(repo):
    grpc_port = free_port()
    args = ["--model-repository", str(repo), "--grpc-port", str(grpc_port)]
    with shax_server(free_port(), None, args=[*args, "--model-control-mode", "none"]) as url:
        h = httpclient.InferenceServerClient(url.removeprefix("http://"))
        g = grpcclient.InferenceServerClient(f"127.0.0.1:{grpc_port}")
        for call in (h.unload_model, h.load_model, g.unload_model, g.load_model):
            with pytest.raises(InferenceServerException, match="not allowed"):
                call(MODEL)
        assert h.is_model_ready(MODEL) and g.is_model_ready(MODEL)  # still served
        check(h.infer(MODEL, http_inputs(True), model_version="1"), "1")


def test_registered_names_and_program_statistics_are_bounded():
    env = {"SHAX_MAX_MODELS": "2", "SHAX_CACHE_ENTRIES": "2"}
    with shax_server(free_port(), env) as url:
        programs = [SINSUM.replace("sin v", op) for op in ("sin v", "cos v", "tanh v")]
        ids = []
        for i, program in enumerate(programs):
            r = httpx.post(f"{url}/v1/programs", json={"program": program, "name": f"m{i}"})
            ids.append(r.json()["id"] if r.status_code == 200 else None)
            if i < 2:
                assert r.status_code == 200, r.text
        assert r.status_code == 413 and r.json()["limit"] == "max_models"
        ids[2] = httpx.post(f"{url}/v1/programs", json={"program": programs[2]}).json()["id"]
        h = httpclient.InferenceServerClient(url.removeprefix("http://"))
        v = np.array([0.1, 0.2, 0.3], np.float32)
        for program, pid in zip(programs, ids):  # by bare id: statistics for the 2 most recent
            httpx.post(f"{url}/v1/programs", json={"program": program})  # (cache_entries is 2)
            meta = h.get_model_metadata(pid)
            t = httpclient.InferInput(meta["inputs"][0]["name"], [3], "FP32")
            t.set_data_from_numpy(v)
            h.infer(pid, [t])
        named = {(s["name"], s["version"]) for s in h.get_inference_statistics()["model_stats"]}
        assert named == {("m0", "1"), ("m1", "1"), (ids[1], ""), (ids[2], "")}
        assert metric(url, "nv_inference_count", model=ids[0]) == 0
        assert metric(url, "nv_inference_count", model=ids[2]) == 1
        # unloading a name frees its place and drops its series
        h.unload_model("m0")
        assert "m0" not in {s["name"] for s in h.get_inference_statistics()["model_stats"]}
        r = httpx.post(f"{url}/v1/programs", json={"program": programs[2], "name": "m2"})
        assert r.status_code == 200, r.text


SCALED = (
    "def scaled(x :: f32[3], k :: i32[3]) =\n"
    "  let c :: f32[3] = convert f32 k\n"
    "      y :: f32[3] = mul x c\n"
    "      s :: f32[] = reduce_sum [0] y\n"
    "  in [s]\n"
)


def test_integer_inputs_over_http_and_grpc(server, http, grpc):
    """An INT32 input (not differentiated): config, JSON and binary over HTTP, raw over gRPC."""
    r = httpx.post(f"{server[0]}/v1/programs", json={"program": SCALED, "name": "scaled"})
    assert r.status_code == 200, r.text
    config = http.get_model_config("scaled")
    assert [t["data_type"] for t in config["input"]] == ["TYPE_FP32", "TYPE_INT32", "TYPE_FP32"]
    assert grpc.get_model_config("scaled").config.input[1].data_type == 8  # TYPE_INT32
    x = np.array([0.5, -1.0, 2.0], np.float32)
    k = np.array([3, -2, 7], np.int32)
    for binary in (False, True):
        inputs = [httpclient.InferInput("x", [3], "FP32"), httpclient.InferInput("k", [3], "INT32")]
        inputs[0].set_data_from_numpy(x, binary_data=binary)
        inputs[1].set_data_from_numpy(k, binary_data=binary)
        result = http.infer("scaled", inputs)
        np.testing.assert_allclose(result.as_numpy("out0"), float(x @ k), rtol=1e-6)
        np.testing.assert_array_equal(result.as_numpy("grad_x"), k.astype(np.float32))
    inputs = [grpcclient.InferInput("x", [3], "FP32"), grpcclient.InferInput("k", [3], "INT32")]
    inputs[0].set_data_from_numpy(x)
    inputs[1].set_data_from_numpy(k)
    result = grpc.infer("scaled", inputs)
    np.testing.assert_array_equal(result.as_numpy("grad_x"), k.astype(np.float32))


def test_grpc_typed_contents_and_malformed_raw_contents(server):
    """Clients other than tritonclient send typed ``contents``; both forms decode alike."""
    import grpc as grpclib
    from tritonclient.grpc import service_pb2 as pb
    from tritonclient.grpc import service_pb2_grpc as rpc

    v = np.array([0.25, 0.5, 1.0], np.float32)
    with grpclib.insecure_channel(server[1]) as channel:
        stub = rpc.GRPCInferenceServiceStub(channel)
        meta = stub.ModelMetadata(pb.ModelMetadataRequest(name="sinsum"))
        tensor = pb.ModelInferRequest.InferInputTensor(
            name=meta.inputs[0].name,
            datatype="FP32",
            shape=[3],
            contents=pb.InferTensorContents(fp32_contents=v.tolist()),
        )
        reply = stub.ModelInfer(pb.ModelInferRequest(model_name="sinsum", inputs=[tensor]))
        by_name = dict(zip((o.name for o in reply.outputs), reply.raw_output_contents))
        grad = np.frombuffer(by_name[meta.outputs[1].name], dtype="<f4")
        np.testing.assert_allclose(grad, np.cos(v), rtol=1e-6)
        bad = pb.ModelInferRequest(
            model_name="sinsum",
            inputs=[pb.ModelInferRequest.InferInputTensor(name="x", datatype="FP32", shape=[3])],
            raw_input_contents=[b"\0" * 12, b"\0" * 12],
        )
        with pytest.raises(grpclib.RpcError) as e:
            stub.ModelInfer(bad)
        assert e.value.code() == grpclib.StatusCode.INVALID_ARGUMENT
        assert "raw_input_contents has 2 entries" in e.value.details()
        short = pb.ModelInferRequest(
            model_name="sinsum",
            inputs=[pb.ModelInferRequest.InferInputTensor(name="x", datatype="FP32", shape=[3])],
            raw_input_contents=[b"\0" * 8],
        )
        with pytest.raises(grpclib.RpcError) as e:
            stub.ModelInfer(short)
        assert e.value.code() == grpclib.StatusCode.INVALID_ARGUMENT and "12" in e.value.details()
