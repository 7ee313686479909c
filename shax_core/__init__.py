"""shax_core: trace NumPy-style Python to a small IR, differentiate it the YOLO way, run it.

This is the public namespace; the implementation modules behind it are private
(``_trace``, ``_infer``, ``_linearize``, ``_evaluate``) where a public function has the
module's name, so ``shax_core.linearize`` is always the function. Layers, bottom to top (a
module imports only from layers below it; ``tests/test_layering.py`` checks it):

    ir                      Type, Var, Eqn, Program, errors, float spellings
    registry                Primitive, define, lookup, TRAITS, PARAM_KINDS, Zero, Linear
    _verify                 verify: SSA, scoping, arities, types
    core                    Builder, Tracer, bind; array operations (broadcasting, weak scalars)
    primitives/             the declarations (base: defjvp, deflinear, ...), one block each
    text, _infer, graph     IR text, inference and verify, the JSON graph and content hash
    passes/, wire           rewrites (Program -> Program); tensors on the wire
    _trace, remat, _linearize, transpose, _evaluate
    pipeline, numpy, lax    the AD pipeline (stages, vjp_program); the NumPy and lax front ends
    api                     grad, vjp, jvp, linearize of Python functions
    optimize, demo, cli

>>> import shax_core as sx
>>> p = sx.parse("def f(a :: f32[]) = let x = sin a in [x]")
>>> sx.evaluate(p, 0.0)
[array(0., dtype=float32)]
"""

from shax_core import (
    primitives,  # noqa: F401  (declares every primitive)
    tree_util,  # noqa: F401  (pytrees)
)
from shax_core._evaluate import EvaluationError, Executable, compile, evaluate
from shax_core._infer import infer
from shax_core._linearize import linearize_program
from shax_core._trace import as_type, trace
from shax_core._verify import verify
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
from shax_core.ir import Eqn, Program, ShaxError, ShaxTypeError, Type, Var, VerifyError
from shax_core.pipeline import PIPELINE_VERSION, jvp_program, stages, vjp_program
from shax_core.text import ParseError, parse, parse_module, print_module, print_program
from shax_core.transpose import TransposeError, transpose_program

__version__ = "0.1.0"

__all__ = [
    "PIPELINE_VERSION",
    "custom_jvp",
    "custom_vjp",
    "hessian",
    "jacfwd",
    "jacrev",
    "stop_gradient",
    "tree_util",
    "Eqn",
    "EvaluationError",
    "Executable",
    "ParseError",
    "Program",
    "ShaxError",
    "ShaxTypeError",
    "TransposeError",
    "Type",
    "Var",
    "VerifyError",
    "__version__",
    "as_type",
    "compile",
    "evaluate",
    "grad",
    "infer",
    "jvp",
    "jvp_program",
    "linearize",
    "linearize_program",
    "parse",
    "parse_module",
    "print_module",
    "print_program",
    "stages",
    "trace",
    "transpose_program",
    "value_and_grad",
    "verify",
    "vjp",
    "vjp_program",
]
