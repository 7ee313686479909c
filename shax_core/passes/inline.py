"""Inlining: replay a program's equations into a builder, on the given argument values."""

from __future__ import annotations

from shax_core.core import inline

__all__ = ["inline"]
