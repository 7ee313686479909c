"""The seed's printed numbers (its README), the one place the tests read them from.

Inputs: ``arg0 = [1..6] :: f32[6]``, ``arg1 = [[1,2],[3,4]] :: f32[2,2]`` (``shax_core.demo``),
tangents equal to the inputs, output cotangent ``[5, 9]``; gradient descent on ``f`` from
(0.5, -0.75) with step 0.05 for 40 iterations.
"""

import numpy as np

from shax_core.demo import SEED_A, SEED_B, SEED_CT

__all__ = ["DF", "DFT0", "DFT1", "F", "SEED_A", "SEED_B", "SEED_CT", "SEED_MIN", "SEED_VALUES"]

F = np.array([34.731194, 67.46239], dtype=np.float32)  # medium(arg0, arg1)
DF = np.array([42.804844, 120.34088], dtype=np.float32)  # its JVP along (arg0, arg1)
DFT0 = np.array([71.61691, -46.757164, -258.48987, -47.759422, 9.942725, 187.39752], np.float32)
DFT1 = np.array([[-86.82799, 156.29037], [86.82799, 156.29037]], dtype=np.float32)
# f's value at each of gradient descent's 40 iterations (f32), and where it ends
SEED_VALUES = [
    -0.23971277,
    -0.31265023,
    -0.36950287,
    -0.4114037,
    -0.44097826,
    -0.46120283,
    -0.4747295,
    -0.4836406,
    -0.48945206,
    -0.493217,
    -0.49564552,
    -0.49720764,
    -0.4982106,
    -0.49885383,
    -0.4992661,
    -0.49953017,
    -0.49969923,
    -0.4998075,
    -0.4998768,
    -0.49992114,
    -0.49994954,
    -0.4999677,
    -0.49997932,
    -0.49998674,
    -0.49999154,
    -0.49999458,
    -0.4999965,
    -0.49999776,
    -0.4999986,
    -0.49999908,
    -0.4999994,
    -0.49999964,
    -0.49999973,
    -0.49999985,
    -0.49999988,
    -0.4999999,
    -0.49999997,
    -0.49999997,
    -0.49999997,
    -0.5,
]
SEED_MIN = (np.float32(0.23235208), np.float32(-1.0176479))
