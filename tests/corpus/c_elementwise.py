"""Elementwise math, as JAX users write it."""

from corpus import I, P, R, case, libs


@case(R(5, 4))
def sin_cos_mix(np, x):
    return np.sin(x) * np.cos(2.0 * x) + np.tan(0.5 * x)


@case(P(6))
def log_family(np, x):
    return np.log(x) + np.log2(x) + np.log10(x) + np.log1p(x)


@case(R(6))
def exp_family(np, x):
    return np.exp(x) + np.exp2(x) + np.expm1(x)


@case(R(3, 4), R(3, 4))
def hypot_arctan2(np, x, y):
    return np.hypot(x + 2.0, y) + np.arctan2(y, x + 2.0)


@case(R(8, lo=-3, hi=3))
def clip_square(np, x):
    return np.square(np.clip(x, -1.5, 1.5))


@case(P(7))
def reciprocal_sqrt(np, x):
    return np.reciprocal(x) + np.sqrt(x) + x**-0.5


@case(R(10, lo=-2, hi=2))
def abs_sign(np, x):
    return np.abs(x) * np.sign(x) + np.absolute(x)


@case(R(10, lo=-3, hi=3))
def rounding_is_flat(np, x):
    return x * np.floor(x) + np.ceil(x) + np.round(x) + np.trunc(x)


@case(R(9, lo=0.1, hi=5))
def mod_sawtooth(np, x):
    return np.mod(x, 1.3) + np.remainder(x, 0.7)


@case(R(4, 3), R(4, 3))
def logaddexp_pair(np, x, y):
    return np.logaddexp(3.0 * x, 2.0 * y)


@case(R(6), R(6))
def maximum_minimum(np, x, y):
    return np.maximum(x, y) * 2.0 + np.minimum(x, 0.25) + np.fmax(x, y) - np.fmin(x, y)


@case(R(8, lo=-2, hi=2))
def erf_gelu_exact(np, x):
    sp = libs(np).special
    return 0.5 * x * (1.0 + sp.erf(x / np.sqrt(2.0)))


@case(R(6, lo=-3, hi=3))
def sinc_window(np, x):
    return np.sinc(x + 0.1234)


@case(R(5), R(5))
def where_scalar_branches(np, x, y):
    return np.where(x > 0, x * y, 0.0) + np.where(y < 0.2, 1.0, y)


@case(R(5))
def hyperbolic(np, x):
    return np.sinh(x) + np.cosh(x) + np.tanh(x) + np.arcsinh(x) + np.arctanh(0.5 * x)


@case(R(5, lo=-0.9, hi=0.9))
def inverse_trig(np, x):
    return np.arcsin(x) + np.arccos(x) + np.arctan(x)


@case(P(6), R(6))
def power_float_exponent(np, x, y):
    return np.power(x, y) + x**2.5 + 2.0**y


@case(R(6))
def integer_powers(np, x):
    return x**2 + x**3 - 3 * x**4 + x**1


@case(R(6), R(6))
def isfinite_masking(np, x, y):
    z = np.log(x)  # nan where x < 0
    return np.where(np.isfinite(z), y, 0.0) + np.where(np.isnan(z), 2.0 * y, 0.0)


@case(R(7))
def softsign_expression(np, x):
    return x / (1.0 + np.abs(x))


@case(R(7))
def sigmoid_by_hand(np, x):
    return 1.0 / (1.0 + np.exp(-x))


@case(R(3, 3), R(3, 3))
def boolean_ops(np, x, y):
    m = (x > 0) & (y > 0) | ~(x > 0.5)
    return np.where(m, x + y, x - y)


@case(R(6), I(3, 6))
def int_array_arithmetic(np, x, k):
    return x * k + x * (k * 2 - 1)


@case(R(4, 5))
def negative_and_positive(np, x):
    return np.negative(x) + np.positive(x) * 3.0 - -x
