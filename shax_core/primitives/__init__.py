"""The registry: every primitive declared once, grouped by family.

Importing this package declares them all; ``lookup(name)`` finds one. Passes, the parser,
printer, inference, evaluator, linearizer and transposer read everything they need from here.
"""

from shax_core.primitives import control, elementwise, linalg, structural  # noqa: F401
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
