"""``shax demo``, examples/seed_demo.py and ``stages()`` show the same pipeline.

The stages a user reads (rewritten, linearized, linear, transposed, zipped) are the programs
the VJP is built from, whichever way they are printed: ``shax demo`` locally, the SDK example
against a real server (whose stages use canonical names), or ``sx.stages``.
"""

from __future__ import annotations

import importlib.util

import pytest
from shax_client import Client

import shax_core as sx
from shax_core.cli import main
from shax_core.demo import REWRITES_HEADING, SEED_A, SEED_B, medium
from shax_core.passes import canonical_names
from tests.conftest import ROOT

HEADINGS = {
    "rewritten": (REWRITES_HEADING, 0),
    "linearized": ("Linearized definition(s):", 0),
    "linear": ("Linearized definition(s):", 1),
    "transposed": ("Transposed definition(s):", 0),
    "vjp": ("Zipped primal and transpose:", 0),
}


def blocks_after(printed: list[str], heading: str, k: int) -> str:
    return printed[printed.index(heading) + 1 + k]


def shape_of_program(text: str) -> sx.Program:
    """The program with names fixed by position (the server prints canonical names)."""
    return canonical_names(sx.parse(text)).replace(name="p")


def test_shax_demo_prints_the_pipelines_stages(capsys):
    assert main(["demo"]) == 0
    printed = capsys.readouterr().out
    stages = sx.stages(medium, SEED_A, SEED_B)
    assert REWRITES_HEADING in printed
    for name in HEADINGS:
        assert str(stages[name]) in printed, name
    # the seed's numbers are there too: f(x) = [34.731194 67.46239]
    assert "34.731194" in printed and "67.46239" in printed


def _seed_demo_module():
    spec = importlib.util.spec_from_file_location("seed_demo", ROOT / "examples" / "seed_demo.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def example_output(server_url):
    printed: list[str] = []
    with Client(server_url) as client:
        _seed_demo_module().run(client, out=lambda block: printed.append(str(block)))
    return printed


def test_seed_demo_example_prints_the_same_stages(example_output):
    local: list[str] = []
    from shax_core.demo import run

    run(out=lambda block: local.append(str(block)))
    stages = sx.stages(medium, SEED_A, SEED_B)
    for name, (heading, k) in HEADINGS.items():
        remote = shape_of_program(blocks_after(example_output, heading, k))
        assert remote == shape_of_program(str(stages[name])), name
        assert remote == shape_of_program(blocks_after(local, heading, k)), name
