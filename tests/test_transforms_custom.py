"""Custom rules as equations with sub-programs (``custom_jvp_call``, ``custom_vjp_call``),
from the user's side: the rule's gradient (not autodiff's) in the library, after printing and
parsing, after a JSON graph round trip, on the server (POST /vjp) and through the SDK."""

from __future__ import annotations

import numpy as np
import pytest

import shax_core as sx
import shax_core.numpy as snp
from shax_core.graph import from_graph, to_graph
from tests.adcheck import check_hvp, check_jvp, check_transpose
from tests.test_transforms import clip_gradient, jax_x64, safe_log  # noqa: F401  # 1 / max(x, 1e-3); clip(g, -1, 1)

RNG = np.random.default_rng(14)


@sx.custom_jvp
def softplus(x):
    return snp.log1p(snp.exp(x))


@softplus.defjvp
def _softplus_jvp(primals, tangents):  # the true derivative, written differently
    (x,), (t,) = primals, tangents
    return softplus(x), t / (1.0 + snp.exp(-x))


@sx.custom_vjp
def cube(x, y):
    return x * x * x * y


def _cube_fwd(x, y):
    return cube(x, y), {"x": x, "y": y}


def _cube_bwd(res, g):  # the true derivative, from the saved residuals
    x, y = res["x"], res["y"]
    return (3.0 * x * x * y * g, x * x * x * g)


cube.defvjp(_cube_fwd, _cube_bwd)

X = np.array([0.0, 0.5, 2.0], np.float32)
RULE_LOG = np.array([1e3, 2.0, 0.5], np.float32)  # 1 / max(x, 1e-3); autodiff: [inf, 2, 0.5]


def log_loss(x):
    return snp.sum(safe_log(x))


def clip_loss(x):
    return snp.sum(clip_gradient(x * x) * 5.0)


RULE_CLIP = np.array([0.0, 1.0, 4.0], np.float32)  # clip(5) * 2x; autodiff: 10x


def vjp_of(program, *args):
    """Outputs and gradients of ``program`` at ``args`` with cotangent 1 (scalar output)."""
    out = sx.evaluate(sx.vjp_program(program), *args, np.ones((), np.float32))
    return out[0], out[1:]


def test_the_traced_program_carries_the_rule():
    text = sx.print_program(sx.trace(log_loss, X))
    assert "custom_jvp_call" in text and "max" in text  # the rule's equations are in the IR
    text = sx.print_program(sx.trace(clip_loss, X))
    assert "custom_vjp_call" in text and "min" in text


@pytest.mark.parametrize(("loss", "want"), [(log_loss, RULE_LOG), (clip_loss, RULE_CLIP)])
def test_rule_gradient_in_the_library_and_after_round_trips(loss, want):
    np.testing.assert_allclose(sx.grad(loss)(X), want, rtol=1e-6)
    program = sx.trace(loss, X)
    parsed = sx.parse(sx.print_program(program))
    assert parsed == program
    graphed = from_graph(to_graph(program))
    assert sx.print_program(graphed) == sx.print_program(program)
    for p in (program, parsed, graphed):
        _, (g,) = vjp_of(p, X)
        np.testing.assert_allclose(g, want, rtol=1e-6)


def test_fd_and_dot_product_where_the_rule_is_the_true_derivative():
    x = RNG.uniform(-2.0, 2.0, 4)
    y = RNG.uniform(-2.0, 2.0, 4)
    program = sx.verify(sx.trace(lambda x: snp.sum(softplus(x) * x), x))
    check_jvp(program, [x], RNG)
    check_transpose(program, [x], RNG)
    check_hvp(program, [x], RNG)  # grad of grad differentiates the rule's tangent equations
    program = sx.verify(sx.trace(lambda x, y: snp.sum(cube(snp.sin(x), y)), x, y))
    # (a custom_vjp's linear map has no forward evaluation, so no dot-product test: the
    # gradient is checked against finite differences and the closed form instead)
    _, gx, gy = sx.evaluate(sx.vjp_program(program), x, y, np.float64(1.0))
    np.testing.assert_allclose(gx, 3 * np.sin(x) ** 2 * np.cos(x) * y, rtol=1e-10)
    np.testing.assert_allclose(gy, np.sin(x) ** 3, rtol=1e-10)
    t = RNG.uniform(-1.0, 1.0, 4)
    f = lambda x: sx.evaluate(program, x, y)[0]  # noqa: E731
    fd = (f(x + 1e-6 * t) - f(x - 1e-6 * t)) / 2e-6
    np.testing.assert_allclose(np.dot(gx, t), fd, rtol=1e-6)
    check_hvp(program, [x, y], RNG)  # bwd is traced, so it is differentiated again


def test_grad_of_grad_through_custom_jvp():
    # d2/dx2 log x = -1/x^2 away from the clamp; at x < 1e-3 the rule's t / 1e-3 has no
    # second derivative (its derivative in x is 0 there), not autodiff's -1/x^2
    np.testing.assert_allclose(sx.grad(sx.grad(safe_log))(2.0), -0.25, rtol=1e-6)
    np.testing.assert_allclose(sx.grad(sx.grad(safe_log))(1e-4), 0.0, atol=1e-6)
    h = sx.hessian(log_loss)(np.array([0.5, 2.0], np.float32))
    np.testing.assert_allclose(h, np.diag([-4.0, -0.25]), rtol=1e-5)


def test_partial_argnums_and_second_order_through_custom_vjp():
    x, y = np.array([0.5, 1.5]), np.array([2.0, -1.0])
    loss = lambda x, y: snp.sum(cube(x, y))  # noqa: E731
    np.testing.assert_allclose(sx.grad(loss, argnums=1)(x, y), x**3, rtol=1e-12)
    np.testing.assert_allclose(sx.grad(loss)(x, y), 3 * x * x * y, rtol=1e-12)
    # forward over reverse: the VJP holds fwd's and bwd's equations, no custom_vjp_linear
    np.testing.assert_allclose(sx.hessian(lambda x: loss(x, y))(x), np.diag(6 * x * y))
    s = 1 / (1 + np.exp(-x))
    h = sx.jacfwd(sx.grad(lambda x: snp.sum(softplus(x))))(x)
    np.testing.assert_allclose(h, np.diag(s * (1 - s)), rtol=1e-12)


def test_a_rule_not_linear_in_the_tangents_is_refused():
    @sx.custom_jvp
    def constant_tangent(x):
        return snp.sin(x)

    constant_tangent.defjvp(lambda p, t: (constant_tangent(p[0]), snp.cos(p[0])))
    with pytest.raises(sx.ShaxError, match="does not depend on the input tangents"):
        sx.grad(constant_tangent)(1.0)

    @sx.custom_jvp
    def squared_tangent(x):
        return snp.sin(x)

    squared_tangent.defjvp(lambda p, t: (squared_tangent(p[0]), t[0] * t[0]))
    with pytest.raises(sx.ShaxError, match="not linear"):
        sx.grad(squared_tangent)(1.0)


def test_forward_mode_of_a_custom_vjp_is_an_error():
    with pytest.raises(sx.ShaxError, match="forward-mode"):
        sx.jvp(clip_loss, (X,), (np.ones(3, np.float32),))


BAD_JVP = """def f(x :: f32[3]) =
  let y :: f32[3] = custom_jvp_call {
      def fun(a :: f32[3]) = let b = sin a in [b]
    } {
      def rule(a :: f32[3]) = let b = cos a in [b, b]
    } x
  in [y]"""

BAD_BWD = """def f(x :: f32[3]) =
  let y :: f32[3] = custom_vjp_call {
      def fun(a :: f32[3]) = let b = sin a in [b]
    } {
      def fwd(a :: f32[3]) = let b = sin a  c = cos a in [b, c]
    } {
      def bwd(c :: f32[3], g :: f32[]) = let b = mul g g in [b]
    } x
  in [y]"""


@pytest.mark.parametrize(
    ("text", "rule"), [(BAD_JVP, "the rule rule takes"), (BAD_BWD, "the rule bwd maps")]
)
def test_rules_are_checked_against_the_signature(text, rule):
    with pytest.raises(sx.ShaxError) as info:
        sx.infer(sx.parse(text))
    message = str(info.value)
    assert rule in message
    assert "y" in message and "custom_" in message  # the equation is named


# ---------------------------------------------------------------------------------------------
# on the server: it differentiates the uploaded rule, with no client-side special case


@pytest.mark.parametrize(("loss", "want"), [(log_loss, RULE_LOG), (clip_loss, RULE_CLIP)])
@pytest.mark.parametrize("form", ["text", "graph"])
def test_server_vjp_uses_the_rule(client, loss, want, form):
    program = sx.trace(loss, X)
    body = (
        {"program": sx.print_program(program)} if form == "text" else {"graph": to_graph(program)}
    )
    r = client.post("/vjp", json={**body, "inputs": [{"data": X.tolist()}]})
    assert r.status_code == 200, r.text
    (grad,) = r.json()["gradients"]
    got = np.asarray(grad["data"], np.float32).reshape(grad["shape"])
    np.testing.assert_allclose(got, want, rtol=1e-6)


def test_server_refuses_forward_mode_of_a_custom_vjp(client):
    text = sx.print_program(sx.trace(clip_loss, X))
    r = client.post("/v1/programs", json={"program": text})
    assert r.status_code == 200, r.text  # reverse mode works (above); forward mode is refused
    r = client.post(
        f"/v1/programs/{r.json()['id']}/jvp",
        json={"inputs": [{"data": X.tolist()}], "tangents": [{"data": [1, 1, 1]}]},
    )
    assert 400 <= r.status_code < 500, r.text
    assert "forward-mode" in r.text


def test_server_refuses_a_rule_not_linear_in_the_tangents(client):
    text = BAD_JVP.replace(
        "def rule(a :: f32[3]) = let b = cos a in [b, b]",
        ("def rule(a :: f32[3], t :: f32[3]) = let b = sin a  u = mul t t in [b, u]"),
    )
    assert "mul t t" in text
    r = client.post(
        "/vjp",
        json={
            "program": text,
            "inputs": [{"data": [1, 2, 3]}],
            "cotangents": [{"data": [1, 1, 1]}],
        },
    )
    assert r.status_code == 400, r.text
    assert "not linear" in r.text


@pytest.mark.parametrize("program_format", ["text", "graph"])
def test_sdk_uploads_the_rule(server_url, program_format):
    from shax_client import Client

    with Client(server_url, program_format=program_format) as c:
        np.testing.assert_allclose(c.grad(log_loss)(X), RULE_LOG, rtol=1e-6)
        np.testing.assert_allclose(c.grad(clip_loss)(X), RULE_CLIP, rtol=1e-6)
        x = np.array([0.3, -1.2], np.float32)
        np.testing.assert_allclose(
            c.grad(lambda x: snp.sum(softplus(x)))(x), 1 / (1 + np.exp(-x)), rtol=1e-5
        )
        # the server holds the rule: its own stages show the custom equation and the rule's
        # clamp (max) in the derivative it built
        remote = c.compile(log_loss, X)
        np.testing.assert_allclose(remote.grad(X), RULE_LOG, rtol=1e-6)
        stages = remote.stages()
        assert any("custom_jvp_call" in text for text in stages.values()), list(stages)
        assert "max" in stages["vjp"], stages["vjp"]


# ---------------------------------------------------------------------------------------------
# pytree outputs


@sx.custom_jvp
def sincos(x):
    return {"s": snp.sin(x), "c": snp.cos(x)}


@sincos.defjvp
def _sincos_jvp(primals, tangents):
    (x,), (t,) = primals, tangents
    return sincos(x), {"s": snp.cos(x) * t, "c": -snp.sin(x) * t}


@sx.custom_vjp
def scaled_pair(x, y):
    return x * y, x + y


def _pair_fwd(x, y):
    return scaled_pair(x, y), (x, y)


def _pair_bwd(res, cts):
    x, y = res
    g_prod, g_sum = cts
    return (g_prod * y + g_sum, g_prod * x + g_sum)


scaled_pair.defvjp(_pair_fwd, _pair_bwd)


def test_pytree_outputs_of_custom_functions():
    x, y = np.array([0.3, 1.1]), np.array([-0.7, 2.0])
    out = sincos(x)
    assert set(out) == {"s", "c"}

    def loss(x):
        sc = sincos(x)
        return snp.sum(sc["s"] * sc["c"])  # sin(2x) / 2

    np.testing.assert_allclose(sx.grad(loss)(x), np.cos(2 * x), rtol=1e-12)
    program = sx.verify(sx.trace(loss, x))
    check_jvp(program, [x], RNG)
    check_transpose(program, [x], RNG)

    def pair_loss(x, y):
        p, s = scaled_pair(x, y)
        return snp.sum(p * s)

    gx, gy = sx.grad(pair_loss, argnums=(0, 1))(x, y)
    np.testing.assert_allclose(gx, y * (x + y) + x * y, rtol=1e-12)
    np.testing.assert_allclose(gy, x * (x + y) + x * y, rtol=1e-12)
    parsed = sx.parse(sx.print_program(sx.trace(pair_loss, x, y)))
    _, gx2, gy2 = sx.evaluate(sx.vjp_program(parsed), x, y, np.float64(1.0))
    np.testing.assert_allclose(gx2, gx, rtol=1e-12)
    np.testing.assert_allclose(gy2, gy, rtol=1e-12)


def test_a_rule_of_the_wrong_structure_is_refused():
    @sx.custom_jvp
    def two(x):
        return x, x

    two.defjvp(lambda p, t: (two(p[0]), t[0]))
    with pytest.raises(sx.ShaxError, match="structure"):
        sx.grad(lambda x: two(x)[0])(1.0)


# ---------------------------------------------------------------------------------------------
# nondiff_argnums: static Python values (a function, a number) passed to the rules first


def test_nondiff_argnums_as_jax_passes_them():
    from functools import partial

    @partial(sx.custom_vjp, nondiff_argnums=(0,))
    def app(f, x):
        return f(x)

    app.defvjp(lambda f, x: (app(f, x), x), lambda f, x, g: (5.0 * g * f(x),))
    x = np.array([0.5, 2.0])
    np.testing.assert_allclose(sx.grad(lambda x: snp.sum(app(snp.sin, x)))(x), 5 * np.sin(x))
    text = sx.print_program(sx.trace(lambda x: snp.sum(app(snp.sin, x)), x))
    assert "custom_vjp_call" in text and "sin" in text

    @partial(sx.custom_jvp, nondiff_argnums=(1,))
    def power(x, n):
        return x**n

    @power.defjvp
    def _power_jvp(n, primals, tangents):
        (x,), (t,) = primals, tangents
        return power(x, n), n * x ** (n - 1) * t

    np.testing.assert_allclose(sx.grad(lambda x: power(x, 3))(2.0), 12.0)
    np.testing.assert_allclose(sx.grad(sx.grad(lambda x: power(x, 3)))(2.0), 12.0)
    np.testing.assert_allclose(sx.grad(lambda x: power(x, 2))(2.0), 4.0)  # its own rule
    with pytest.raises(sx.ShaxError, match="nondiff_argnums"):
        sx.grad(lambda x: power(x, x))(2.0)


def test_pytree_outputs_and_nondiff_argnums_against_jax(jax_x64):  # noqa: F811
    from functools import partial

    jax, jnp = jax_x64, jax_x64.numpy

    @jax.custom_vjp
    def jpair(x, y):
        return x * y, x + y

    jpair.defvjp(lambda x, y: (jpair(x, y), (x, y)), _pair_bwd)

    @partial(jax.custom_jvp, nondiff_argnums=(1,))
    def jpower(x, n):
        return x**n

    @jpower.defjvp
    def _(n, primals, tangents):
        (x,), (t,) = primals, tangents
        return jpower(x, n), 0.5 * n * x ** (n - 1) * t  # not the true derivative, on purpose

    @partial(sx.custom_jvp, nondiff_argnums=(1,))
    def power(x, n):
        return x**n

    @power.defjvp
    def _(n, primals, tangents):
        (x,), (t,) = primals, tangents
        return power(x, n), 0.5 * n * x ** (n - 1) * t

    x, y = np.array([0.3, 1.1]), np.array([-0.7, 2.0])
    ours = sx.grad(lambda x, y: snp.sum(snp.prod(snp.stack(scaled_pair(x, y)), 0)), (0, 1))(x, y)
    theirs = jax.grad(lambda x, y: jnp.sum(jnp.prod(jnp.stack(jpair(x, y)), 0)), (0, 1))(x, y)
    for a, b in zip(ours, theirs, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-12)
    for f, g in [(lambda x: power(x, 3), lambda x: jpower(x, 3))]:
        np.testing.assert_allclose(sx.grad(f)(1.5), jax.grad(g)(1.5), rtol=1e-12)
        np.testing.assert_allclose(sx.grad(sx.grad(f))(1.5), jax.grad(jax.grad(g))(1.5), rtol=1e-12)
