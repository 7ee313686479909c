"""Docstrings cannot drift: every shax_core docstring example runs, and every module docstring
that shows IR text shows it as a doctest (its printed output is what the code prints)."""

from __future__ import annotations

import doctest
import importlib
import pkgutil
import re

import pytest

import shax_core

MODULES = sorted(
    [shax_core.__name__]
    + [m.name for m in pkgutil.walk_packages(shax_core.__path__, shax_core.__name__ + ".")]
)
IR_TEXT = re.compile(r"def \w+\(.*\)\s*=\s*\n?\s*let", re.S)
OPTIONS = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE


def doctests(name: str) -> list[doctest.DocTest]:
    module = importlib.import_module(name)
    return [t for t in doctest.DocTestFinder().find(module, name) if t.examples]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_run(name):
    runner = doctest.DocTestRunner(optionflags=OPTIONS)
    for test in doctests(name):
        runner.run(test)
    result = runner.summarize(verbose=False)
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples in {name} failed"


@pytest.mark.parametrize("name", MODULES)
def test_ir_in_a_module_docstring_is_a_doctest(name):
    doc = importlib.import_module(name).__doc__ or ""
    if IR_TEXT.search(doc):
        assert ">>> " in doc, f"{name}'s docstring shows IR text that no doctest checks"


def test_a_wrong_example_fails():
    wrong = doctest.DocTestParser().get_doctest(
        ">>> from shax_core import parse\n"
        ">>> print(parse('def f(a :: f32[]) = let x = sin a in [x]'))\n"
        "def f(a :: f32[]) =\n  let x = cos a\n  in [x]\n",
        {},
        "wrong",
        None,
        0,
    )
    runner = doctest.DocTestRunner(optionflags=OPTIONS)
    runner.run(wrong, out=lambda _: None)
    assert runner.summarize(verbose=False).failed == 1
