"""``shax_core.scipy``: the jax.scipy names shax supports (``special``, ``linalg``)."""

from shax_core.scipy import linalg, special  # noqa: F401
