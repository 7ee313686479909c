"""ML losses and layers, as JAX users write them."""

from corpus import I, R, case, libs


@case(R(8, 5), I(5, 8))
def softmax_cross_entropy(np, logits, labels):
    nn = libs(np).nn
    logp = nn.log_softmax(logits, axis=-1)
    return -np.mean(np.take_along_axis(logp, labels[:, None], axis=1))


@case(R(8, 5), I(5, 8))
def cross_entropy_one_hot(np, logits, labels):
    nn = libs(np).nn
    onehot = nn.one_hot(labels, 5)
    return -np.sum(onehot * nn.log_softmax(logits)) / logits.shape[0]


@case(R(10), R(10))
def binary_cross_entropy_logits(np, z, y):
    nn = libs(np).nn
    t = (y > 0).astype(np.float32)
    return np.mean(nn.softplus(z) - z * t)


@case(R(6, 3), R(6, 3))
def mse_loss(np, pred, target):
    return np.mean((pred - target) ** 2)


@case(R(12, lo=-3, hi=3))
def huber_loss(np, r):
    a = np.abs(r)
    return np.sum(np.where(a < 1.0, 0.5 * r**2, a - 0.5))


@case(R(7, 4), R(7, 4))
def cosine_similarity(np, a, b):
    num = np.sum(a * b, axis=-1)
    den = np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1)
    return np.mean(num / den)


@case(R(5, 4), R(4, 3), R(3))
def dense_relu(np, x, w, b):
    nn = libs(np).nn
    return nn.relu(x @ w + b)


@case(R(5, 4), R(4, 8), R(8), R(8, 2))
def mlp_gelu(np, x, w1, b1, w2):
    nn = libs(np).nn
    h = nn.gelu(x @ w1 + b1)
    return nn.gelu(h, approximate=False) @ w2


@case(R(4, 6), R(6), R(6))
def layer_norm(np, x, gamma, beta):
    mu = x.mean(axis=-1, keepdims=True)
    var = x.var(axis=-1, keepdims=True)
    return (x - mu) / np.sqrt(var + 1e-5) * gamma + beta


@case(R(8, 3))
def batch_norm_train(np, x):
    mu = np.mean(x, axis=0)
    sd = np.std(x, axis=0)
    return (x - mu[None, :]) / (sd + 1e-3)


@case(R(4, 6), R(6))
def rms_norm(np, x, w):
    return x * (1.0 / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + 1e-6)) * w


@case(R(3, 5))
def activation_zoo(np, x):
    nn = libs(np).nn
    return (
        nn.sigmoid(x)
        + nn.silu(x)
        + nn.relu6(4.0 * x)
        + nn.log_sigmoid(x)
        + nn.softplus(x)
        + nn.swish(x)
        + nn.elu(x)
        + nn.leaky_relu(x)
    )


@case(R(3, 5))
def softmax_rows(np, x):
    nn = libs(np).nn
    return nn.softmax(x, axis=-1) * np.arange(5.0)


@case(R(4, 5))
def nn_logsumexp_and_standardize(np, x):
    nn = libs(np).nn
    return nn.logsumexp(x, axis=1).sum() + (nn.standardize(x, axis=-1) * x).sum()


@case(R(2, 10), R(3, 1))
def conv1d_valid(np, x, k):
    # a 1-d convolution with shifted slices, as users write it without lax.conv
    n = x.shape[1] - k.shape[0] + 1
    return sum(k[i, 0] * x[:, i : i + n] for i in range(k.shape[0]))


@case(R(20, 4), I(20, 6))
def embedding_bag(np, table, ids):
    return np.mean(table[ids], axis=0)


@case(R(6, 3), R(3))
def dropout_mask_fixed(np, x, w):
    mask = np.arange(18).reshape(6, 3) % 3 != 0
    return np.sum(np.where(mask, x / 0.66, 0.0) @ w)


@case(R(5, 4), R(5, 4))
def hinge_and_margin(np, scores, y):
    margins = np.maximum(0.0, 1.0 - scores * np.sign(y))
    return margins.mean() + np.mean(np.clip(scores, -0.5, 0.5) ** 2)


@case(R(6, 4), R(4, 4), R(4, 4), R(4))
def rnn_unrolled(np, xs, wx, wh, b):
    h = np.zeros(4)
    for t in range(xs.shape[0]):
        h = np.tanh(xs[t] @ wx + h @ wh + b)
    return h


@case(R(4), R(4), R(4))
def adam_step_expression(np, g, m, v):
    m2 = 0.9 * m + 0.1 * g
    v2 = 0.999 * v + 0.001 * g**2
    return m2 / (np.sqrt(v2 * v2 + 1e-3) + 1e-8)


@case(R(6, 5), I(5, 6))
def focal_loss(np, logits, labels):
    nn = libs(np).nn
    p = nn.softmax(logits)
    pt = p[np.arange(6), labels]
    return -np.mean((1 - pt) ** 2 * np.log(pt))


@case(R(4, 3, 8))
def glu_split(np, x):
    nn = libs(np).nn
    a, b = np.split(x, 2, axis=-1)
    return a * nn.sigmoid(b)


@case(R(3, 4), R(3, 4))
def kl_divergence(np, p_logits, q_logits):
    nn = libs(np).nn
    p = nn.softmax(p_logits)
    return np.sum(p * (nn.log_softmax(p_logits) - nn.log_softmax(q_logits)))
