"""shax_core: trace NumPy-style Python to a small IR, differentiate it the YOLO way, run it.

>>> import shax_core as sx
>>> p = sx.parse("def f(a :: f32[]) = let x = sin a in [x]")
>>> sx.evaluate(p, 0.0)
[array(0., dtype=float32)]
"""

from shax_core import (
    primitives,  # noqa: F401  (declares the registry first)
    tree_util,  # noqa: F401
)
from shax_core.api import (  # the transformations, with JAX's signatures
    custom_jvp,
    custom_vjp,
    grad,
    hessian,
    jacfwd,
    jacrev,
    jvp,
    linearize,
    stop_gradient,
    value_and_grad,
    vjp,
)
from shax_core.evaluate import EvaluationError, Executable, compile, evaluate
from shax_core.infer import infer
from shax_core.ir import (
    Eqn,
    Program,
    ShaxError,
    ShaxTypeError,
    Type,
    Var,
    VerifyError,
    verify,
)
from shax_core.linearize import linearize_program
from shax_core.text import ParseError, parse, parse_module, print_module, print_program
from shax_core.trace import trace
from shax_core.transpose import TransposeError, transpose_program
from shax_core.vjp import PIPELINE_VERSION, jvp_program, stages, vjp_program

__all__ = [
    "PIPELINE_VERSION",
    "TransposeError",
    "custom_jvp",
    "custom_vjp",
    "grad",
    "hessian",
    "jacfwd",
    "jacrev",
    "stop_gradient",
    "tree_util",
    "jvp",
    "jvp_program",
    "linearize",
    "linearize_program",
    "stages",
    "trace",
    "transpose_program",
    "value_and_grad",
    "vjp",
    "vjp_program",
    "Eqn",
    "EvaluationError",
    "Executable",
    "ParseError",
    "Program",
    "ShaxError",
    "ShaxTypeError",
    "Type",
    "Var",
    "VerifyError",
    "compile",
    "evaluate",
    "infer",
    "parse",
    "parse_module",
    "print_module",
    "print_program",
    "verify",
]
