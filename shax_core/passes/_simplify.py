"""Algebraic simplification and constant folding, driven by rules declared in the registry.

Each primitive may declare ``simplify(eqn, known)`` returning an existing variable that
equals the equation's result, a cheaper replacement equation, or None. ``known`` answers
"is this variable a constant, and which one" and "which equation produced it". Constant
operands are folded when the result is small. No primitive is named here.

The walk reads the program's ``Lean`` columns (variable ids) and builds new ones; a rule is
handed the public ``Eqn`` of its equation only when it is asked, with ``Var`` operands that
carry their id. A rule that can only fire on a splat operand (``needs_splat_operand``, e.g.
``x * 1``) or on an operand of its own primitive (``needs_same_primitive_operand``, e.g.
``-(-x)``) says so, and is not asked otherwise: most equations are kept without building
anything but their row.

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

from itertools import islice

import numpy as np

from shax_core.ir import (
    Eqn,
    Lean,
    Program,
    Type,
    Var,
    canonical_float,
    exact_key,
    from_lean,
    has_subprograms,
    lean_of,
)
from shax_core.passes._cse import WIDTH, Keys, key_table
from shax_core.passes._dce import dce_lean
from shax_core.passes.rename import Rows, map_subprograms
from shax_core.registry import SUBPROGRAM_KINDS, Primitive, derived, lookup

FOLD_LIMIT = 64  # fold constant expressions whose result has at most this many elements


class _Operand(Var):
    """A variable as a rule sees it: a ``Var`` that also knows its id in the walk's columns
    (so what a rule returns maps back to columns without a search)."""

    __slots__ = ("id",)


_set_id = _Operand.__dict__["id"].__set__


class Known:
    """What the simplifier knows about variables defined so far, by variable id; rules ask
    it about the ``Var`` operands of their equation."""

    def __init__(self, walk: _Walk):
        self.walk = walk
        # variable id -> the index of its equation (None: a parameter, or not bound yet)
        self.producer: list[int | None] = [None] * len(walk.types)
        self.value: dict[int, np.ndarray] = {}  # small constants, by variable id
        # the ids that may be splats: constants and results of "preserves_splat" primitives
        # (every other variable is not one, so ``scalar`` answers None without looking further)
        self.splat_candidates: set[int] = set()

    def eqn(self, v: Var) -> Eqn | None:
        row = self.producer[v.id]
        return None if row is None else self.walk.eqn(row)

    def array(self, v: Var) -> np.ndarray | None:
        return self.value.get(v.id)

    def scalar(self, v: Var) -> float | None:
        """The value of a constant whose elements are all equal (a splat), else None."""
        return self.scalar_of(v.id)

    def scalar_of(self, v: int) -> float | None:
        if v not in self.splat_candidates:
            return None
        a = self.value.get(v)
        if a is not None:
            flat = a.ravel()
            if flat.size and (flat == flat[0]).all():
                return flat[0].item()
            return None
        # law of "preserves_splat": f(splat c) is a splat of c (pad is not: it adds its value)
        row = self.producer[v]
        rows = self.walk.rows
        if row is not None and "preserves_splat" in lookup(rows.prim[row]).traits:
            return self.scalar_of(rows.ins[row][0])
        return None

    def record(self, row: int, out: int, prim: str, value: np.ndarray | None = None) -> None:
        """Equation ``row`` of the simplified program binds ``out`` (a constant's value too)."""
        self.producer[out] = row
        if value is not None:
            self.value[out] = value
            self.splat_candidates.add(out)
        elif "preserves_splat" in lookup(prim).traits:
            self.splat_candidates.add(out)


def _constant_params(out_type: Type, array: np.ndarray) -> tuple:
    """The parameters of ``fromList`` for the constant ``array`` of type ``out_type``."""
    if out_type.is_float:
        data = tuple(canonical_float(a) for a in array.ravel())
    elif out_type.is_int:
        data = tuple(int(a) for a in array.ravel())
    else:
        data = tuple(bool(a) for a in array.ravel())
    return (tuple(array.shape), data, out_type.dtype)


def simplify(program: Program) -> Program:
    return from_lean(dce_lean(simplified_lean(lean_of(program))))


def simplified_lean(lean: Lean, keys: Keys | None = None) -> Lean:
    """The simplifier's walk over ``lean``, before the DCE that ends ``simplify``; ``keys``
    gets the CSE keys of the equations it takes as they are (see ``_Walk.kept_prefix``)."""

    def bound():
        names = lean.names
        yield from (names[v] for v in lean.params)
        for i in range(len(lean)):
            yield from (names[v] for v in lean.eqn_outs(i))

    walk = _Walk(lean.types, lean.names, bound, copy_columns=True, keys=keys)
    rep = list(range(len(lean.types)))
    walk.forward(lean, rep, 0, identity=True)
    outs = tuple([rep[v] for v in lean.outs])
    return walk.rows.lean(lean.name, walk.types, walk.names, lean.params, outs)


def simplify_appended(
    name: str, params: tuple, first: Program, first_outs, second: Program, args
) -> Program:
    """``simplify`` of the program running ``first``'s equations, then ``second``'s with
    ``second.params`` bound to ``args`` (variables of the first part), with the outputs
    ``first_outs`` then ``second.outs``; its parameters are ``params``. The same program as
    building that program and simplifying it, without rewriting ``second``'s equations
    twice. The names ``first`` binds must differ from those ``second``'s equations bind."""
    lean1, lean2 = lean_of(first), lean_of(second)
    # columns: first's, then second's (ids offset), then the parameters first does not bind
    types, names = lean1.types + lean2.types, lean1.names + lean2.names
    ids = {lean1.names[v]: v for v in lean1.params}
    for i in range(len(lean1)):
        ids.update((lean1.names[v], v) for v in lean1.eqn_outs(i))
    for p in params:
        if p.name not in ids:
            ids[p.name] = len(types)
            types.append(p.type)
            names.append(p.name)
    lean = appended_lean(
        name,
        types,
        names,
        tuple(ids[p.name] for p in params),
        lean1,
        tuple(ids[v.name] for v in first_outs),
        lean2,
        len(lean1.types),
        tuple(ids[a.name] for a in args),
    )
    return from_lean(dce_lean(lean))


def appended_lean(
    name: str,
    types: list,
    names: list,
    params: tuple,
    first: Lean,
    first_outs: tuple,
    second: Lean,
    offset: int,
    args: tuple,
    keys: Keys | None = None,
) -> Lean:
    """``simplify_appended`` on columns: ``types``/``names`` (the caller's own lists; the
    walk may extend them) hold ``first``'s variables under their ids and ``second``'s at
    ``offset`` plus theirs (0 when ``first``'s columns extend ``second``'s or the other way
    round); ``params``, ``first_outs`` and ``args`` are ids in them. The walk's result,
    before the DCE that ends ``simplify`` (``keys``: as for ``simplified_lean``)."""

    def bound():
        yield from (names[v] for v in params)
        yield from (names[v] for v in first.params)
        for i in range(len(first)):
            yield from (names[v] for v in first.eqn_outs(i))
        for i in range(len(second)):
            yield from (names[v + offset] for v in second.eqn_outs(i))

    walk = _Walk(types, names, bound, copy_columns=False, keys=keys)
    rep = list(range(len(types)))
    walk.forward(first, rep, 0, identity=True)
    outs = [rep[v] for v in first_outs]
    # second's ids: offset, its parameters bound to the (resolved) arguments
    rep2 = list(range(offset, offset + len(second.types)))
    for p, a in zip(second.params, args, strict=True):
        rep2[p] = rep[a]
    walk.forward(second, rep2, offset)
    outs.extend(rep2[v] for v in second.outs)
    return walk.rows.lean(name, walk.types, walk.names, params, tuple(outs))


class _Walk:
    """The forward walk of ``simplify``: ``rows`` is the simplified body so far, over the
    variable columns ``types``/``names`` (extended, copied first if ``copy_columns``, when
    folding adds a variable). ``bound()`` gives the name of every variable the whole program
    binds (fresh names avoid them)."""

    def __init__(self, types: list, names: list, bound, copy_columns: bool, keys=None):
        self.types, self.names = types, names
        self.copy_columns = copy_columns
        self.bound = bound
        self.rows = Rows()
        self.keys = keys  # CSE keys of the kept prefix (see kept_prefix), if wanted
        self.known = Known(self)
        self.operands: dict[int, _Operand] = {}
        self.taken: set[str] = set()
        self.counter: list = []  # the names in use are collected when the first one is needed
        self.facts: dict[str, tuple] = {}  # by primitive name: see ``_facts``

    def operand(self, v: int) -> _Operand:
        op = self.operands.get(v)
        if op is None:
            op = self.operands[v] = _Operand(self.names[v], self.types[v])
            _set_id(op, v)
        return op

    def eqn(self, row: int) -> Eqn:
        """Equation ``row`` of the simplified body, as rules read it."""
        rows, operand = self.rows, self.operand
        extra = rows.extra.get(row)
        return Eqn(
            operand(rows.out[row]),
            rows.prim[row],
            rows.params[row],
            tuple([operand(v) for v in rows.ins[row]]),
            tuple([operand(v) for v in extra]) if extra else (),
        )

    def new_var(self, name: str, type_: Type) -> int:
        if self.copy_columns:
            self.types, self.names = list(self.types), list(self.names)
            self.copy_columns = False
        self.types.append(type_)
        self.names.append(name)
        self.known.producer.append(None)
        return len(self.types) - 1

    def fresh_name(self) -> str:
        taken, counter = self.taken, self.counter
        if not counter:
            taken.update(self.bound())
            counter.append(iter(range(len(taken) + 1, 10**12)))
        name = next(f"k{i}" for i in counter[0] if f"k{i}" not in taken)
        taken.add(name)
        return name

    def forward(self, src: Lean, rep: list, offset: int, identity: bool = False) -> None:
        """Simplify ``src``'s equations onto ``rows``: ``rep[v]`` is the id (in the walk's
        columns) of the variable equal to ``src``'s variable ``v``, and ``src``'s equations
        bind their variables at ``offset``; a replaced result updates ``rep``.

        With ``identity`` (``offset`` 0, ``rep[v] == v``) on an empty walk, the equations up
        to the first one a rule or folding may change are taken as they are (``kept_prefix``)."""
        start = 0
        if identity and not offset and not self.rows.prim:
            start = self.kept_prefix(src)
        known, rows, facts = self.known, self.rows, self.facts
        operand, record = self.operand, known.record
        producer, candidates = known.producer, known.splat_candidates
        row_prim, row_extra = rows.prim, rows.extra
        add_prim, add_params = row_prim.append, rows.params.append
        add_ins, add_out = rows.ins.append, rows.out.append
        # extra results by (source) result id: the loop needs no equation index
        src_extra = {src.eqn_out[i]: e for i, e in src.eqn_extra.items()}
        n_rows = len(rows)
        types = self.types
        columns = (src.eqn_prim, src.eqn_params, src.eqn_ins, src.eqn_out)
        if start:
            columns = [islice(c, start, None) for c in columns]
        for prim, params, ins, source_out in zip(*columns):
            n_ins = len(ins)
            if n_ins == 2:
                ins = (rep[ins[0]], rep[ins[1]])
            elif n_ins == 1:
                ins = (rep[ins[0]],)
            elif n_ins:
                ins = tuple([rep[v] for v in ins])
            out = source_out + offset
            extra = src_extra.get(source_out) if src_extra else None
            if extra and offset:
                extra = tuple([v + offset for v in extra])
            fact = facts.get(prim)
            if fact is None:
                fact = facts[prim] = _facts(prim)
            if fact[0] and (not candidates or candidates.isdisjoint(ins)):
                # no rule can fire, nothing to fold, nothing to record but the producer
                producer[out] = n_rows
                if extra:
                    row_extra[n_rows] = extra
                add_prim(prim)
                add_params(params)
                add_ins(ins)
                add_out(out)
                n_rows += 1
                continue
            _, prim_, rule, elementwise, constant, preserves, needs, nests = fact
            if params and nests and has_subprograms(params):  # simplify inside bodies; no folding
                params = map_subprograms(params, simplify)
                record(n_rows, out, prim)
                if extra:
                    row_extra[n_rows] = extra
                add_prim(prim)
                add_params(params)
                add_ins(ins)
                add_out(out)
                n_rows += 1
                continue
            if rule is not None and (
                needs is None
                or (needs is _SPLAT and not candidates.isdisjoint(ins))
                or (needs is _SAME and _made_by(prim, ins, producer, row_prim))
            ):
                # rules may replace an equation several times (reshape of reshape of reshape)
                eqn = Eqn(
                    operand(out),
                    prim,
                    params,
                    tuple([operand(v) for v in ins]),
                    tuple([operand(v) for v in extra]) if extra else (),
                )
                result = rule(eqn, known)
                if result is not None and result is not eqn:
                    if isinstance(result, Var):
                        if result.type == types[out]:
                            rep[source_out] = result.id
                            continue
                    else:
                        eqn, result = _replace(eqn, result, known)
                        if isinstance(result, Var) and result.type == eqn.out.type:
                            rep[source_out] = result.id
                            continue
                        prim = eqn.prim
                        _, prim_, rule, elementwise, constant, preserves, needs, nests = _facts(
                            prim
                        )
                        params, ins = eqn.params, tuple([v.id for v in eqn.ins])
                        out = eqn.out.id
                        extra = tuple([v.id for v in eqn.extra_outs]) or None
            if constant or (candidates and ins and ins[0] in candidates):  # (values too)
                folded = self._fold(prim, prim_, elementwise, constant, params, ins, out, extra)
                if folded is not None:
                    n_rows, types = folded, self.types
                    continue
            producer[out] = n_rows  # = record(...), inlined: it runs for nearly every equation
            if preserves:
                candidates.add(out)
            if extra:
                row_extra[n_rows] = extra
            add_prim(prim)
            add_params(params)
            add_ins(ins)
            add_out(out)
            n_rows += 1

    def kept_prefix(self, src: Lean) -> int:
        """Take ``src``'s equations as the walk's first rows while no rule can fire on them
        and there is nothing to fold (recording their producers): the number taken. With
        ``keys``, their CSE keys too, up to the first equal pair."""
        known, facts, keys = self.known, self.facts, self.keys
        producer, candidates = known.producer, known.splat_candidates
        src_prim = src.eqn_prim
        n = len(src_prim)
        keyed = keys is not None
        tables = keys.tables if keyed else None
        for i, (prim, params, ins, out) in enumerate(
            zip(src_prim, src.eqn_params, src.eqn_ins, src.eqn_out)
        ):
            fact = facts.get(prim)
            if fact is None:
                fact = facts[prim] = _facts(prim)
            if fact[0]:
                if candidates and not candidates.isdisjoint(ins):
                    n = i
                    break
            else:
                _, _, rule, _, constant, preserves, needs, nests = fact
                if (
                    constant
                    or (params and nests and has_subprograms(params))
                    or (candidates and ins and ins[0] in candidates)
                    or (
                        rule is not None
                        and (
                            needs is None
                            or (needs is _SPLAT and not candidates.isdisjoint(ins))
                            or (needs is _SAME and _made_by(prim, ins, producer, src_prim))
                        )
                    )
                ):
                    n = i
                    break
                if preserves:
                    candidates.add(out)
            if keyed:  # the key of cse_lean (no operand is substituted yet)
                table = tables.get(prim)
                if table is None:
                    table = tables[prim] = key_table(prim)
                swap, _, by_ins, by_key = table
                n_ins = len(ins)
                if n_ins == 2 and not params:
                    a, b = ins
                    key, seen = (b * WIDTH + a if swap and b < a else a * WIDTH + b), by_ins
                elif n_ins == 1 and not params:
                    key, seen = -1 - ins[0], by_ins
                else:
                    key, seen = (exact_key(params), *(sorted(ins) if swap else ins)), by_key
                if seen.setdefault(key, i) != i:
                    keyed = False
                    keys.count = i
            producer[out] = i
        if keyed:
            keys.count = n
        rows = self.rows
        rows.prim.extend(src_prim[:n])
        rows.params.extend(src.eqn_params[:n])
        rows.ins.extend(src.eqn_ins[:n])
        rows.out.extend(src.eqn_out[:n])
        rows.extra.update((i, e) for i, e in src.eqn_extra.items() if i < n)
        return n

    def _fold(self, prim, prim_, elementwise, constant, params, ins, out, extra) -> int:
        """Add equation ``out = prim[params] ins`` to the rows, folded if its operands are
        constants (or broadcast scalars: then a broadcast of the folded scalar): the number
        of rows after it; None (nothing added) when there is nothing to fold."""
        known, rows = self.known, self.rows
        values, record = known.value, known.record
        types = self.types
        ins_values = [values.get(v) for v in ins] if ins and ins[0] in values else None
        out_type = types[out]
        rewritten = False
        if elementwise and ins and out_type.size > FOLD_LIMIT:
            scalars = []
            for v in ins:  # (the first operand that is no splat ends the search)
                s = known.scalar_of(v)
                if s is None:
                    break
                scalars.append(s)
            else:
                # an elementwise op of broadcast scalars is a broadcast of the scalar result
                arrays = [np.asarray(s, dtype=types[v].np_dtype) for s, v in zip(scalars, ins)]
                value = prim_.impl(*arrays, **prim_.kwargs(params))
                value = np.asarray(value, out_type.np_dtype).reshape(())
                scalar_type = out_type.with_shape(())
                scalar = self.new_var(self.fresh_name(), scalar_type)
                scalar_params = _constant_params(scalar_type, value)
                record(len(rows), scalar, "fromList", np.asarray(scalar_params[1][0]))
                rows.add("fromList", scalar_params, (), scalar)
                prim, params, ins = "broadcast", ((), out_type.shape), (scalar,)
                ins_values, rewritten = None, True
        if constant:
            record(len(rows), out, prim, prim_.impl(**prim_.kwargs(params)))
        elif (
            ins_values is not None
            and all(a is not None for a in ins_values)
            and out_type.size <= FOLD_LIMIT
        ):
            folded = np.asarray(prim_.impl(*ins_values, **prim_.kwargs(params)))
            folded = folded.astype(out_type.np_dtype, copy=False)
            prim, params, ins, extra = "fromList", _constant_params(out_type, folded), (), None
            record(len(rows), out, prim, folded)
        elif not rewritten:  # unchanged: the caller adds it
            return None
        else:
            record(len(rows), out, prim)
        rows.add(prim, params, ins, out, extra)
        return len(rows)


@derived
def _facts(prim: Primitive) -> tuple:
    """By name: ``(plain, primitive, its rule, elementwise, constant, preserves_splat, what
    the rule needs to fire, may have sub-programs)``; plain: an equation without a possible splat
    operand is kept as it is (no rule, or one that needs a splat operand; not a constant,
    not a splat; no sub-programs)."""
    traits = prim.traits
    rule = prim.simplify
    needs = (
        _SPLAT
        if getattr(rule, "needs_splat_operand", False)
        else _SAME
        if getattr(rule, "needs_same_primitive_operand", False)
        else None
    )
    nests = any(p.kind in SUBPROGRAM_KINDS for p in prim.params)
    constant, preserves = "constant" in traits, "preserves_splat" in traits
    plain = (rule is None or needs is _SPLAT) and not (constant or preserves or nests)
    return (
        plain,
        prim,
        rule,
        "elementwise" in traits,
        constant,
        preserves,
        needs,
        nests,
    )


def _made_by(prim: str, ins: tuple, producer: list, row_prim: list) -> bool:
    """Whether an operand is the result of an equation of ``prim``."""
    for v in ins:
        row = producer[v]
        if row is not None and row_prim[row] == prim:
            return True
    return False


# what a rule needs to be able to fire (its declared flag): an operand that may be a splat,
# an operand made by the same primitive
_SPLAT, _SAME = "splat operand", "same primitive operand"


def _replace(eqn: Eqn, result: Eqn, known: Known):
    """Apply the rules of the replacement equations in turn (at most 8 replacements in all):
    ``(the last equation, the last rule result)``."""
    for _ in range(7):
        eqn = result
        prim = lookup(eqn.prim)
        result = prim.simplify(eqn, known) if prim.simplify else None
        if result is None or result is eqn or isinstance(result, Var):
            return eqn, result
    return result, None
