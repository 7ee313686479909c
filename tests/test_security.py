"""Security properties: API keys (constant time, never logged), nothing from a request is
unpickled or evaluated as Python, request ids in and out and in the logs."""

from __future__ import annotations

import ast
import hmac
import logging
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from shax_server import Settings, create_app, deps
from shax_server.logs import TextFormatter
from shax_server.store import MemoryStore

from tests.servers import free_port

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = [ROOT / "shax_core", ROOT / "server" / "shax_server", ROOT / "client" / "shax_client"]
KEY = "k3y-0123456789abcdef-SECRET"
SIN = {"program": "def f(a :: f32[]) = let y = sin a in [y]", "inputs": [{"data": 0.5}]}


@pytest.fixture
def anyio_backend():
    return "asyncio"


def _client(app):
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t")


# ---- API keys ---------------------------------------------------------------------------------


def test_keys_are_compared_with_compare_digest_against_every_key(monkeypatch):
    calls = []
    real = hmac.compare_digest

    def spy(a, b):
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(deps.hmac, "compare_digest", spy)
    keys = Settings(api_keys=["first", "second", "third"]).api_keys
    assert deps._matches("first", keys)  # a match on the first key still compares them all
    assert len(calls) == 3
    calls.clear()
    assert not deps._matches("nope", keys)
    assert len(calls) == 3
    # and no plain == on secrets anywhere in the auth code
    src = Path(deps.__file__).read_text()
    assert "get_secret_value() ==" not in src and "== key" not in src


def test_keys_are_secret_in_settings():
    s = Settings(api_keys=[KEY])
    assert KEY not in repr(s) and KEY not in str(s.model_dump())


@pytest.mark.anyio
async def test_api_keys_never_logged(caplog):
    app = create_app(Settings(api_keys=[KEY]))
    near_miss = KEY[:-1] + "X"
    with caplog.at_level(logging.DEBUG):
        async with app.router.lifespan_context(app), _client(app) as c:
            for headers in (
                {"X-API-Key": near_miss},
                {"Authorization": f"Bearer {near_miss}"},
                {"X-API-Key": near_miss + "\r\n"},
                {},
            ):
                r = await c.post("/vjp", json=SIN, headers=headers)
                assert r.status_code == 401, r.text
                assert "WWW-Authenticate" in r.headers
                assert KEY not in r.text and near_miss not in r.text
            r = await c.post("/vjp", json=SIN, headers={"X-API-Key": KEY})
            assert r.status_code == 200
            metrics = (await c.get("/metrics")).text
    logged = "\n".join(f"{rec.getMessage()} {rec.args} {rec.__dict__}" for rec in caplog.records)
    assert KEY not in logged and near_miss not in logged
    assert KEY not in metrics and near_miss not in metrics


# ---- nothing from a request is executed ---------------------------------------------------------

FORBIDDEN_MODULES = {"pickle", "cPickle", "dill", "marshal", "shelve", "cloudpickle", "joblib"}
FORBIDDEN_CALLS = {"eval", "exec", "__import__"}
# The one documented exception: the code generator for hot plans compiles source text it makes
# from integers only, each line checked against a fixed template (see shax_core/_codegen.py and
# tests/test_codegen.py). Exactly this function of this module, exactly this many calls.
ALLOWED_COMPILES = {("shax_core/_codegen.py", "compile_checked"): 1}


def _enclosing_functions(tree) -> dict[int, str]:
    """id(node) -> the name of the innermost function around it."""
    inside: dict[int, str] = {}
    for fn in ast.walk(tree):  # breadth first: an inner function overrides its outer one
        if isinstance(fn, ast.FunctionDef | ast.AsyncFunctionDef):
            for node in ast.walk(fn):
                if node is not fn:
                    inside[id(node)] = fn.name
    return inside


def _violations(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    out = []
    inside = _enclosing_functions(tree)
    compiles: dict[tuple[str, str], int] = {}

    def where(node) -> str:
        return f"{path.relative_to(ROOT)}:{node.lineno}"

    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                if a.name.split(".")[0] in FORBIDDEN_MODULES:
                    out.append(f"{where(node)} imports {a.name}")
        elif isinstance(node, ast.ImportFrom):
            if (node.module or "").split(".")[0] in FORBIDDEN_MODULES:
                out.append(f"{where(node)} imports from {node.module}")
        elif isinstance(node, ast.Call):
            f = node.func
            name = f.id if isinstance(f, ast.Name) else None
            attr = f.attr if isinstance(f, ast.Attribute) else None
            base = (
                f.value.id if isinstance(f, ast.Attribute) and isinstance(f.value, ast.Name) else ""
            )
            if name in FORBIDDEN_CALLS:
                out.append(f"{where(node)} calls {name}()")
            if name == "compile" and len(node.args) + len(node.keywords) >= 3:
                # builtin compile(source, filename, mode)
                key = (path.relative_to(ROOT).as_posix(), inside.get(id(node), ""))
                compiles[key] = compiles.get(key, 0) + 1
                if compiles[key] > ALLOWED_COMPILES.get(key, 0):
                    out.append(f"{where(node)} calls builtin compile()")
            if attr in ("load", "load_all", "unsafe_load") and base == "yaml":
                loader = {k.arg: k.value for k in node.keywords}.get("Loader")
                if not (isinstance(loader, ast.Attribute) and "Safe" in loader.attr):
                    out.append(f"{where(node)} yaml.{attr} without SafeLoader")
            if base == "os" and attr in ("system", "popen") or base == "subprocess":
                for k in node.keywords:
                    if k.arg == "shell" and not (
                        isinstance(k.value, ast.Constant) and k.value.value is False
                    ):
                        out.append(f"{where(node)} {base}.{attr}(shell=...)")
                if base == "os":
                    out.append(f"{where(node)} os.{attr}()")
            if base in ("np", "numpy") and attr == "load":
                kw = {k.arg: k.value for k in node.keywords}
                allow = kw.get("allow_pickle")
                if isinstance(allow, ast.Constant) and allow.value is True:
                    out.append(f"{where(node)} np.load(allow_pickle=True)")
    return out


def test_no_pickle_eval_exec_or_shell_in_the_packages():
    files = [p for pkg in PACKAGES for p in pkg.rglob("*.py")]
    assert len(files) > 20
    violations = [v for p in files for v in _violations(p)]
    assert not violations, violations


def test_the_checker_catches_what_it_should(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text(
        "import pickle\nimport yaml, subprocess, os\n"
        "eval('1')\nexec('x=1')\nyaml.load(s)\nsubprocess.run('ls', shell=True)\n"
        "os.system('ls')\nfrom marshal import loads\n"
    )
    global ROOT
    old, ROOT = ROOT, tmp_path
    try:
        found = _violations(bad)
    finally:
        ROOT = old
    assert len(found) == 7, found  # pickle, marshal, eval, exec, yaml, shell, os.system


def _found_in(tmp_path, relative: str, text: str) -> list[str]:
    path = tmp_path / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    global ROOT
    old, ROOT = ROOT, tmp_path
    try:
        return _violations(path)
    finally:
        ROOT = old


def test_the_code_generator_is_the_only_compile_allowed(tmp_path):
    """The allowlisted compile() is one call in one function of one module: the same call
    anywhere else, a second call in that function, or one in another of its functions fails."""
    one = "def compile_checked(text):\n    return compile(text, 'f', 'exec')\n"
    assert _found_in(tmp_path, "shax_core/_codegen.py", one) == []
    assert len(_found_in(tmp_path, "shax_core/_evaluate.py", one)) == 1
    assert len(_found_in(tmp_path, "server/shax_server/codegen.py", one)) == 1
    two = one + "    compile(text, 'g', 'exec')\n"
    assert len(_found_in(tmp_path, "shax_core/_codegen.py", two)) == 1
    other = one + "def helper(t):\n    return compile(source=t, filename='f', mode='exec')\n"
    assert len(_found_in(tmp_path, "shax_core/_codegen.py", other)) == 1
    nested = (
        "def compile_checked(text):\n    def inner():\n        return compile(text, 'f', 'exec')\n"
    )
    assert len(_found_in(tmp_path, "shax_core/_codegen.py", nested)) == 1
    top = "compile('1', 'f', 'eval')\n"
    assert len(_found_in(tmp_path, "shax_core/_codegen.py", top)) == 1


def test_the_allowed_compile_is_really_used_by_the_code_generator():
    """The exception is not stale: _codegen.compile_checked holds the one allowed compile()."""
    path = ROOT / "shax_core" / "_codegen.py"
    tree = ast.parse(path.read_text())
    inside = _enclosing_functions(tree)
    calls = [
        inside.get(id(n))
        for n in ast.walk(tree)
        if isinstance(n, ast.Call) and isinstance(n.func, ast.Name) and n.func.id == "compile"
    ]
    assert calls == ["compile_checked"]


# ---- request ids ------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_request_id_in_and_out():
    app = create_app(Settings(api_keys=[KEY], max_body_bytes=1000))
    async with app.router.lifespan_context(app), _client(app) as c:
        r = await c.get("/v2/health/live", headers={"X-Request-ID": "abc-123"})
        assert r.headers["X-Request-ID"] == "abc-123"
        r = await c.get("/v2/health/live")
        assert re.fullmatch(r"[0-9a-f]{32}", r.headers["X-Request-ID"])
        for bad in ("x" * 500, "has space", "semi;colon", ""):
            r = await c.get("/v2/health/live", headers={"X-Request-ID": bad})
            assert re.fullmatch(r"[0-9a-f]{32}", r.headers["X-Request-ID"]), bad
        # errors carry it too: 401, 404, and the body limit's 413 (answered by middleware)
        h = {"X-Request-ID": "req-7"}
        r = await c.post("/vjp", json=SIN, headers=h)
        assert r.status_code == 401 and r.headers["X-Request-ID"] == "req-7"
        h["X-API-Key"] = KEY
        r = await c.get("/nope", headers=h)
        assert r.status_code == 404 and r.headers["X-Request-ID"] == "req-7"
        r = await c.post("/vjp", content=b" " * 2000, headers=h)
        assert r.status_code == 413 and r.headers["X-Request-ID"] == "req-7"


@pytest.mark.anyio
async def test_request_id_in_log_records(caplog):
    """A warning logged while serving a request (here: a corrupt shared-store entry, read in a
    worker thread) names the request's id."""
    store = MemoryStore()
    store.items["f" * 64] = ("garbage", {})
    app = create_app(Settings(), store=store)
    with caplog.at_level(logging.WARNING, logger="shax_server"):
        async with app.router.lifespan_context(app), _client(app) as c:
            r = await c.get("/v1/programs/" + "f" * 64, headers={"X-Request-ID": "trace-42"})
            assert r.status_code == 404
    assert caplog.records
    assert all(getattr(rec, "request_id", None) == "trace-42" for rec in caplog.records)
    line = TextFormatter().format(caplog.records[0])
    assert "shax_server" in line and line.endswith("[request_id=trace-42]"), line


@pytest.mark.skipif(shutil.which("redis-server") is None, reason="redis-server not installed")
def test_one_log_format_with_the_request_id_on_every_logger(tmp_path):
    """A real ``shax serve`` with JSON logs and a real Redis holding a corrupt entry: the
    access log and the Redis store's warning (a logger below ``shax_server``) are JSON lines
    that carry the request's id."""
    import json as json_

    import redis

    redis_port = free_port()
    redis_proc = subprocess.Popen(
        ["redis-server", "--port", str(redis_port), "--bind", "127.0.0.1", "--save", ""],
        stdout=subprocess.DEVNULL,
        cwd=tmp_path,
    )
    try:
        _log_format_check(tmp_path, redis_port, redis, json_)
    finally:
        redis_proc.terminate()
        redis_proc.wait(timeout=10)


def _log_format_check(tmp_path, redis_port, redis, json_):
    client = redis.Redis(port=redis_port, socket_timeout=1)
    for _ in range(100):
        try:
            client.ping()
            break
        except redis.RedisError:
            time.sleep(0.05)
    client.set("shax:p1:" + "e" * 64, b"{not json")
    log = tmp_path / "server.log"
    env = dict(
        os.environ, SHAX_REDIS_URL=f"redis://127.0.0.1:{redis_port}/0", SHAX_LOG_FORMAT="json"
    )
    env.pop("SHAX_API_KEYS", None)
    port = free_port()
    cmd = [sys.executable, "-m", "shax_server.cli", "--host", "127.0.0.1", "--port", str(port)]
    with open(log, "w") as out:
        proc = subprocess.Popen([*cmd, "--log-level", "info"], env=env, stderr=out, cwd=ROOT)
    try:
        url = f"http://127.0.0.1:{port}"
        for _ in range(300):
            try:
                if httpx.get(f"{url}/v2/health/ready", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.1)
        h = {"X-Request-ID": "log-me-7"}
        r = httpx.get(f"{url}/v1/programs/" + "e" * 64, headers=h, timeout=30)
        assert r.status_code == 404, r.text
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    records = [json_.loads(x) for x in log.read_text().splitlines() if x.startswith("{")]
    assert records and all(set(r) >= {"time", "level", "logger", "request_id"} for r in records)
    mine = {r["logger"] for r in records if r["request_id"] == "log-me-7"}
    assert {"uvicorn.access", "shax_server.redis"} <= mine, records
