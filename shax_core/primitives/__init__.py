"""The primitives: every one declared once, grouped by family.

Importing this package declares them all (``shax_core`` imports it first). What a primitive
is, the parameter kinds, the trait table and ``lookup`` live in ``shax_core.registry``, below
the bind layer; the rule constructors (``defjvp``, ``deflinear``, ...) in ``base``.

A new primitive: one block in a family module (or a new family module imported here) calling
``define(...)`` with its traits from ``shax_core.registry.TRAITS``, then a rule constructor,
and a case in tests/test_registry.py.
"""

from shax_core.primitives import (  # noqa: F401  (declarations)  # noqa: F401, I001
    control,
    decompositions,
    elementwise,
    indexing,
    linalg,
    numeric,
    structural,
)
from shax_core.registry import (
    REGISTRY,
    TRAITS,
    Linear,
    Primitive,
    RuleError,
    Zero,
    is_linear,
    lookup,
)

__all__ = [
    "REGISTRY",
    "TRAITS",
    "Linear",
    "Primitive",
    "RuleError",
    "Zero",
    "is_linear",
    "lookup",
]
