"""Algebraic simplification and constant folding, driven by rules declared in the registry.

Each primitive may declare ``simplify(eqn, known)`` returning an existing variable that
equals the equation's result, a cheaper replacement equation, or None. ``known`` answers
"is this variable a constant, and which one" and "which equation produced it". Constant
operands are folded when the result is small. No primitive is named here.

>>> from shax_core import infer, parse
>>> p = infer(parse(
...     "def f(arg0 :: f32[2]) = let x0 = fromList [] [1.0]  x1 = broadcast [] [2] x0"
...     "  x2 = mul arg0 x1  x3 = negate x2  x4 = negate x3 in [x4]"
... ))
>>> print(simplify(p))
def f(arg0 :: f32[2]) =
  let
  in [arg0]

A constant splat is seen through primitives with the ``preserves_splat`` trait only: a pad of
ones is not ones (its border is the pad value), so ``x * pad(ones)`` stays a product:

>>> q = infer(parse(
...     "def f(a :: f32[100]) = let c = fromList [] [1.0]  ones = broadcast [] [99] c"
...     "  padded = pad [(1,0)] 0.0 ones  y = mul a padded in [y]"
... ))
>>> [e.prim for e in simplify(q).eqns]
['fromList', 'broadcast', 'pad', 'mul']
"""

from __future__ import annotations

import numpy as np

from shax_core.ir import Eqn, Program, Var, bound_vars, canonical_float
from shax_core.passes._dce import dce
from shax_core.passes.rename import substitute
from shax_core.registry import lookup

FOLD_LIMIT = 64  # fold constant expressions whose result has at most this many elements


class Known:
    """What the simplifier knows about variables defined so far."""

    def __init__(self):
        self.producer: dict[str, Eqn] = {}
        self.value: dict[str, np.ndarray] = {}  # small constants, by variable
        # the names that may be splats: constants and results of "preserves_splat" primitives
        # (every other name is not one, so ``scalar`` answers None without looking further)
        self.splat_candidates: set[str] = set()

    def eqn(self, v: Var) -> Eqn | None:
        return self.producer.get(v.name)

    def array(self, v: Var) -> np.ndarray | None:
        return self.value.get(v.name)

    def scalar(self, v: Var) -> float | None:
        """The value of a constant whose elements are all equal (a splat), else None."""
        if v.name not in self.splat_candidates:
            return None
        a = self.value.get(v.name)
        if a is not None:
            flat = a.ravel()
            if flat.size and (flat == flat[0]).all():
                return flat[0].item()
            return None
        # law of "preserves_splat": f(splat c) is a splat of c (pad is not: it adds its value)
        e = self.producer.get(v.name)
        if e is not None and "preserves_splat" in lookup(e.prim).traits:
            return self.scalar(e.ins[0])
        return None

    def record(self, eqn: Eqn, value: np.ndarray | None = None) -> None:
        """``eqn`` is in the simplified program (with its constant value, if it is one)."""
        name = eqn.out.name
        self.producer[name] = eqn
        if value is not None:
            self.value[name] = value
            self.splat_candidates.add(name)
        elif "preserves_splat" in lookup(eqn.prim).traits:
            self.splat_candidates.add(name)


def _constant_eqn(out: Var, array: np.ndarray) -> Eqn:
    if out.type.is_float:
        data = tuple(canonical_float(a) for a in array.ravel())
    elif out.type.is_int:
        data = tuple(int(a) for a in array.ravel())
    else:
        data = tuple(bool(a) for a in array.ravel())
    return Eqn(out, "fromList", (tuple(array.shape), data, out.type.dtype), ())


def _fold_splats(eqn: Eqn, prim, known: Known, fresh_name):
    """For ``op (broadcast c1) (broadcast c2)`` with scalar constants c1, c2 and a large
    result: ``(fromList [] [op c1 c2], broadcast [] shape that)``; else None."""
    if "elementwise" not in prim.traits or not eqn.ins or eqn.out.type.size <= FOLD_LIMIT:
        return None
    scalars = [known.scalar(v) for v in eqn.ins]
    if any(s is None for s in scalars):
        return None
    arrays = [np.asarray(s, dtype=v.type.np_dtype) for s, v in zip(scalars, eqn.ins)]
    value = np.asarray(prim.impl(*arrays, **prim.kwargs(eqn.params)), eqn.out.type.np_dtype)
    scalar = Var(fresh_name(), eqn.out.type.with_shape(()))
    scalar_eqn = _constant_eqn(scalar, value.reshape(()))
    return scalar_eqn, Eqn(eqn.out, "broadcast", ((), eqn.out.type.shape), (scalar,))


def simplify(program: Program) -> Program:
    walk = _Walk(lambda: bound_vars(program))
    walk.forward(program.eqns)
    return dce(substitute(program, walk.eqns, walk.subst))


def simplify_appended(
    name: str, params: tuple, first: Program, first_outs, second: Program, args
) -> Program:
    """``simplify`` of the program running ``first``'s equations, then ``second``'s with
    ``second.params`` bound to ``args`` (variables of the first part), with the outputs
    ``first_outs`` then ``second.outs``; its parameters are ``params``. The same program as
    building that program and simplifying it, without rewriting ``second``'s equations
    twice. The names ``first`` binds must differ from those ``second``'s equations bind."""

    def bound():
        yield from params
        yield from bound_vars(first)
        for e in second.eqns:
            yield from e.outs

    walk = _Walk(bound)
    walk.forward(first.eqns)
    subst = walk.subst
    outs = [subst.get(v.name, v) for v in first_outs]  # before second's parameter names
    # every argument resolved before any parameter is bound (second's parameter names may
    # be names of the first part)
    resolved = [subst.get(a.name, a) for a in args]
    subst.update(zip([p.name for p in second.params], resolved, strict=True))
    walk.forward(second.eqns)
    outs.extend(subst.get(v.name, v) for v in second.outs)
    return dce(Program(name, tuple(params), tuple(walk.eqns), tuple(outs)))


class _Walk:
    """The forward walk of ``simplify``: ``eqns`` is the simplified body so far and ``subst``
    maps each replaced name to the variable that equals it. ``bound()`` gives every variable
    the whole program binds (fresh names avoid them)."""

    def __init__(self, bound):
        self.bound = bound
        self.known = Known()
        self.subst: dict[str, Var] = {}
        self.eqns: list[Eqn] = []
        self.taken: set[str] = set()
        self.counter: list = []  # the names in use are collected when the first one is needed
        # by primitive name: (primitive, its rule, elementwise, constant, preserves_splat)
        self.facts: dict[str, tuple] = {}

    def fresh_name(self) -> str:
        taken, counter = self.taken, self.counter
        if not counter:
            taken.update(v.name for v in self.bound())
            counter.append(iter(range(len(taken) + 1, 10**12)))
        name = next(f"k{i}" for i in counter[0] if f"k{i}" not in taken)
        taken.add(name)
        return name

    def forward(self, body) -> None:
        known, subst, eqns, facts = self.known, self.subst, self.eqns, self.facts
        fresh_name = self.fresh_name
        values = known.value
        record = known.record
        producer, candidates = known.producer, known.splat_candidates
        for eqn in body:
            if subst:  # = rewrite_ins(eqn, subst), inlined: it runs for nearly every equation
                for v in eqn.ins:
                    if v.name in subst:
                        eqn = Eqn(
                            eqn.out,
                            eqn.prim,
                            eqn.params,
                            tuple([subst.get(v.name, v) for v in eqn.ins]),
                            eqn.extra_outs,
                        )
                        break
            fact = facts.get(eqn.prim)
            if fact is None:
                fact = facts[eqn.prim] = _facts(eqn.prim)
            prim, rule, elementwise, constant, preserves = fact
            if eqn.params and eqn.subprograms:  # simplify inside bodies; no folding of loops
                eqn = eqn.with_subprograms(simplify)
                record(eqn)
                eqns.append(eqn)
                continue
            if rule is not None:
                # rules may replace an equation several times (reshape of reshape of reshape)
                result = rule(eqn, known)
                if result is not None and result is not eqn:
                    if result.__class__ is Var:
                        if result.type == eqn.out.type:
                            subst[eqn.out.name] = result
                            continue
                    else:
                        eqn, result = _replace(eqn, result, known)
                        if result.__class__ is Var and result.type == eqn.out.type:
                            subst[eqn.out.name] = result
                            continue
                        prim, rule, elementwise, constant, preserves = _facts(eqn.prim)
            ins = eqn.ins
            ins_values = (
                [values.get(v.name) for v in ins] if ins and ins[0].name in values else None
            )
            if elementwise and ins and eqn.out.type.size > FOLD_LIMIT:
                splat = _fold_splats(eqn, prim, known, fresh_name)
                if splat is not None:
                    # an elementwise op of broadcast scalars is a broadcast of the scalar result
                    scalar_eqn, eqn = splat
                    record(scalar_eqn, np.asarray(scalar_eqn.params[1][0]))
                    eqns.append(scalar_eqn)
                    ins_values = None
                    preserves = None  # eqn is now a broadcast: record() looks it up
            if constant:
                record(eqn, prim.impl(**prim.kwargs(eqn.params)))
            elif (
                ins_values is not None
                and all(a is not None for a in ins_values)
                and eqn.out.type.size <= FOLD_LIMIT
            ):
                folded = np.asarray(prim.impl(*ins_values, **prim.kwargs(eqn.params)))
                folded = folded.astype(eqn.out.type.np_dtype, copy=False)
                eqn = _constant_eqn(eqn.out, folded)
                record(eqn, folded)
            elif preserves is None:
                record(eqn)
            else:  # = record(eqn), inlined: it runs for nearly every equation
                producer[eqn.out.name] = eqn
                if preserves:
                    candidates.add(eqn.out.name)
            eqns.append(eqn)


def _facts(name: str) -> tuple:
    prim = lookup(name)
    traits = prim.traits
    return (
        prim,
        prim.simplify,
        "elementwise" in traits,
        "constant" in traits,
        "preserves_splat" in traits,
    )


def _replace(eqn: Eqn, result: Eqn, known: Known):
    """Apply the rules of the replacement equations in turn (at most 8 replacements in all):
    ``(the last equation, the last rule result)``."""
    for _ in range(7):
        eqn = result
        prim = lookup(eqn.prim)
        result = prim.simplify(eqn, known) if prim.simplify else None
        if result is None or result is eqn or result.__class__ is Var:
            return eqn, result
    return result, None
