"""The service's face, from a client's side against a real uvicorn on 127.0.0.1: the landing
page (HTML and JSON), offline docs, request examples on every operation (each one run), the IR
documentation against the registry, and the stage explorer's API (the seed's stages and numbers,
errors at line and column, parts and graphs, share links, limits)."""

from __future__ import annotations

import doctest
import json
import re
import shutil
import subprocess
import sys
import time
import zipfile
from html.parser import HTMLParser

import httpx
import hypothesis
import numpy as np
import pytest
from shax_server import explore, irdoc, openapi_examples, samples
from shax_server.routes import site
from shax_server.settings import Settings

import shax_core as sx
from shax_core.primitives import REGISTRY
from tests.conftest import FIXTURES, ROOT
from tests.servers import free_port, shax_server
from tests.test_properties import SETTINGS as RANDOM_SETTINGS
from tests.test_properties import inputs as random_inputs
from tests.test_properties import programs as random_programs
from tests.test_seed import DF, DFT0, DFT1, F

MEDIUM = samples.SAMPLES["medium"]


def seed_close(got: dict, want: np.ndarray):
    assert got["dtype"] == "f32"
    assert got["shape"] == list(want.shape)
    np.testing.assert_allclose(np.asarray(got["data"], np.float32), want.reshape(-1), rtol=1e-5)


def normalized(text: str) -> list[str]:
    return [" ".join(line.split()) for line in text.strip().splitlines()]


@pytest.mark.parametrize("module", [explore, irdoc, site, openapi_examples, samples])
def test_docstring_examples(module):
    result = doctest.testmod(module)
    assert result.failed == 0


# ---------------------------------------------------------------------------------------------
# landing page


class Links(HTMLParser):
    def __init__(self):
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag, attrs):
        for name, value in attrs:
            if name in ("href", "src") and value:
                self.urls.append(value)


def urls_of(page: str) -> list[str]:
    parser = Links()
    parser.feed(page)
    return parser.urls


def test_landing_json_and_html_say_the_same(client):
    compiled = client.post("/v1/programs", json={"program": MEDIUM["program"]}).json()["id"]
    doc = client.get("/", headers={"accept": "application/json"}).json()
    assert doc["name"] == "shax"
    assert doc["version"] == site.package_version()
    assert doc["ready"] is True
    assert compiled in doc["models"] and doc["models_loaded"] >= 1
    for key in ("explorer", "docs", "redoc", "metrics", "health_live", "health_ready"):
        assert doc["links"][key].startswith(str(client.base_url))
    page = client.get("/", headers={"accept": "text/html"})
    assert page.headers["content-type"].startswith("text/html")
    assert page.headers["vary"] == "Accept"
    text = page.text
    assert f'<small id="version">{doc["version"]}</small>' in text
    assert f'<dd id="models-loaded">{doc["models_loaded"]}</dd>' in text
    assert compiled in text
    for url in doc["links"].values():
        assert url in urls_of(text)
    # the curl on the page is the JSON's (HTML-escaped), and it works
    assert json.dumps(doc["curl"])[1:-1].replace('\\"', "&quot;").replace("'", "&#x27;") in text
    body = json.loads(re.search(r"-d '(.*)'$", doc["curl"]).group(1))
    r = client.post("/vjp", json=body)
    assert r.status_code == 200 and r.json()["gradients"][0]["data"] == [2.0, 4.0, 6.0]


def test_landing_default_is_html_and_links_resolve(client):
    page = client.get("/")  # httpx sends Accept: */*
    assert page.headers["content-type"].startswith("text/html")
    for url in urls_of(page.text):
        assert url.startswith(("/", str(client.base_url))), url
        assert client.get(url).status_code == 200, url


# ---------------------------------------------------------------------------------------------
# docs that work offline


@pytest.mark.parametrize("path", ["/docs", "/redoc"])
def test_docs_pages_load_only_local_assets(client, path):
    page = client.get(path)
    assert page.status_code == 200
    assert "cdn" not in page.text and "fonts.googleapis" not in page.text
    assets = [u for u in urls_of(page.text)]
    assert assets, "the page loads its script and styles"
    for url in assets:
        assert url.startswith("/") and not url.startswith("//"), url
        r = client.get(url)
        assert r.status_code == 200 and len(r.content) > 0, url
    js = re.findall(r"(/static/docs/[\w.-]+\.js)", page.text)
    assert js and all(len(client.get(u).content) > 100_000 for u in js)


def test_every_operation_has_an_example_and_a_curl(client):
    doc = client.get("/openapi.json").json()
    ops = [(m, p, o) for p, item in doc["paths"].items() for m, o in item.items()]
    assert len(ops) >= 18
    for method, path, op in ops:
        where = f"{method.upper()} {path}"
        (sample,) = op["x-codeSamples"]
        assert sample["source"].startswith("curl -s ") and "\n" not in sample["source"], where
        assert sample["source"] in op["description"], where
        content = op.get("requestBody", {}).get("content", {})
        if "application/json" in content:
            assert "example" in content["application/json"], where
        for param in op.get("parameters", []):
            if param["in"] == "path":
                assert "example" in param, where


def test_every_example_runs(client):
    """Each operation's example, sent as its curl would send it, answers 2xx."""
    doc = client.get("/openapi.json").json()
    known = openapi_examples.operation_examples()
    for (method, path), example in known.items():
        assert path in doc["paths"] and method in doc["paths"][path], (method, path)
        if "needs" in example:
            assert client.post("/v1/programs", json=example["needs"]).status_code == 200
    # compile first: the by-id examples use the ids the service gives the examples' programs
    order = sorted(known, key=lambda k: k != ("post", "/v1/programs"))
    order.sort(key=lambda k: k == ("get", "/v1/explore/links/{link_id}"))  # after storing it
    for method, path in order:
        example = known[(method, path)]
        url = openapi_examples.path_of(path, example.get("path", {}))
        r = client.request(method, url, json=example.get("body"))
        assert 200 <= r.status_code < 300, (method, path, r.text[:300])
        if (method, path) == ("post", "/vjp"):
            out, g0, g1 = (
                np.asarray(t["data"], np.float32)
                for t in r.json()["outputs"] + r.json()["gradients"]
            )
            np.testing.assert_allclose(out, F, rtol=1e-5)
            np.testing.assert_allclose(g0, DFT0, rtol=1e-5)
            np.testing.assert_allclose(g1.reshape(2, 2), DFT1, rtol=1e-5)


def test_ir_grammar_in_the_schema(client):
    doc = client.get("/openapi.json").json()
    schemas = doc["components"]["schemas"]
    for model in ("CompileRequest", "VjpRequest"):
        assert irdoc.GRAMMAR in schemas[model]["properties"]["program"]["description"]
    assert irdoc.GRAMMAR in doc["info"]["description"]


# ---------------------------------------------------------------------------------------------
# docs/ir.md against the registry


IR_MD = ROOT / "docs" / "ir.md"


def test_ir_md_lists_every_primitive_as_the_registry_spells_it():
    text = IR_MD.read_text()
    assert irdoc.table_in(text) == irdoc.primitive_table(), (
        "docs/ir.md is out of date: run python -m shax_server.irdoc docs/ir.md"
    )
    listed = re.findall(r"^\| `([^`]+)` \| `([^`]+)` \|", irdoc.table_in(text), re.M)
    assert sorted(name for name, _ in listed) == sorted(REGISTRY)
    for name, written in listed:
        assert written.split(" = ")[1].split()[0] == name or name == "id"


def test_ir_md_grammar_is_the_schema_grammar():
    assert "```\n" + irdoc.GRAMMAR + "\n```" in IR_MD.read_text()


def test_ir_md_worked_example_is_what_the_pipeline_prints():
    blocks = dict(re.findall(r"<!-- stage: (\w+) -->\n```\n(.*?)\n```", IR_MD.read_text(), re.S))
    assert set(blocks) == {"source", "typed", "linearized", "linear", "transposed", "vjp"}
    st = sx.stages(sx.parse(blocks.pop("source")))
    for name, text in blocks.items():
        assert str(st[name]) == text, name
    x, w = np.array([1, 2, 3], np.float32), np.array([0.5, 0.25, -1], np.float32)
    out, gx, gw = sx.evaluate(st["vjp"], x, w, np.float32(1))
    np.testing.assert_allclose(gx, w * np.cos(x * w), rtol=1e-6)
    np.testing.assert_allclose(gw, x * np.cos(x * w), rtol=1e-6)
    for value in (f"{float(out):.7f}", "0.43879128", "1.7551651"):
        assert value in IR_MD.read_text()


def test_every_grammar_production_parses_its_example():
    """The grammar's claims, one program each: comments, annotations, copies, outputs with
    types, every argument kind, several defs (the first is the one compiled)."""
    text = """-- a comment
    def g(a :: f32[2], b :: bool[2]) =
      let c :: f32[2] = a
          d = pad [(1,0)] 0.0 c
          e = fromList [2] [1.5, -2e-1]
          k :: bool[2] = fromList [2] [true, false]
          s = select b c e
          v = convert f64 s
      in [v :: f64[2], d]
    def h(x :: f64[]) = let y = sin x in [y]"""
    g, h = sx.parse_module(text)
    assert (g.name, h.name) == ("g", "h")
    assert [str(t) for t in sx.infer(g).out_types] == ["f64[2]", "f32[3]"]


# ---------------------------------------------------------------------------------------------
# the explorer's API


@pytest.fixture(scope="module")
def medium_result(client):
    r = client.post("/v1/explore", json=MEDIUM)
    assert r.status_code == 200, r.text
    return r.json()


def test_explore_medium_reproduces_the_seed(medium_result):
    st = {s["name"]: s for s in medium_result["stages"]}
    assert list(st) == list(explore.STAGE_TITLES)
    seed_typed = (FIXTURES / "seed_medium_typed.shax").read_text()
    assert normalized(st["typed"]["text"]) == normalized(seed_typed)
    assert normalized(st["source"]["text"]) == normalized(
        (FIXTURES / "seed_medium_traced.shax").read_text()
    )
    assert st["typed"]["equations"] == 15
    n = medium_result["numbers"]
    seed_close(n["f"][0], F)
    seed_close(n["df"][0], DF)
    seed_close(n["dft"][0], DFT0)
    seed_close(n["dft"][1], DFT1)
    seed_close(n["vjp"][0], F)
    seed_close(n["vjp"][1], DFT0)
    seed_close(n["vjp"][2], DFT1)
    assert n["f"][0]["text"] == "[34.731194 67.46239]"
    check = n["dot_check"]
    assert check["df_dot_ct"] == pytest.approx(check["dx_dot_dft"], rel=1e-5)


def test_explore_seed_rewrites(client):
    r = client.post("/v1/explore", json={**MEDIUM, "rewrites": "seed"})
    assert r.status_code == 200, r.text
    st = {s["name"]: s for s in r.json()["stages"]}
    seed = [
        line
        for line in normalized((FIXTURES / "seed_medium_rewritten.shax").read_text())
        if not re.search(r"= arg\d+$", line)  # the seed's copies of parameters
    ]
    ours = [re.sub(r"^let ", "", line) for line in normalized(st["rewritten"]["text"])]
    prims = [re.search(r"= (\w+)", line).group(1) for line in seed if " = " in line]
    assert [re.search(r"= (\w+)", line).group(1) for line in ours if " = " in line] == prims
    n = r.json()["numbers"]
    seed_close(n["f"][0], F)
    seed_close(n["df"][0], DF)
    seed_close(n["dft"][0], DFT0)


def test_explore_parts_and_graphs(medium_result):
    for st in medium_result["stages"]:
        assert sum(st["parts"].values()) == st["equations"]
        g = st["graph"]
        program = sx.parse(st["text"])
        assert len(g["nodes"]) == len(program.params) + len(program.eqns)
        assert len(g["edges"]) == sum(len(e.ins) for e in program.eqns)
        part = {node["id"]: node["part"] for node in g["nodes"]}
        for s, d in g["edges"]:
            src, dst = g["nodes"][s], g["nodes"][d]
            assert src["layer"] < dst["layer"]
            if src["part"] == "linear":  # linearity flows forward
                assert dst["part"] == "linear"
        outs = [node for node in g["nodes"] if "out" in node]
        assert {node["out"] for node in outs} == set(range(len(program.outs)))
        if st["name"] in ("typed", "rewritten"):
            assert set(part.values()) == {"primal"}
        if st["name"] in ("linear", "transposed"):
            assert st["parts"] == {"primal": 0, "residual": 0, "linear": st["equations"]}
        if st["name"] == "vjp":
            assert all(st["parts"][k] > 0 for k in ("primal", "residual", "linear"))
            # a residual is a primal value the linear part reads
            for node in g["nodes"]:
                if node["part"] == "residual" and node["kind"] == "eqn":
                    i = g["nodes"].index(node)
                    assert any(s == i and g["nodes"][d]["part"] == "linear" for s, d in g["edges"])


def test_explore_parse_error_at_line_and_column(client):
    text = "def f(a :: f32[2]) =\n  let b = sin a\n      c = mul b a2\n  in [c]"
    r = client.post("/v1/explore", json={"program": text})
    assert r.status_code == 400
    p = r.json()
    assert (p["line"], p["column"]) == (3, 17)
    assert text.splitlines()[2][16:18] == "a2"
    assert "undefined variable a2" in p["detail"]


def test_explore_type_error_at_its_equation(client):
    text = "def f(a :: f32[2], q :: f32[3]) =\n  let b = sin a\n      c = add b q\n  in [c]"
    r = client.post("/v1/explore", json={"program": text})
    assert r.status_code == 400
    p = r.json()
    assert p["type"].endswith("type-error")
    assert (p["line"], p["column"]) == (3, 7) and text.splitlines()[2][6] == "c"
    assert "c = add" in p["detail"]


def test_explore_bad_inputs_name_the_input_and_the_stages_stand(client):
    r = client.post("/v1/explore", json={**MEDIUM, "inputs": [[1, 2, 3], [[1, 2], [3, 4]]]})
    assert r.status_code == 200
    assert [s["name"] for s in r.json()["stages"]] == list(explore.STAGE_TITLES)
    problem = r.json()["numbers"]["problem"]
    assert problem["status"] == 400 and problem["tensor"] == "arg0"
    assert "arg0" in problem["detail"] and "[6]" in problem["detail"]
    r = client.post("/v1/explore", json={**MEDIUM, "inputs": [[1, 2, 3, 4, 5, 6]]})
    assert "expects 2" in r.json()["numbers"]["problem"]["detail"]
    r = client.post("/v1/explore", json={**MEDIUM, "rewrites": "jax"})
    assert r.status_code == 400 and "rewrites" in r.json()["detail"]


def test_explore_limits_apply_before_anything_runs(client):
    many = "def f(a :: f32[]) =\n  let " + "\n      ".join(
        f"x{i} = sin {'a' if i == 0 else f'x{i - 1}'}" for i in range(2001)
    )
    r = client.post("/v1/explore", json={"program": many + "\n  in [x2000]"})
    assert r.status_code == 413 and r.json()["limit"] == "max_equations"
    huge = "def f(a :: f32[100000, 100000]) = let b = sin a in [b]"
    r = client.post("/v1/explore", json={"program": huge})
    assert r.status_code == 413 and r.json()["limit"] == "max_peak_bytes"


def _f64(text: str) -> str:
    return text.replace("f32", "f64")


def _central_differences(program: sx.Program, inputs: list[np.ndarray], i: int, h=1e-6):
    grad = np.zeros_like(inputs[i])
    for k in np.ndindex(inputs[i].shape):
        hi, lo = [a.copy() for a in inputs], [a.copy() for a in inputs]
        hi[i][k] += h
        lo[i][k] -= h
        (f_hi,), (f_lo,) = sx.evaluate(program, *hi), sx.evaluate(program, *lo)
        grad[k] = (f_hi - f_lo) / (2 * h)
    return grad


@pytest.mark.parametrize("name", ["f", "mlp", "softmax_xent", "solve_loss", "rnn"])
def test_explore_sample_gradients_match_central_differences(client, name):
    """The explorer's numbers for each sample, in f64, against central differences of the
    sample program itself: dft(ct) (and the zipped VJP, which agrees) per input, df(dx) along
    the tangents."""
    sample = samples.SAMPLES[name]
    program = _f64(sample["program"])
    r = client.post("/v1/explore", json={**sample, "program": program})
    assert r.status_code == 200, r.text
    n = r.json()["numbers"]
    p = sx.parse(program)
    inputs = [np.asarray(x, np.float64) for x in sample["inputs"]]
    wrt = sample.get("wrt", list(range(len(inputs))))
    assert [g["name"] for g in n["dft"]] == [f"grad_{p.params[i].name}" for i in wrt]
    for i, dft, vjp in zip(wrt, n["dft"], n["vjp"][1:], strict=True):
        assert dft["dtype"] == "f64"
        got = np.asarray(dft["data"]).reshape(dft["shape"])
        np.testing.assert_allclose(got, np.asarray(vjp["data"]).reshape(vjp["shape"]), rtol=1e-12)
        np.testing.assert_allclose(got, _central_differences(p, inputs, i), rtol=1e-6, atol=1e-8)
    # df(dx): the directional derivative along the tangents (default: the inputs, as the seed)
    given = sample.get("tangents") or [sample["inputs"][i] for i in wrt]
    step = [np.zeros_like(a) for a in inputs]
    for i, t in zip(wrt, given, strict=True):
        step[i] = np.asarray(t, np.float64)
    h = 1e-6
    (hi,), (lo,) = (
        sx.evaluate(p, *[a + sign * h * d for a, d in zip(inputs, step, strict=True)])
        for sign in (1, -1)
    )
    (df,) = n["df"]
    np.testing.assert_allclose(df["data"][0], (hi - lo) / (2 * h), rtol=1e-6, atol=1e-8)


def test_samples_endpoint_lists_the_samples_and_primitives(client):
    doc = client.get("/v1/explore/samples").json()
    assert set(doc["samples"]) == {"medium", "f", "mlp", "softmax_xent", "solve_loss", "rnn"}
    assert doc["samples"]["medium"]["program"] == MEDIUM["program"]
    assert doc["primitives"] == sorted(REGISTRY)


def test_share_link_round_trip(client):
    session = {**MEDIUM, "rewrites": "seed", "unknown": "dropped"}
    r = client.post("/v1/explore/links", json=session)
    assert r.status_code == 200, r.text
    key, url = r.json()["id"], r.json()["url"]
    assert re.fullmatch(r"[0-9a-f]{16}", key) and url.endswith(f"/explore/{key}")
    again = client.post("/v1/explore/links", json=session).json()["id"]
    assert again == key  # content-addressed
    stored = client.get(f"/v1/explore/links/{key}").json()
    assert stored == {k: v for k, v in session.items() if k in explore.LINK_FIELDS}
    assert "unknown" not in stored and "title" not in stored
    page = client.get(f"/explore/{key}")
    assert page.status_code == 200 and f'data-link-id="{key}"' in page.text
    assert client.get("/v1/explore/links/0123456789abcdef").status_code == 404
    assert client.get("/explore/not-an-id").status_code == 404
    big = {"program": "x" * (explore.MAX_LINK_BYTES + 1)}
    assert client.post("/v1/explore/links", json=big).status_code == 413


def test_link_store_is_bounded():
    links = explore.LinkStore(max_entries=3, max_bytes=10)
    for i in range(5):
        links.put(f"k{i}", b"abcd")
    assert len(links.items) == 2 and links.bytes == 8  # bytes bind before entries
    assert links.get("k0") is None and links.get("k4") == b"abcd"


def test_page_assets_ship_in_the_wheel(tmp_path):
    """The static files are package data: a wheel built from the tree carries them."""
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path), str(ROOT)],
        timeout=240,
        capture_output=True,
        text=True,
    )
    assert built.returncode == 0, built.stderr[-3000:]
    (wheel,) = tmp_path.glob("shax-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for f in sorted((ROOT / "server" / "shax_server" / "static").iterdir()):
        assert f"shax_server/static/{f.name}" in names


def test_readme_starts_with_the_two_commands_then_shows_the_explorer():
    text = (ROOT / "README.md").read_text()
    head = "# shax\n\n```\nmake run "
    assert text.startswith(head)
    block = text.split("```")[1].strip().splitlines()
    assert [line.split()[:2] for line in block] == [["make", "run"], ["make", "test"]]
    image = re.search(r"!\[[^\]]*\]\((docs/screenshots/explorer\.png)\)", text)
    assert image and image.start() > text.index("make test")
    assert (ROOT / image.group(1)).stat().st_size > 50_000
    for link in re.findall(r"\]\((docs/[^)]+)\)", text):
        assert (ROOT / link).exists(), link


def test_with_api_keys_the_pages_open_only_where_the_operator_opens_them():
    pages = ("/", "/docs", "/redoc", "/explore", "/static/site/explore.js")
    with shax_server(free_port(), {"SHAX_API_KEYS": "k-one,k-two"}) as url:
        with httpx.Client(base_url=url, timeout=30) as c:
            for page in pages:  # closed by default, like every path but the health checks
                assert c.get(page).status_code == 401, page
    opened = ",".join(site.PUBLIC_PAGES + ("/v2/health/live", "/v2/health/ready"))
    env = {"SHAX_API_KEYS": "k-one,k-two", "SHAX_OPEN_PATHS": opened}
    with shax_server(free_port(), env) as url:
        with httpx.Client(base_url=url, timeout=30) as c:
            for page in pages:
                assert c.get(page).status_code == 200, page
            assert c.get("/static/docs/swagger-ui-bundle.js").status_code == 200
            assert c.get("/v1/explore/samples").status_code == 200
            assert c.post("/v1/explore", json=MEDIUM).status_code == 401
            assert c.post("/v1/explore/links", json=MEDIUM).status_code == 401
            key = {"X-API-Key": "k-two"}
            r = c.post("/v1/explore", json=MEDIUM, headers=key)
            assert r.status_code == 200
            seed_close(r.json()["numbers"]["f"][0], F)
            compiled = c.post("/v1/programs", json={"program": MEDIUM["program"]}, headers=key)
            program_id = compiled.json()["id"]
            anonymous = c.get("/", headers={"accept": "application/json"}).json()
            assert anonymous["models_loaded"] == 1 and anonymous["models"] == []
            assert program_id not in c.get("/").text
            keyed = c.get("/", headers={"accept": "application/json", **key}).json()
            assert keyed["models"] == [program_id]


def test_a_shared_session_is_checked_before_it_is_served():
    key, data = explore.link_document({"program": MEDIUM["program"]})
    assert site._checked_link(key, data.decode()) == data
    assert site._checked_link("0" * 16, data.decode()) is None  # another id's session
    assert site._checked_link(key, "not json") is None
    assert site._checked_link(key, '["a list"]') is None


@pytest.mark.parametrize(
    "change, field",
    [
        ({"rewrites": {}}, "rewrites"),
        ({"rewrites": "AAA"}, "rewrites"),
        ({"wrt": ["0"]}, "wrt"),
        ({"wrt": 0}, "wrt"),
        ({"inputs": "1, 2"}, "inputs"),
        ({"cotangents": {"data": [5, 9]}}, "cotangents"),
        ({"program": None}, "program"),
    ],
)
def test_explorer_refuses_what_its_schema_refuses(client, change, field):
    for path in ("/v1/explore", "/v1/explore/links"):
        r = client.post(path, json={**MEDIUM, **change})
        assert r.status_code == 400, (path, r.text)
        assert f"'{field}'" in r.json()["detail"]


def test_explorer_takes_null_as_absent(client):
    nulls = dict.fromkeys(("tangents", "cotangents", "wrt", "rewrites"))
    r = client.post("/v1/explore", json={**MEDIUM, **nulls})
    assert r.status_code == 200 and r.json()["rewrites"] == "shax"
    assert r.json()["numbers"]["cotangents"][0]["data"] == [1.0, 1.0]  # the default: ones


def test_infer_refuses_parameters_that_are_not_objects(client):
    """Found by schemathesis once the examples gave it a real model id."""
    example = openapi_examples.operation_examples()[("post", "/v2/models/{model_name}/infer")]
    model = example["path"]["model_name"]
    assert client.post("/v1/programs", json={"program": openapi_examples.MEDIUM}).status_code == 200
    url = f"/v2/models/{model}/infer"
    assert client.post(url, json=example["body"]).status_code == 200
    for bad in (False, 0, "", []):
        r = client.post(url, json={**example["body"], "parameters": bad})
        assert r.status_code == 400 and "'parameters' must be an object" in r.json()["detail"]
    outputs = [{"name": "out0", "parameters": False}]
    r = client.post(url, json={**example["body"], "outputs": outputs})
    assert r.status_code == 400 and "outputs[0].parameters" in r.json()["detail"]


@RANDOM_SETTINGS  # test_properties' bound (SHAX_FUZZ_EXAMPLES; fixed examples in CI)
@hypothesis.given(random_programs())
def test_explorer_on_random_programs(case):
    """On random f64 programs: every stage's graph is a layered drawing of its program with
    linearity flowing forward and residuals feeding the linear part; the numbers agree with
    each other (VJP = primal and dft, df and dft satisfy the dot-product identity)."""
    program, seed = case
    values, _ = random_inputs(program, seed)
    doc = {"program": str(program), "inputs": [v.tolist() for v in values]}
    result = explore.explore(doc, Settings())
    for st in result["stages"]:
        g, p = st["graph"], sx.parse(st["text"])
        assert len(g["nodes"]) == len(p.params) + len(p.eqns)
        assert len(g["edges"]) == sum(len(e.ins) for e in p.eqns)
        assert sum(st["parts"].values()) == st["equations"]
        for s, d in g["edges"]:
            assert g["nodes"][s]["layer"] < g["nodes"][d]["layer"]
            if g["nodes"][s]["part"] == "linear":
                assert g["nodes"][d]["part"] == "linear"
        if st["name"] in ("linear", "transposed", "vjp"):
            for i, node in enumerate(g["nodes"]):
                if node["part"] == "residual" and node["kind"] == "eqn":
                    assert any(s == i and g["nodes"][d]["part"] == "linear" for s, d in g["edges"])
    n = result["numbers"]

    def arrays(tensors):
        return [np.asarray(t["data"], np.float64) for t in tensors]

    for got, want in zip(arrays(n["vjp"]), arrays(n["f"] + n["dft"]), strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)
    check = n["dot_check"]
    scale = max(1.0, abs(check["df_dot_ct"]))
    assert abs(check["df_dot_ct"] - check["dx_dot_dft"]) <= 1e-9 * scale


def test_a_share_link_made_on_one_replica_opens_on_another(tmp_path):
    """Sessions go to the shared store too: with a real redis-server, a link stored through
    one replica loads from a second that never saw it."""
    server = shutil.which("redis-server")
    if server is None:
        pytest.skip("redis-server is not installed (apt-get install redis-server; .ci/run does)")
    port = free_port()
    redis = subprocess.Popen(
        [server, "--bind", "127.0.0.1", "--port", str(port), "--save", "", "--appendonly", "no"]
        + ["--dir", str(tmp_path)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        import redis as redis_client

        ping = redis_client.Redis(port=port, socket_timeout=1)
        deadline = time.monotonic() + 15
        while True:  # answering before the replicas start
            try:
                if ping.ping():
                    break
            except redis_client.RedisError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        env = {"SHAX_REDIS_URL": f"redis://127.0.0.1:{port}/0", "SHAX_CACHE_SECRET": "s3cret"}
        with shax_server(free_port(), env) as one, shax_server(free_port(), env) as two:
            session = {**MEDIUM, "rewrites": "seed"}
            made = httpx.post(f"{one}/v1/explore/links", json=session, timeout=30)
            assert made.status_code == 200, made.text
            key = made.json()["id"]
            loaded = httpx.get(f"{two}/v1/explore/links/{key}", timeout=30)
            assert loaded.status_code == 200, loaded.text
            assert loaded.json() == {k: v for k, v in session.items() if k in explore.LINK_FIELDS}
    finally:
        redis.terminate()
        redis.wait(timeout=10)
