"""The stage explorer's samples: the seed's ``f`` and ``medium``, an MLP, a softmax
cross-entropy, a least-squares loss through ``solve`` and an RNN written with ``scan``, each as IR
text with inputs (and for ``medium`` the seed's cotangent).

``medium`` is the seed's "after tracing" text, so the explorer shows the seed's stages and, for
inputs ``[1..6]`` and ``[[1,2],[3,4]]``, tangents equal to the inputs and cotangent ``[5, 9]``,
the seed's numbers: f(x) = [34.731194, 67.46239], df(dx) = [42.804844, 120.34088], ...
"""

from __future__ import annotations

SEED_F = """\
def f(arg0 :: f32[],
      arg1 :: f32[]) =
  let x0 :: f32[] = arg0
      x1 :: f32[] = arg1
      x2 :: f32[] = add x0 x1
      x3 :: f32[] = sin x2
      x4 :: f32[] = cos x2
      x5 :: f32[] = mul x3 x4
  in [x5 :: f32[]]
"""

SEED_MEDIUM = """\
def medium(arg0 :: f32[6],
           arg1 :: f32[2, 2]) =
  let x0 = arg0
      x1 = broadcast [1] [2,6] x0
      x2 = sin x1
      x3 = cos x2
      x4 = add x2 x3
      x5 = exp x4
      x6 = transpose [1,0] x4
      x7 = dot x5 x6
      x8 = arg1
      x9 = mul x7 x8
      x10 = add x7 x8
      x11 = max x9 x10
      x12 = min x9 x10
      x13 = sub x11 x12
      x14 = reduce_sum [0] x13
  in [x14]
"""

MLP = """\
-- a two-layer perceptron with a squared-error loss; gradients for w1, b1 and w2
def mlp(x :: f32[4, 3],
        w1 :: f32[3, 5],
        b1 :: f32[5],
        w2 :: f32[5, 2],
        y :: f32[4, 2]) =
  let h = dot x w1
      hb = broadcast [1] [4,5] b1
      z = add h hb
      a = tanh z
      p = dot a w2
      e = sub p y
      s = mul e e
      loss = reduce_sum [0,1] s
  in [loss]
"""

SOFTMAX_XENT = """\
-- softmax cross-entropy of one-hot labels, stabilised by the row maximum
def softmax_xent(logits :: f32[3, 4],
                 labels :: f32[3, 4]) =
  let m = reduce_max [1] logits
      mb = broadcast [0] [3,4] m
      z = sub logits mb
      ez = exp z
      se = reduce_sum [1] ez
      lse = log se
      lb = broadcast [0] [3,4] lse
      logp = sub z lb
      t = mul labels logp
      s = reduce_sum [0,1] t
      loss = negate s
  in [loss]
"""

SOLVE_LOSS = """\
-- least squares through a linear solve: x = a⁻¹ b, loss = |x - target|²; the gradient
-- for b solves with aᵀ, the one for a is its outer product with -x
def solve_loss(a :: f32[3, 3],
               b :: f32[3, 1],
               target :: f32[3, 1]) =
  let x = solve a b
      e = sub x target
      s = mul e e
      loss = reduce_sum [0,1] s
  in [loss]
"""

RNN = """\
-- an RNN over 4 steps with scan: h <- tanh(h w + x) for each row x of xs; the loss sums the
-- last state and every step's sum. Its VJP runs a second scan, backwards over the steps.
def rnn(h0 :: f32[3],
        xs :: f32[4, 3],
        w :: f32[3, 3]) =
  let h, ys = scan 4 forward 1 1 auto {
        def cell(cw :: f32[3, 3],
                 ch :: f32[3],
                 cx :: f32[3]) =
          let hw = dot ch cw
              z = add hw cx
              h1 = tanh z
              s = reduce_sum [0] h1
          in [h1, s]
      } w h0 xs
      a = reduce_sum [0] h
      b = reduce_sum [0] ys
      loss = add a b
  in [loss]
"""


def _grid(rows: int, cols: int, scale: float, shift: float = 0.0) -> list[list[float]]:
    """Small deterministic values: ((3i + 5j) mod 7 - 3) * scale + shift."""
    return [
        [round(((3 * i + 5 * j) % 7 - 3) * scale + shift, 4) for j in range(cols)]
        for i in range(rows)
    ]


SAMPLES: dict[str, dict] = {
    "medium": {
        "title": "the seed's medium",
        "program": SEED_MEDIUM,
        "inputs": [[1, 2, 3, 4, 5, 6], [[1, 2], [3, 4]]],
        "cotangents": [[5, 9]],
    },
    "f": {
        "title": "the seed's f",
        "program": SEED_F,
        "inputs": [0.5, -0.75],
    },
    "mlp": {
        "title": "an MLP (tanh, squared error)",
        "program": MLP,
        "inputs": [
            _grid(4, 3, 0.25),
            _grid(3, 5, 0.2),
            [0.1, -0.1, 0.0, 0.2, -0.2],
            _grid(5, 2, 0.3),
            _grid(4, 2, 0.5),
        ],
        "wrt": [1, 2, 3],
    },
    "softmax_xent": {
        "title": "softmax cross-entropy",
        "program": SOFTMAX_XENT,
        "inputs": [
            _grid(3, 4, 0.7),
            [[1, 0, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]],
        ],
        "wrt": [0],
    },
    "solve_loss": {
        "title": "least squares through a linear solve",
        "program": SOLVE_LOSS,
        "inputs": [[[4, 1, 0], [1, 3, 1], [0, 1, 2]], [[1], [2], [3]], [[0.5], [0.5], [0.5]]],
        "tangents": [[[1, 0, 0], [0, 0, 0], [0, 0, 0]], [[0], [1], [0]]],
        "wrt": [0, 1],
    },
    "rnn": {
        "title": "an RNN over a sequence (scan)",
        "program": RNN,
        "inputs": [[0.1, -0.2, 0.3], _grid(4, 3, 0.2), _grid(3, 3, 0.3)],
        "wrt": [0, 2],
    },
}
