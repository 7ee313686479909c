"""The IR's values (Type, Var, Eqn) behave as immutable values: equal by content, hashable,
and the same after pickling, also in another process (whose str hashes are salted
differently: a Type caches its hash, which must not travel with it)."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys

import pytest

from shax_core.ir import Eqn, Type, Var


def test_values_compare_and_hash_by_content():
    t = Type("f32", [2, 3])
    assert t == Type("f32", (2, 3)) and hash(t) == hash(Type("f32", (2, 3)))
    assert t != Type("f64", (2, 3)) and t != Type("f32", (3, 2)) and t != ("f32", (2, 3))
    a, b = Var("a", t), Var("a", Type("f32", (2, 3)))
    assert a == b and hash(a) == hash(b) and a != Var("a", Type("f32", ()))
    e = Eqn(Var("y", t), "sin", (), (a,))
    assert e == Eqn(Var("y", t), "sin", (), (b,)) and e.extra_outs == () and e.outs == (e.out,)
    with pytest.raises(AttributeError):
        a.name = "b"


def test_a_pickled_type_keys_a_dict_in_another_process():
    table = {Type("f32", (2,)): "found", Var("x", Type("i32", ())): "var"}
    data = pickle.dumps(table)
    code = (
        "import pickle, sys; from shax_core.ir import Type, Var;"
        "d = pickle.loads(sys.stdin.buffer.read());"
        "print(d[Type('f32', (2,))], d[Var('x', Type('i32', ()))])"
    )
    for seed in ("1", "2"):
        out = subprocess.run(
            [sys.executable, "-c", code],
            input=data,
            capture_output=True,
            env={**os.environ, "PYTHONHASHSEED": seed},
            check=True,
            timeout=60,
        )
        assert out.stdout.decode().split() == ["found", "var"]
