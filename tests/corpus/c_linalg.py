"""Linear algebra, as JAX users write it (and float64 programs)."""

from corpus import SPD, R, case, libs


@case(R(2, 3, 4), R(2, 4, 5))
def batched_matmul(np, a, b):
    return a @ b


@case(R(3, 4), R(2, 4, 5))
def broadcast_matmul(np, a, b):
    return np.matmul(a, b) + (a @ b[0])[None]


@case(R(4), R(3, 4, 2))
def vector_batched_matmul(np, v, m):
    return (v @ m) + np.matmul(m[..., 0], v)[:, None]


@case(R(4), R(4))
def dot_vdot_inner_outer(np, a, b):
    return np.dot(a, b) + np.vdot(a, b) + np.inner(a, b) + np.outer(a, b).sum()


@case(R(2, 3, 4), R(4, 3, 5))
def tensordot_axes(np, a, b):
    return np.tensordot(a, b, axes=([1, 2], [1, 0])) + np.tensordot(
        a[0], b[:, :, 0], axes=([0, 1], [1, 0])
    )


@case(R(3, 4), R(4, 5), R(5))
def einsum_chain(np, a, b, c):
    return np.einsum("ij,jk,k->i", a, b, c)


@case(R(4, 4), R(4))
def einsum_trace_diag(np, a, v):
    return np.einsum("ii->", a) + np.einsum("ii->i", a) @ v + np.einsum("i,i->", v, v)


@case(R(2, 3, 4), R(2, 4))
def einsum_batch_and_sum(np, a, b):
    return (
        np.einsum("bij,bj->bi", a, b).sum()
        + np.einsum("bij->j", a).sum()
        + np.einsum("...j,...j", b, b).sum()
    )


@case(R(3, 4))
def einsum_transpose_implicit(np, a):
    return np.einsum("ij->ji", a) @ a + np.einsum("ij", a).sum()


@case(SPD(4), R(4))
def solve_vector(np, a, b):
    return np.linalg.solve(a, b)


@case(SPD(3), R(3, 2))
def solve_matrix(np, a, b):
    return np.linalg.solve(a + 0.3 * np.eye(3)[::-1], b)


@case(SPD(4))
def inverse(np, a):
    return np.linalg.inv(a)


@case(SPD(3), R(3, 3))
def determinant(np, a, b):
    return np.linalg.det(a) + np.linalg.det(b + 3 * np.eye(3))


@case(R(3, 3))
def slogdet_general(np, a):
    sign, logabs = np.linalg.slogdet(a + 2.0 * np.eye(3))
    return sign * logabs


@case(SPD(4))
def cholesky_factor(np, a):
    return np.linalg.cholesky(a)


@case(SPD(4), R(4, 2))
def triangular_solves(np, a, b):
    la = libs(np).linalg
    L = np.linalg.cholesky(a)
    x = la.solve_triangular(L, b, lower=True)
    y = la.solve_triangular(L.T, b, lower=False)
    z = la.solve_triangular(L, b, lower=True, trans=1)
    return x + y + z


@case(SPD(4), R(4))
def cho_solve_vector(np, a, b):
    la = libs(np).linalg
    return la.cho_solve((np.linalg.cholesky(a), True), b)


@case(SPD(2, 3), R(2, 3))
def batched_solve_and_det(np, a, b):
    return np.linalg.solve(a, b[..., None])[..., 0] * np.linalg.det(a)[:, None]


@case(R(4, 3))
def least_squares_normal_eq(np, x):
    y = np.arange(4.0)
    g = x.T @ x + 0.1 * np.eye(3)
    return np.linalg.solve(g, x.T @ y)


@case(R(5, 5))
def matrix_power_series(np, a):
    a = 0.3 * a
    out = np.eye(5)
    term = np.eye(5)
    for k in range(1, 6):
        term = term @ a / k
        out = out + term
    return out


# --- float64 ---------------------------------------------------------------------------------


@case(R(6), f64=True)
def f64_polynomial(np, x):
    return np.polyval(np.array([1.0, -2.0, 0.5, 3.0]), x)


@case(SPD(4), R(4), f64=True)
def f64_solve(np, a, b):
    return np.linalg.solve(a, b) @ np.linalg.inv(a) @ b


@case(R(5, 3), f64=True)
def f64_softmax_stable(np, x):
    nn = libs(np).nn
    return nn.softmax(1000.0 * x, axis=0)


@case(R(8), f64=True)
def f64_cumulative(np, x):
    return np.cumsum(np.exp(x)) / np.cumprod(1.0 + 0.1 * x)


@case(SPD(4), f64=True)
def f64_logdet_chol(np, a):
    return 2.0 * np.sum(np.log(np.diagonal(np.linalg.cholesky(a))))


@case(R(4, 4), f64=True)
def f64_constants_promote(np, x):
    return x * np.float64(1.0 / 3.0) + np.pi * np.arange(4.0)


@case(R(6), R(6), f64=True)
def f64_norm_distance(np, x, y):
    return np.sqrt(np.sum((x - y) ** 2) + 1e-12) + np.linalg.norm(x + 2.0)


@case(R(3, 4), f64=True)
def f64_sort_topk(np, x):
    lax = libs(np).lax
    vals, idx = lax.top_k(x, 2)
    return vals.sum() + np.sort(x, axis=0)[-1].sum() + np.sort(x)[:, 0].sum() + idx.sum() * 0.0
