"""Shape manipulation, as JAX users write it."""

from corpus import R, case


@case(R(3, 4), R(3, 4))
def stack_axes(np, a, b):
    return (
        np.stack([a, b]) + np.stack([b, a], axis=0) + np.stack([a, b], axis=-1).transpose(2, 0, 1)
    )


@case(R(3, 4), R(3, 2))
def hstack_vstack(np, a, b):
    return np.hstack([a, b]).sum() + np.vstack([a, a * 2]).sum(axis=0)


@case(R(2, 3), R(2, 3))
def concatenate_negative_axis(np, a, b):
    return np.concatenate([a, b], axis=-1) + np.concatenate((b, a), axis=1)


@case(R(3, 4))
def expand_squeeze(np, x):
    return np.squeeze(np.expand_dims(x, 1), axis=1) + np.expand_dims(x, -1).squeeze()


@case(R(2, 3, 4))
def swap_move_axes(np, x):
    return np.swapaxes(x, 0, 2) + np.moveaxis(x, 0, -1).transpose(1, 0, 2)


@case(R(3), R(2, 3))
def broadcast_to_shape(np, v, m):
    return np.broadcast_to(v, (4, 2, 3)) * m


@case(R(3, 4))
def ravel_flatten_reshape(np, x):
    return np.ravel(x) + x.flatten() * x.ravel() + x.reshape(-1) + np.reshape(x, (12,))


@case(R(4, 5))
def flip_roll(np, x):
    return np.flip(x) + np.flip(x, axis=1) + np.roll(x, 2, axis=1) + np.roll(x, -1)


@case(R(2, 3))
def tile_repeat(np, x):
    return np.tile(x, (2, 2)).sum(axis=0) + np.repeat(x, 2, axis=1).sum(axis=0)


@case(R(3))
def repeat_flat(np, x):
    return np.repeat(x, 3) * np.tile(x, 3)


@case(R(6, 4))
def split_sections(np, x):
    a, b, c = np.split(x, 3)
    d, e = np.split(x, [1], axis=1)
    return a + b * c + d.sum() + e.sum()


@case(R(8))
def diff_orders(np, x):
    return np.diff(x).sum() + (np.diff(x, n=2) ** 2).sum()


@case(R(3, 4))
def pad_forms(np, x):
    return (
        np.pad(x, 1).sum()
        + np.pad(x, (1, 2)).sum()
        + np.pad(x, ((0, 1), (2, 0)), constant_values=1.0).sum()
        + (np.pad(x, ((1, 1), (1, 1)), mode="reflect") ** 2).sum()
        + (np.pad(x, 2, mode="edge") ** 2).sum()
    )


@case(R(2, 3))
def transpose_T_and_methods(np, x):
    return x.T @ x + x.transpose() @ x + x.swapaxes(0, 1) @ x + np.transpose(x, (1, 0)) @ x


@case(R(3, 1, 4))
def squeeze_method(np, x):
    return x.squeeze(1) * x.squeeze()


@case(R(4, 4))
def tril_triu(np, x):
    return np.tril(x) + np.triu(x, k=1) * 2.0 + np.tril(x, -1)


@case(R(3, 4))
def creation_functions(np, x):
    z = np.zeros_like(x) + np.ones_like(x) + np.full_like(x, 2.0) + np.empty_like(x) * 0
    c = np.zeros((3, 4)) + np.ones(4) + np.full((3, 1), 0.5) + np.eye(3, 4) + np.eye(3)[:, :1]
    return (z + c) * x + np.identity(4)[:3]


@case(R(5))
def arange_linspace(np, x):
    return x * np.arange(5) + np.linspace(0.0, 1.0, 5) * x**2 + np.arange(2, 12, 2) / 10


@case(R(4, 4))
def tri_mask(np, x):
    return np.where(np.tri(4, dtype=bool), x, 0.0) + np.tri(4, k=-1) * x


@case(R(3, 4))
def astype_roundtrip(np, x):
    k = np.arange(12).reshape(3, 4).astype(np.float32)
    return x.astype(x.dtype) * 2.0 + (x > 0).astype(np.float32) * x + k * x


@case(R(3, 4))
def shape_attributes(np, x):
    n = x.shape[0] * x.ndim + x.size
    return x * n + x.reshape(x.shape[1], x.shape[0]).T


@case(R(2, 3))
def atleast_and_concat_scalars(np, x):
    return np.concatenate([np.atleast_1d(x.sum()), x.ravel()]) + np.atleast_2d(x[0]).sum()


@case(R(4), R(4))
def meshgrid_outer(np, a, b):
    ga, gb = np.meshgrid(a, b, indexing="ij")
    return ga * gb + np.outer(a, b)


@case(R(3, 4))
def column_stack(np, x):
    return np.column_stack([x[:, 0], x[:, 1] * 2]) + np.concatenate([x[:, :1], x[:, 1:2]], 1)
