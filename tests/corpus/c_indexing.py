"""Indexing and functional updates, as JAX users write them."""

from corpus import B, I, R, case


@case(R(5, 4))
def basic_int_and_slices(np, x):
    return x[0] * 2.0 + x[-1] - x[1:3].sum(axis=0) + x[:4, 1]


@case(R(9))
def strided_and_reversed(np, x):
    return x[::2].sum() + x[::-1] * x + x[7:1:-2].sum() + x[-3:].sum()


@case(R(4, 5))
def newaxis_and_ellipsis(np, x):
    return x[:, None, :] * x[None, :, :] + x[..., -1][:, None, None] + x[np.newaxis].sum(0)


@case(R(3, 4, 5))
def ellipsis_middle(np, x):
    return x[..., 1:3].sum() + x[1, ..., 2].sum() + x[:, 2, ...].sum()


@case(R(6, 3), I(6, 4))
def gather_rows_traced(np, x, idx):
    return x[idx] * 2.0


@case(R(6, 3))
def gather_rows_constant(np, x):
    return x[np.array([0, 2, 2, 5])] + x[np.asarray([1, 1, 0, 3])]


@case(R(5, 6), I(5, 3), I(6, 3))
def gather_pairs_broadcast(np, x, i, j):
    return x[i, j] + x[i[:, None], j[None, :]].sum(axis=0)


@case(R(4, 7), I(7, 4, 3))
def take_along_axis_rows(np, x, idx):
    return np.take_along_axis(x, idx[:, :2], axis=1)


@case(R(5, 3))
def negative_int_indices(np, x):
    return x[np.array([-1, -2, 0])] + x[:3, -1][:, None]


@case(R(6))
def boolean_mask_constant(np, x):
    mask = np.array([True, False, True, True, False, False])
    return x[mask] * 3.0


@case(R(6), R(6))
def boolean_mask_where_style(np, x, y):
    return np.where(x > y, x, y).sum() + np.sum(x, where=x > 0)


@case(R(5), R(2))
def at_set(np, x, v):
    return x.at[1:3].set(v) * x


@case(R(6), I(6, 4), R(4))
def at_add_repeated(np, x, idx, v):
    return x.at[idx].add(v * 2.0) + x.at[np.array([0, 0, 0, 1])].add(v)


@case(R(4, 3), R(3))
def at_multiply_row(np, x, r):
    return x.at[2].multiply(r)


@case(R(6), R(6))
def at_min_max(np, x, y):
    return x.at[::2].min(y[:3]) + x.at[1::2].max(y[3:])


@case(R(5, 4), I(5, 3))
def at_get_and_take(np, x, idx):
    return x.at[idx].get() + np.take(x, idx, axis=0)


@case(R(5), B(5))
def at_set_with_mask_traced(np, x, m):
    return x.at[m].set(0.0) + np.where(m, 1.0, x)


@case(R(4, 4))
def at_set_scalar_diagonal(np, x):
    i = np.arange(4)
    return x.at[i, i].set(1.0)


@case(R(8), I(8, 8))
def scatter_add_histogram(np, w, bins):
    return np.zeros(8).at[bins].add(w)


@case(R(3, 4, 5), I(4, 2))
def gather_middle_axis(np, x, idx):
    return x[:, idx, 1:] * 1.5


@case(R(6, 2))
def take_function(np, x):
    return np.take(x, np.array([5, 0, 3]), axis=0) + np.take(x, 1, axis=1)[:3, None]


@case(R(5, 5))
def diagonal_and_trace(np, x):
    return np.trace(x) + np.diagonal(x).sum() + np.diag(x, k=1).sum() + np.diag(np.diag(x)).sum()


@case(R(6, 5), I(6, 6))
def argsort_gather(np, x, k):
    order = np.argsort(x[:, 0])
    return x[order] + x[k][:, ::-1]


@case(R(3, 4))
def compress_with_nonzero_constant(np, x):
    rows = np.nonzero(np.array([1, 0, 1]))[0]
    return x[rows]
