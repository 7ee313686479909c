"""The pages in a real browser: Debian's headless Chromium, driven by Playwright for Python,
against a real ``shax serve`` on 127.0.0.1 (the session's server), with every request to any
other host refused (the network unplugged).

Checked: the landing page and its links; ``/docs`` and ``/redoc`` rendering every operation from
the server's own files; the explorer showing the seed's ``medium`` at every stage with the seed's
numbers, a parse error at its line and column, a dataflow graph with its three parts in three
colours, a shareable link, and the other samples. Each page is screenshotted (see ``SHOTS``).

Skipped, saying why, only where Chromium (``/usr/bin/chromium``, Debian package ``chromium``,
which ``.ci/run`` installs) or Playwright cannot be had. Every wait is bounded (``TIMEOUT_MS``)
and each test has a time limit.
"""

from __future__ import annotations

import os
import re
import shutil
import time
from pathlib import Path
from urllib.parse import urlparse

import numpy as np
import pytest

from tests.conftest import FIXTURES
from tests.test_seed import DF, DFT0, DFT1, F

CHROMIUM = "/usr/bin/chromium"
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-dev-shm-usage",
]
TIMEOUT_MS = 20_000
# screenshots of each page: to pytest's temporary folder, or to SHAX_SCREENSHOTS (`make
# screenshots` refreshes the ones in docs/screenshots that the README shows)
SHOTS = Path(os.environ.get("SHAX_SCREENSHOTS", ""))

if not Path(CHROMIUM).exists() and shutil.which("chromium") is None:
    pytest.skip(
        "browser tests need Debian's Chromium at /usr/bin/chromium (apt-get install chromium; "
        ".ci/run installs it): not installed here",
        allow_module_level=True,
    )
sync_api = pytest.importorskip(
    "playwright.sync_api", reason="browser tests need Playwright for Python (the dev extra)"
)

pytestmark = pytest.mark.timeout(180)


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(
            executable_path=CHROMIUM if Path(CHROMIUM).exists() else shutil.which("chromium"),
            args=FLAGS,
            timeout=TIMEOUT_MS * 3,
        )
        try:
            yield b
        finally:
            b.close()


class Page:
    """A page on a fresh context that refuses every request not to the server, and keeps the
    refused URLs and the page's JavaScript errors for the test to assert on."""

    def __init__(self, browser, server_url: str, width=1600, height=1300):
        self.origin = urlparse(server_url).netloc
        self.base = server_url
        self.context = browser.new_context(viewport={"width": width, "height": height})
        self.context.set_default_timeout(TIMEOUT_MS)
        self.foreign: list[str] = []
        self.errors: list[str] = []
        self.context.route("**/*", self._route)
        self.page = self.context.new_page()
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))

    def _route(self, route):
        url = route.request.url
        if urlparse(url).netloc == self.origin or url.startswith(("data:", "blob:")):
            route.continue_()
        else:
            self.foreign.append(url)
            route.abort()

    def goto(self, path: str):
        self.page.goto(self.base + path, wait_until="load")
        return self.page

    def check_clean(self):
        assert self.foreign == [], f"the page asked other hosts: {self.foreign}"
        assert self.errors == [], f"JavaScript errors: {self.errors}"

    def close(self):
        self.context.close()


@pytest.fixture
def tab(browser, server_url):
    t = Page(browser, server_url)
    yield t
    t.close()


@pytest.fixture(scope="module", autouse=True)
def shots_dir(tmp_path_factory):
    global SHOTS
    if not os.environ.get("SHAX_SCREENSHOTS"):
        SHOTS = tmp_path_factory.mktemp("screenshots")
    SHOTS.mkdir(parents=True, exist_ok=True)
    return SHOTS


def shot(target, name: str, **options):
    """A screenshot of a page (``full_page=True`` for all of it) or of one element."""
    target.screenshot(path=str(SHOTS / name), **options)
    assert (SHOTS / name).stat().st_size > 10_000  # a picture, not an empty frame


def wait_until(predicate, what: str, timeout_ms: int = TIMEOUT_MS):
    """Poll ``predicate`` (locator reads in Python: the pages' CSP forbids the eval that
    ``wait_for_function`` needs) until it holds, for at most ``timeout_ms``."""
    deadline = time.monotonic() + timeout_ms / 1000
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_ms} ms waiting for {what}")
        time.sleep(0.1)


def normalized(text: str) -> list[str]:
    return [" ".join(line.split()) for line in text.strip().splitlines() if line.strip()]


def numbers_in(text: str) -> np.ndarray:
    return np.array([float(x) for x in re.findall(r"-?\d+\.\d+(?:e[-+]?\d+)?", text)], np.float32)


# ---------------------------------------------------------------------------------------------


def test_landing_page(tab, client):
    client.post("/v1/programs", json={"program": (FIXTURES / "seed_f.shax").read_text()})
    page = tab.goto("/")
    assert page.locator("h1").inner_text().startswith("shax")
    facts = client.get("/", headers={"accept": "application/json"}).json()
    assert page.locator("#version").inner_text() == facts["version"]
    assert int(page.locator("#models-loaded").inner_text()) >= 1
    assert "curl -s -X POST" in page.locator("#curl").inner_text()
    for link in ("explorer", "docs", "metrics", "live", "ready"):
        assert page.locator(f"#link-{link}").is_visible()
    shot(page, "landing.png", full_page=True)
    page.locator("#link-explorer").click()
    page.wait_for_url("**/explore")
    page.wait_for_selector("body[data-ready='1']")
    tab.check_clean()


def test_swagger_ui_lists_every_operation_offline(tab, client):
    operations = [
        (method.upper(), path)
        for path, item in client.get("/openapi.json").json()["paths"].items()
        for method in item
    ]
    page = tab.goto("/docs")
    page.wait_for_selector(".opblock-summary", state="attached")
    blocks = page.locator(".opblock")
    wait_until(lambda: blocks.count() >= len(operations), "every operation in Swagger UI")
    shown = page.eval_on_selector_all(
        ".opblock",
        """els => els.map(e => [
            e.querySelector('.opblock-summary-method').textContent.trim(),
            e.querySelector('.opblock-summary-path').getAttribute('data-path')])""",
    )
    assert sorted(map(tuple, shown)) == sorted(operations)
    # an operation opened shows its example (the seed's medium) and its curl
    page.locator("#operations-programs-compile__v1_programs_post .opblock-summary").click()
    body = page.locator("#operations-programs-compile__v1_programs_post")
    body.locator(".body-param__example, .microlight, pre").first.wait_for()
    text = body.inner_text()
    assert "def medium(arg0 :: f32[6], arg1 :: f32[2, 2])" in text and "curl -s" in text
    shot(page, "docs.png")
    tab.check_clean()


def test_redoc_renders_offline(tab, client):
    n = sum(len(item) for item in client.get("/openapi.json").json()["paths"].values())
    page = tab.goto("/redoc")
    sections = page.locator("[data-section-id^='operation/']")
    wait_until(lambda: sections.count() >= n, "every operation in ReDoc", TIMEOUT_MS * 2)
    assert "The IR" in page.inner_text("body")
    shot(page, "redoc.png")
    tab.check_clean()


def open_explorer(tab, path="/explore"):
    page = tab.goto(path)
    page.wait_for_selector("body[data-ready='1']")
    return page


def stage_text(page, name: str) -> str:
    return page.locator(f".stage[data-stage='{name}'] pre").inner_text()


def test_explorer_shows_the_seeds_medium(tab):
    page = open_explorer(tab)
    assert page.locator("#sample").input_value() == "medium"
    names = page.eval_on_selector_all(".stage", "els => els.map(e => e.dataset.stage)")
    assert names == ["source", "typed", "rewritten", "linearized", "linear", "transposed", "vjp"]
    typed = (FIXTURES / "seed_medium_typed.shax").read_text()
    assert normalized(stage_text(page, "typed")) == normalized(typed)
    traced = (FIXTURES / "seed_medium_traced.shax").read_text()
    assert normalized(stage_text(page, "source")) == normalized(traced)
    assert page.locator(".stage[data-stage='typed'] .count").inner_text() == "15 eqns"
    # highlighted: primitives, types and keywords are marked up
    typed_pane = page.locator(".stage[data-stage='typed'] pre")
    assert typed_pane.locator(".tok-prim", has_text="broadcast").count() == 1
    assert typed_pane.locator(".tok-type").count() >= 15
    # the seed's numbers
    text = {k: page.locator(f"pre[data-numbers='{k}']").inner_text() for k in ("f", "df", "dft")}
    assert "34.731194" in text["f"] and "67.46239" in text["f"]
    np.testing.assert_allclose(numbers_in(text["f"]), F, rtol=1e-5)
    np.testing.assert_allclose(numbers_in(text["df"]), DF, rtol=1e-5)
    want = np.concatenate([DFT0, DFT1.reshape(-1)])
    np.testing.assert_allclose(numbers_in(text["dft"]), want, rtol=1e-5)
    vjp = numbers_in(page.locator("pre[data-numbers='vjp']").inner_text())
    np.testing.assert_allclose(vjp, np.concatenate([F, want]), rtol=1e-5)
    shot(page, "explorer.png")
    shot(page, "explorer-full.png", full_page=True)
    # the seed's own rewrites: the rewritten stage is the seed's "After rewrites" (less its
    # copies of parameters), the numbers the same
    page.locator("#rewrites").select_option("seed")
    wait_until(lambda: "dot_general" in stage_text(page, "rewritten"), "the seed's rewrites")
    seed = (FIXTURES / "seed_medium_rewritten.shax").read_text()
    seed_prims = [m for m in re.findall(r"= (\w+)", seed) if not m.startswith("arg")]
    assert re.findall(r"= (\w+)", stage_text(page, "rewritten")) == seed_prims
    dft = numbers_in(page.locator("pre[data-numbers='dft']").inner_text())
    np.testing.assert_allclose(dft, want, rtol=1e-5)
    tab.check_clean()


def test_explorer_shows_a_parse_error_at_its_line(tab):
    page = open_explorer(tab)
    bad = "def f(a :: f32[2]) =\n  let b = sin a\n      c = mul b a2\n  in [c]"
    page.locator("#editor").fill(bad)
    page.locator("#run").click()
    error = page.locator("#error")
    error.wait_for(state="visible")
    assert "line 3, column 17" in error.inner_text()
    assert "undefined variable a2" in error.inner_text()
    assert error.get_attribute("data-line") == "3"
    marked = page.locator("#editor-highlight .err-line")
    assert marked.count() == 1 and marked.inner_text() == bad.splitlines()[2]
    # the character at the column is the one underlined: the start of "a2"
    assert page.locator("#editor-highlight .err-mark").inner_text() == "a"
    assert "stale" in page.locator("#numbers").get_attribute("class")
    shot(page, "explorer-error.png")
    # a type error is placed at its equation's binding
    typo = "def f(a :: f32[2], q :: f32[3]) =\n  let b = sin a\n      c = add b q\n  in [c]"
    page.locator("#editor").fill(typo)
    page.locator("#run").click()
    wait_until(lambda: "Type error" in error.inner_text(), "the type error")
    assert "line 3, column 7" in error.inner_text()
    assert page.locator("#editor-highlight .err-line").inner_text() == typo.splitlines()[2]
    # a program pasted over the sample: its stages show, the sample's inputs are named wrong
    page.locator("#editor").fill("def g(x :: f32[3]) =\n  let y = tanh x\n  in [y]")
    page.locator("#run").click()
    wait_until(lambda: stage_text(page, "typed").startswith("def g("), "the pasted program")
    assert "'inputs' has 2 tensor(s)" in page.locator("#numbers-error").inner_text()
    page.locator("#fill-inputs").click()  # ones of the program's types: tanh(1) and 1 - tanh(1)^2
    wait_until(lambda: page.locator("pre[data-numbers='dft']").count() == 1, "the numbers")
    assert page.locator("#inputs").input_value() == "[[1,1,1]]"
    f = numbers_in(page.locator("pre[data-numbers='f']").inner_text())
    np.testing.assert_allclose(f, np.tanh(np.ones(3, np.float32)), rtol=1e-6)
    g = numbers_in(page.locator("pre[data-numbers='dft']").inner_text())
    np.testing.assert_allclose(g, 1 - np.tanh(np.ones(3, np.float32)) ** 2, rtol=1e-6)
    tab.check_clean()


def test_explorer_draws_the_dataflow_graph(tab, client):
    page = open_explorer(tab)
    page.locator("#graph-stage").select_option("vjp")
    svg = page.locator("#graph svg[data-stage='vjp']")
    svg.wait_for()
    result = client.post("/v1/explore", json={"program": page.locator("#editor").input_value()})
    vjp = next(s for s in result.json()["stages"] if s["name"] == "vjp")
    assert svg.locator("g.node").count() == len(vjp["graph"]["nodes"])
    assert svg.locator("path.edge").count() == len(vjp["graph"]["edges"])
    # the stage's text marks each binding with its part too
    pane = page.locator(".stage[data-stage='vjp'] pre")
    for part in ("primal", "residual", "linear"):
        n = sum(node["part"] == part for node in vjp["graph"]["nodes"])
        assert pane.locator(f".part-{part}").count() == n, part
    fills = page.eval_on_selector_all(
        "#graph svg g.node",
        """els => els.map(g => [g.dataset.part,
            getComputedStyle(g.querySelector('rect, ellipse')).fill])""",
    )
    by_part: dict[str, set] = {}
    for part, fill in fills:
        by_part.setdefault(part, set()).add(fill)
    assert set(by_part) == {"primal", "residual", "linear"}
    assert all(len(f) == 1 for f in by_part.values())  # one colour per part
    assert len(set.union(*by_part.values())) == 3  # three different colours
    # a click on a node finds its equation in the stage's text
    node = vjp["graph"]["nodes"][-1]
    svg.locator(f"g.node[data-id='{node['id']}']").click()
    row = page.locator(f".stage[data-stage='vjp'] pre [data-var='{node['id']}']")
    wait_until(lambda: "flash" in (row.get_attribute("class") or ""), "the flashed equation")
    assert row.inner_text().strip().startswith(f"{node['id']} ::")
    # fit to width: the drawing shrinks to the pane
    page.locator("#graph-fit").check()
    assert svg.bounding_box()["width"] <= page.locator("#graph").bounding_box()["width"]
    page.locator("#graph-fit").uncheck()
    page.locator(".stage[data-stage='linear'] header button").click()
    page.locator("#graph svg[data-stage='linear']").wait_for()
    page.locator("#graph-stage").select_option("vjp")
    page.locator("#graph svg[data-stage='vjp']").wait_for()
    page.locator("#graph").evaluate("e => { e.style.maxHeight = 'none'; }")  # the whole graph
    shot(page.locator(".graph-pane"), "explorer-graph.png")
    tab.check_clean()


def test_explorer_share_link_and_samples(tab, browser, server_url):
    page = open_explorer(tab)
    page.locator("#sample").select_option("mlp")
    signature = page.locator("#signature")
    wait_until(lambda: signature.inner_text().startswith("mlp("), "the MLP's stages")
    assert "grad_w1" in page.locator("pre[data-numbers='dft']").inner_text()
    page.locator("#share").click()
    wait_until(lambda: "/explore/" in page.locator("#share-url").input_value(), "the link")
    url = page.locator("#share-url").input_value()
    assert re.search(r"/explore/[0-9a-f]{16}$", url) and page.url == url
    other = Page(browser, server_url)
    try:
        shared = other.page
        shared.goto(url)
        shared.wait_for_selector("body[data-ready='1']")
        assert shared.locator("#editor").input_value() == page.locator("#editor").input_value()
        want = page.locator("pre[data-numbers='vjp']").inner_text()
        assert shared.locator("pre[data-numbers='vjp']").inner_text() == want
        other.check_clean()
    finally:
        other.close()
    page.locator("#sample").select_option("softmax_xent")
    wait_until(lambda: signature.inner_text().startswith("softmax_xent("), "softmax's stages")
    assert "grad_logits" in page.locator("pre[data-numbers='dft']").inner_text()
    # a loop: the RNN's scan is one node of its graph, and its VJP scans backwards
    page.locator("#sample").select_option("rnn")
    wait_until(lambda: signature.inner_text().startswith("rnn("), "the RNN's stages")
    assert "= scan 4 reverse" in stage_text(page, "vjp")
    page.locator("#graph-stage").select_option("vjp")
    graph = page.locator("#graph svg[data-stage='vjp']")
    graph.wait_for()
    assert graph.locator("g.node text", has_text="= scan").count() == 2
    # one marked line per node: the loop bodies' own bindings are not the graph's
    pane = page.locator(".stage[data-stage='vjp'] pre")
    assert pane.locator("[data-var]").count() == graph.locator("g.node").count()
    assert "grad_w" in page.locator("pre[data-numbers='dft']").inner_text()
    tab.check_clean()
