"""Reductions with axis and keepdims, as JAX users write them."""

from corpus import P, R, case, libs


@case(R(3, 4, 5))
def sum_keepdims(np, x):
    return x / np.sum(np.abs(x), axis=-1, keepdims=True)


@case(R(3, 4, 5))
def mean_tuple_axes(np, x):
    return np.mean(x, axis=(0, 2)) + x.mean(axis=1).sum()


@case(R(4, 4))
def max_min_axis(np, x):
    return np.max(x, axis=0) - np.min(x, axis=1, keepdims=True).T


@case(P(3, 4))
def prod_axis(np, x):
    return np.prod(x, axis=1) + x.prod()


@case(R(5, 4))
def var_std_ddof(np, x):
    return np.var(x, axis=0) + np.std(x, axis=1, ddof=1).sum() + x.var()


@case(R(4, 5))
def cumsum_axis(np, x):
    return np.cumsum(x, axis=1) + np.cumsum(x, axis=0) + x.cumsum(axis=-1)


@case(P(6, 3))
def cumprod_axis(np, x):
    return np.cumprod(x, axis=0)


@case(R(3, 7))
def logsumexp_stable(np, x):
    sp = libs(np).special
    return sp.logsumexp(50.0 * x, axis=1) + sp.logsumexp(x)


@case(R(3, 7))
def logsumexp_keepdims_by_hand(np, x):
    m = np.max(x, axis=-1, keepdims=True)
    return m + np.log(np.sum(np.exp(x - m), axis=-1, keepdims=True))


@case(R(4, 5))
def argmax_selects(np, x):
    i = np.argmax(x, axis=1)
    j = np.argmin(x, axis=0)
    return np.take_along_axis(x, i[:, None], axis=1)[:, 0].sum() + x[j, np.arange(5)].sum()


@case(R(4, 5))
def all_any_gate(np, x):
    ok = np.all(x > -2.0) & np.any(x > 0.5)
    rows = np.any(x > 0.9, axis=1, keepdims=True)
    return np.where(ok, x, 0.0) + np.where(rows, 2.0 * x, x)


@case(R(5, 3))
def norm_vector_variants(np, x):
    return (
        np.linalg.norm(x)
        + np.linalg.norm(x, axis=1).sum()
        + np.linalg.norm(x[0], ord=1)
        + np.linalg.norm(x[1], ord=np.inf)
        + np.linalg.norm(x, axis=0, keepdims=True).sum()
    )


@case(R(4, 3))
def norm_matrix_variants(np, x):
    return np.linalg.norm(x, ord="fro") + np.linalg.norm(x, ord=1) + np.linalg.norm(x, ord=np.inf)


@case(R(4, 3))
def norm_matrix_spectral(np, x):
    return np.linalg.norm(x, ord=2)


@case(R(2, 3, 4))
def methods_on_tracer(np, x):
    return x.sum(axis=0).max() + x.min(axis=(1, 2)).sum() + x.std() + x.max(keepdims=True).sum()


@case(R(6))
def nested_reductions(np, x):
    return np.sum(x**2) / np.sum(np.abs(x)) + np.mean(np.exp(x))


@case(R(3, 4))
def amax_amin_names(np, x):
    return np.amax(x, axis=1) + np.amin(x, axis=1)


@case(R(4, 5))
def average_weighted(np, x):
    w = np.arange(1.0, 6.0)
    return np.average(x, axis=1, weights=w)


@case(R(4, 5))
def count_positive(np, x):
    n = np.sum(x > 0, axis=1)
    return x.sum(axis=1) / (n + 1)


@case(P(4, 3))
def geometric_mean(np, x):
    return np.exp(np.mean(np.log(x), axis=0))
