"""The registry: every primitive declared once, grouped by family.

Importing this package declares them all; ``lookup(name)`` finds one. Passes, the parser,
printer, inference, evaluator, linearizer and transposer read everything they need from here.
"""

from shax_core.primitives import decompositions, elementwise, indexing, linalg, numeric, structural  # noqa: F401  (declarations)  # noqa: F401, I001
from shax_core.primitives.base import (
    REGISTRY,
    Linear,
    Primitive,
    RuleError,
    Zero,
    is_linear,
    lookup,
)

__all__ = ["REGISTRY", "Linear", "Primitive", "RuleError", "Zero", "is_linear", "lookup"]
