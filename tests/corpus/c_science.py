"""Attention, statistics, Gaussian processes, physics, optimization test functions."""

from corpus import SPD, I, P, R, case, libs

# --- attention -------------------------------------------------------------------------------


@case(R(5, 8), R(6, 8), R(6, 4), domain="attention")
def scaled_dot_attention(np, q, k, v):
    nn = libs(np).nn
    s = q @ k.T / np.sqrt(q.shape[-1])
    return nn.softmax(s, axis=-1) @ v


@case(R(2, 3, 5, 4), R(2, 3, 5, 4), R(2, 3, 5, 4), domain="attention")
def multihead_einsum(np, q, k, v):
    nn = libs(np).nn
    s = np.einsum("bhqd,bhkd->bhqk", q, k) / 2.0
    return np.einsum("bhqk,bhkd->bhqd", nn.softmax(s, axis=-1), v)


@case(R(6, 4), R(6, 4), R(6, 4), domain="attention")
def causal_attention(np, q, k, v):
    nn = libs(np).nn
    n = q.shape[0]
    mask = np.tril(np.ones((n, n), dtype=bool))
    s = np.where(mask, q @ k.T, -1e9)
    return nn.softmax(s, axis=-1) @ v


@case(R(2, 5, 6), R(6, 6), R(6, 6), R(6, 6), domain="attention")
def self_attention_batched(np, x, wq, wk, wv):
    nn = libs(np).nn
    q, k, v = x @ wq, x @ wk, x @ wv
    a = nn.softmax(q @ np.swapaxes(k, -1, -2) / np.sqrt(6.0), axis=-1)
    return (a @ v).reshape(2, -1)


@case(R(4, 6), R(4, 6), domain="attention")
def rotary_embedding(np, x, y):
    half = x.shape[-1] // 2
    theta = np.arange(x.shape[0])[:, None] * (1.0 / 10000 ** (np.arange(half) / half))[None, :]
    c, s = np.cos(theta), np.sin(theta)
    x1, x2 = x[..., :half], x[..., half:]
    r = np.concatenate([x1 * c - x2 * s, x1 * s + x2 * c], axis=-1)
    return np.sum(r * y)


# --- statistics ------------------------------------------------------------------------------


@case(R(10), R(), P(), domain="statistics")
def gaussian_nll(np, x, mu, sigma):
    return np.sum(0.5 * ((x - mu) / sigma) ** 2 + np.log(sigma) + 0.5 * np.log(2 * np.pi))


@case(R(20, 3), domain="statistics")
def covariance_matrix(np, x):
    xc = x - x.mean(axis=0)
    return xc.T @ xc / (x.shape[0] - 1)


@case(R(20, 3), domain="statistics")
def correlation_like(np, x):
    xc = x - x.mean(axis=0, keepdims=True)
    c = xc.T @ xc
    d = np.sqrt(np.diag(c))
    return c / np.outer(d, d)


@case(R(4, 6), domain="statistics")
def log_softmax_entropy(np, logits):
    sp = libs(np).special
    logp = logits - sp.logsumexp(logits, axis=1, keepdims=True)
    return -np.sum(np.exp(logp) * logp, axis=1)


@case(R(12), domain="statistics")
def zscore_and_skew(np, x):
    z = (x - x.mean()) / x.std()
    return np.mean(z**3) + np.mean(z**4)


@case(R(3, 8), R(8), domain="statistics")
def mixture_loglik(np, means, x):
    sp = libs(np).special
    d = -0.5 * (x[None, :] - means) ** 2
    return np.sum(sp.logsumexp(d, axis=0) - np.log(3.0))


@case(P(6), domain="statistics")
def dirichlet_like_logpdf(np, alpha):
    x = np.linspace(0.1, 0.6, 6)
    x = x / x.sum()
    return np.sum((alpha - 1.0) * np.log(x)) - np.sum(np.log(alpha))


@case(R(10, 2), R(2), domain="statistics")
def logistic_regression_nll(np, xs, w):
    nn = libs(np).nn
    y = (np.arange(10) % 2).astype(np.float32)
    z = xs @ w
    return -np.sum(y * nn.log_sigmoid(z) + (1 - y) * nn.log_sigmoid(-z))


@case(R(9), domain="statistics")
def quantile_free_median_via_sort(np, x):
    s = np.sort(x)
    return s[4] + s[-1] - s[0]


@case(R(8), domain="statistics")
def histogram_weights(np, x):
    centers = np.linspace(-1.0, 1.0, 5)
    w = np.exp(-((x[:, None] - centers[None, :]) ** 2) / 0.1)
    return w.sum(axis=0) / w.sum()


# --- Gaussian processes ----------------------------------------------------------------------


@case(R(6, 2), P(), P(), domain="gp")
def rbf_kernel_matrix(np, x, ls, var):
    d2 = np.sum((x[:, None, :] - x[None, :, :]) ** 2, axis=-1)
    return var * np.exp(-0.5 * d2 / ls**2)


@case(R(6, 2), R(6), P(), domain="gp")
def gp_marginal_likelihood(np, x, y, ls):
    d2 = np.sum((x[:, None, :] - x[None, :, :]) ** 2, axis=-1)
    k = np.exp(-0.5 * d2 / ls**2) + 0.1 * np.eye(6)
    L = np.linalg.cholesky(k)
    alpha = libs(np).linalg.cho_solve((L, True), y)
    return 0.5 * y @ alpha + np.sum(np.log(np.diag(L)))


@case(R(6, 2), R(6), R(3, 2), domain="gp")
def gp_posterior_mean(np, x, y, xs):
    def k(a, b):
        return np.exp(-0.5 * np.sum((a[:, None] - b[None]) ** 2, -1))

    kxx = k(x, x) + 0.1 * np.eye(6)
    return k(xs, x) @ np.linalg.solve(kxx, y)


@case(SPD(5), R(5), domain="gp")
def mvn_logpdf(np, cov, x):
    L = np.linalg.cholesky(cov)
    z = libs(np).linalg.solve_triangular(L, x, lower=True)
    return -0.5 * z @ z - np.sum(np.log(np.diag(L))) - 2.5 * np.log(2 * np.pi)


@case(SPD(4), domain="gp")
def logdet_slogdet(np, k):
    sign, logdet = np.linalg.slogdet(k)
    return sign * logdet


# --- physics ---------------------------------------------------------------------------------


@case(R(5, 3), domain="physics")
def lennard_jones_energy(np, pos):
    pos = pos * 2.0 + np.arange(15.0).reshape(5, 3)
    d = pos[:, None, :] - pos[None, :, :]
    r2 = np.sum(d**2, axis=-1) + np.eye(5)
    inv6 = (1.0 / r2) ** 3
    e = 4.0 * (inv6**2 - inv6)
    return 0.5 * np.sum(np.where(np.eye(5, dtype=bool), 0.0, e))


@case(R(4, 2), R(4, 2), domain="physics")
def spring_chain_energy(np, q, p):
    dq = np.diff(q, axis=0)
    stretch = np.linalg.norm(dq, axis=1) - 1.0
    return 0.5 * np.sum(p**2) + 0.5 * np.sum(stretch**2)


@case(R(10), domain="physics")
def laplacian_1d(np, u):
    lap = np.roll(u, 1) - 2 * u + np.roll(u, -1)
    return 0.5 * np.sum(lap**2)


@case(R(6, 6), domain="physics")
def laplacian_2d_pad(np, u):
    up = np.pad(u, 1, mode="edge")
    lap = up[:-2, 1:-1] + up[2:, 1:-1] + up[1:-1, :-2] + up[1:-1, 2:] - 4 * u
    return np.sum(lap**2)


@case(R(2), R(2), domain="physics")
def leapfrog_pendulum(np, q0, p0):
    q, p = q0, p0
    dt = 0.1
    for _ in range(5):
        p = p - 0.5 * dt * np.sin(q)
        q = q + dt * p
        p = p - 0.5 * dt * np.sin(q)
    return np.stack([q, p])


@case(R(8, 2), domain="physics")
def gravitational_potential(np, pos):
    pos = pos + np.stack([np.arange(8.0), np.zeros(8)], axis=1)
    d = pos[:, None, :] - pos[None, :, :]
    r = np.sqrt(np.sum(d * d, axis=-1) + np.eye(8))
    iu = np.triu_indices(8, k=1)
    return -np.sum(1.0 / r[iu])


@case(R(7), domain="physics")
def heat_step_convolve(np, u):
    k = np.array([0.25, 0.5, 0.25])
    return np.convolve(u, k, mode="same")


@case(R(3), R(3), domain="physics")
def cross_product_torque(np, r, f):
    return np.cross(r, f) @ np.cross(f, r + 1.0)


# --- optimization test functions -------------------------------------------------------------


@case(R(6, lo=-2, hi=2), domain="optim")
def rosenbrock(np, x):
    return np.sum(100.0 * (x[1:] - x[:-1] ** 2) ** 2 + (1 - x[:-1]) ** 2)


@case(R(5, lo=-5, hi=5), domain="optim")
def rastrigin(np, x):
    return 10 * x.size + np.sum(x**2 - 10 * np.cos(2 * np.pi * x))


@case(R(4, lo=-3, hi=3), domain="optim")
def ackley(np, x):
    n = x.shape[0]
    a = -20 * np.exp(-0.2 * np.sqrt(np.sum(x**2) / n))
    return a - np.exp(np.sum(np.cos(2 * np.pi * x)) / n) + 20 + np.e


@case(R(2, lo=-4, hi=4), domain="optim")
def beale(np, xy):
    x, y = xy[0], xy[1]
    return (1.5 - x + x * y) ** 2 + (2.25 - x + x * y**2) ** 2 + (2.625 - x + x * y**3) ** 2


@case(R(5, lo=-3, hi=3), domain="optim")
def styblinski_tang(np, x):
    return 0.5 * np.sum(x**4 - 16 * x**2 + 5 * x)


@case(R(2, lo=-2, hi=2), domain="optim")
def himmelblau(np, p):
    x, y = p
    return (x**2 + y - 11) ** 2 + (x + y**2 - 7) ** 2


@case(R(4), SPD(4), domain="optim")
def quadratic_form(np, x, a):
    return 0.5 * x @ a @ x - np.dot(np.ones(4), x)


@case(R(5, lo=-2, hi=2), domain="optim")
def griewank(np, x):
    i = np.arange(1, x.shape[0] + 1)
    return 1 + np.sum(x**2) / 4000 - np.prod(np.cos(x / np.sqrt(i)))


# --- loops written with lax (scan / fori_loop), as JAX users write them -----------------------


@case(R(2), R(2), domain="physics")
def scan_leapfrog(np, q0, p0):
    lax = libs(np).lax

    def step(carry, _):
        q, p = carry
        p = p - 0.05 * np.sin(q)
        q = q + 0.1 * p
        p = p - 0.05 * np.sin(q)
        return (q, p), q.sum()

    (q, p), trace = lax.scan(step, (q0, p0), None, length=8)
    return np.concatenate([q, p, trace])


@case(R(6, 3), R(3, 3), R(3), domain="ml")
def scan_rnn(np, xs, w, b):
    lax = libs(np).lax

    def cell(h, x):
        h = np.tanh(h @ w + x + b)
        return h, h.sum()

    h, outs = lax.scan(cell, np.zeros(3, xs.dtype), xs)
    return h.sum() + outs.mean()


@case(R(4), SPD(4), domain="optim")
def fori_gradient_descent(np, x0, a):
    lax = libs(np).lax

    def body(i, x):
        return x - 0.05 * (a @ x - 1.0)

    return lax.fori_loop(0, 10, body, x0)


@case(R(5, 3), I(5, 4), domain="indexing")
def scan_gather_embeddings(np, table, ids):
    lax = libs(np).lax

    def body(acc, i):
        return acc + np.tanh(table[i]), None

    acc, _ = lax.scan(body, np.zeros(3, table.dtype), ids)
    return acc


@case(R(), R(3), domain="statistics")
def cond_branch_loss(np, t, x):
    lax = libs(np).lax
    return lax.cond(t > 0, lambda v: np.sum(v**2), lambda v: np.sum(np.abs(v)), x)
