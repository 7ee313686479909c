"""The seed's two example functions, written against shax_core.numpy (the seed's HNP)."""

import shax_core.numpy as snp


def f(x, y):
    z = x + y
    return snp.sin(z) * snp.cos(z)


def medium(x0, x8):
    x1 = snp.broadcast(x0, [1], [2, 6])
    x2 = snp.sin(x1)
    x3 = snp.cos(x2)
    x4 = x2 + x3
    x5 = snp.exp(x4)
    x6 = snp.transpose(x4, [1, 0])
    x7 = snp.dot(x5, x6)
    x9 = x7 * x8
    x10 = x7 + x8
    x11 = snp.minimum(x9, x10)
    x12 = snp.maximum(x9, x10)
    x13 = x12 - x11
    return snp.reduce_sum(x13, [0])
