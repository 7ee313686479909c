"""The JSON graph form of a Program, the canonical form, and the content hash.

A graph is the same Program as plain data (the wire schema for programs):

>>> graph = {
...     "format_version": 1,
...     "name": "f",
...     "inputs": [{"name": "x", "dtype": "f32", "shape": [2]}],
...     "equations": [
...         {"out": "y", "primitive": "broadcast", "params": {"dims": [1], "shape": [3, 2]},
...          "inputs": ["x"]},
...         {"out": "c", "primitive": "fromList", "params": {"shape": [], "data": [2.0]},
...          "inputs": [], "dtype": "f32"},
...         {"out": "cs", "primitive": "broadcast", "params": {"dims": [], "shape": [3, 2]},
...          "inputs": ["c"]},
...         {"out": "z", "primitive": "mul", "params": {}, "inputs": ["y", "cs"]}],
...     "outputs": ["z"]}
>>> print(infer(from_graph(graph)))
def f(x :: f32[2]) =
  let y :: f32[3, 2] = broadcast [1] [3,2] x
      c :: f32[] = fromList [] [2.0]
      cs :: f32[3, 2] = broadcast [] [3,2] c
      z :: f32[3, 2] = mul y cs
  in [z]
>>> to_graph(from_graph(graph)) == graph
True

``params`` is keyed by the parameter names of the primitive in the registry
(``REGISTRY[p].params``). An equation may carry its binding's ``dtype`` and ``shape``
(inference checks them); for ``fromList`` the ``dtype`` is the constant's dtype (f32 when absent).
Variables must be defined before use, so a graph cannot contain a cycle. Non-finite scalars and
literals use the wire spelling (``"NaN"``, ``"Infinity"``, ``"-Infinity"``, see ``wire``).

The canonical form renames parameters ``a0, a1, ...`` and equation outputs ``v0, v1, ...`` in
order of definition and fixes the program name, so two clients tracing the same function with
different names produce the same text and the same ``content_hash``.
"""

from __future__ import annotations

import hashlib
from contextvars import ContextVar
from typing import Any

from shax_core._infer import infer
from shax_core.ir import DTYPES, MAX_NESTING, Eqn, Program, ShaxError, Type, Var
from shax_core.passes.rename import canonical_names
from shax_core.registry import REGISTRY, SUBPROGRAM_JSON, ParamError, json_int, json_list
from shax_core.text import print_program

FORMAT_VERSION = 1
CANONICAL_NAME = "program"
CANONICAL_BODY = "body"


class GraphError(ParamError):
    """A JSON graph is malformed; the message names the field or the equation."""


# ---------------------------------------------------------------------------------------------
# Program -> graph


def to_graph(program: Program) -> dict:
    """The JSON graph of a program (types included where the program has them)."""
    equations = []
    for e in program.eqns:
        prim = REGISTRY[e.prim]
        params = {
            p.name: p.spec.to_json(v)
            for p, v in zip(prim.params, e.params, strict=True)
            if not p.spec.hidden
        }
        eq: dict[str, Any] = {
            "out": e.out.name,
            "primitive": e.prim,
            "params": params,
            "inputs": [v.name for v in e.ins],
        }
        if e.extra_outs:  # a multi-result primitive: every bound name, and their types
            del eq["out"]
            eq["outs"] = [v.name for v in e.outs]
            if all(v.type is not None for v in e.outs):
                eq["types"] = [{"dtype": v.type.dtype, "shape": list(v.type.shape)} for v in e.outs]
        elif e.out.type is not None:
            eq["dtype"] = e.out.type.dtype
            eq["shape"] = list(e.out.type.shape)
        else:  # a hidden parameter is the binding's dtype (a constant's)
            hidden = [v for p, v in zip(prim.params, e.params, strict=True) if p.spec.hidden]
            if hidden:
                eq["dtype"] = hidden[0]
        equations.append(eq)
    return {
        "format_version": FORMAT_VERSION,
        "name": program.name,
        "inputs": [
            {"name": p.name, "dtype": p.type.dtype, "shape": list(p.type.shape)}
            for p in program.params
        ],
        "equations": equations,
        "outputs": [v.name for v in program.outs],
    }


# ---------------------------------------------------------------------------------------------
# graph -> Program


def _known(v: Any, table: dict) -> bool:
    # a JSON list or object is unhashable: ``v in table`` would raise TypeError
    return isinstance(v, str) and v in table


def _name(where: str, v: Any) -> str:
    if not isinstance(v, str) or not v:
        raise GraphError(where, f"expected a non-empty string, got {v!r}")
    return v


def _type(where: str, obj: dict) -> Type:
    dtype = obj.get("dtype")
    if not _known(dtype, DTYPES):
        raise GraphError(f"{where}.dtype", f"expected one of {', '.join(DTYPES)}, got {dtype!r}")
    shape = json_list(f"{where}.shape", obj.get("shape"))
    if len(shape) > 32:
        raise GraphError(f"{where}.shape", "more than 32 dimensions")
    dims = tuple(json_int(f"{where}.shape[{i}]", d) for i, d in enumerate(shape))
    if any(d < 0 for d in dims):
        raise GraphError(f"{where}.shape", f"negative dimension in {list(dims)}")
    return Type(dtype, dims)


_DEPTH: ContextVar[int] = ContextVar("shax_graph_depth", default=0)  # sub-program nesting


def _subgraph(where: str, v: Any) -> Program:
    """A sub-program parameter from its nested graph (the registry's ``program`` kind)."""
    depth = _DEPTH.get()
    if depth >= MAX_NESTING:
        raise ParamError(where, f"sub-programs nested more than {MAX_NESTING} deep")
    token = _DEPTH.set(depth + 1)
    try:
        return from_graph(v)
    except GraphError as e:
        raise ParamError(f"{where}.{e.where}", e.message) from None
    finally:
        _DEPTH.reset(token)


SUBPROGRAM_JSON.update(to_json=lambda program: to_graph(program), from_json=_subgraph)


def _equation(i: int, obj: Any, env: dict[str, Var]) -> Eqn:
    where = f"equations[{i}]"
    if not isinstance(obj, dict):
        raise GraphError(where, "expected an object")
    prim_name = obj.get("primitive")
    if "outs" in obj and "out" not in obj and _known(prim_name, REGISTRY):
        return _multi_equation(i, obj, env)
    out = _name(f"{where}.out", obj.get("out"))
    where = f"equations[{i}] ({out})"
    if not _known(prim_name, REGISTRY):
        raise GraphError(f"{where}.primitive", f"unknown primitive {prim_name!r}")
    prim = REGISTRY[prim_name]
    names = json_list(f"{where}.inputs", obj.get("inputs", []))
    if prim.arity is not None and len(names) != prim.arity:
        raise GraphError(
            f"{where}.inputs", f"{prim_name} takes {prim.arity} input(s), got {len(names)}"
        )
    ins = []
    for k, n in enumerate(names):
        if not isinstance(n, str) or n not in env:
            raise GraphError(f"{where}.inputs[{k}]", f"{n!r} is not defined before this equation")
        ins.append(env[n])
    if out in env:
        raise GraphError(f"{where}.out", f"{out} is bound twice")
    params = obj.get("params", {})
    if not isinstance(params, dict):
        raise GraphError(f"{where}.params", "expected an object")
    spec = {p.name: p.kind for p in prim.params if not p.spec.hidden}
    unknown = set(params) - set(spec)
    if unknown:
        raise GraphError(
            f"{where}.params",
            f"unknown parameter(s) {sorted(unknown)} for {prim_name} "
            f"(expects {list(spec) or 'none'})",
        )
    annotation = None
    if "shape" in obj:
        annotation = _type(where, obj)
    elif "dtype" in obj and not _known(obj["dtype"], DTYPES):
        raise GraphError(
            f"{where}.dtype", f"expected one of {', '.join(DTYPES)}, got {obj['dtype']!r}"
        )
    values = []
    for p in prim.params:
        if p.spec.hidden:
            values.append(None)
            continue
        if p.name not in params:
            raise GraphError(
                f"{where}.params", f"{prim_name} needs parameter {p.name!r} ({p.kind})"
            )
        values.append(p.spec.from_json(f"{where}.params.{p.name}", params[p.name]))
    dtype = annotation.dtype if annotation is not None else obj.get("dtype", "f32")
    try:
        values = prim.complete_params(values, dtype)
    except ShaxError as e:
        raise GraphError(f"{where}.params", str(e)) from None
    return Eqn(Var(out, annotation), prim_name, tuple(values), tuple(ins))


def _multi_equation(i: int, obj: dict, env: dict[str, Var]) -> Eqn:
    """An equation of a multi-result primitive: ``"outs": [names]``, optional ``"types"``."""
    where = f"equations[{i}]"
    names = json_list(f"{where}.outs", obj["outs"])
    if not names:
        raise GraphError(f"{where}.outs", "expected at least one name")
    outs = [_name(f"{where}.outs[{k}]", n) for k, n in enumerate(names)]
    where = f"equations[{i}] ({outs[0]})"
    prim = REGISTRY[obj["primitive"]]
    if not prim.multiple_results:
        raise GraphError(f"{where}.outs", f"{prim.name} has one result: name it in 'out'")
    types: list[Type | None] = [None] * len(outs)
    if "types" in obj:
        listed = json_list(f"{where}.types", obj["types"])
        if len(listed) != len(outs):
            raise GraphError(f"{where}.types", f"expected {len(outs)} types, got {len(listed)}")
        for k, t in enumerate(listed):
            if not isinstance(t, dict):
                raise GraphError(f"{where}.types[{k}]", "expected an object")
            types[k] = _type(f"{where}.types[{k}]", t)
    if len(set(outs)) != len(outs) or any(n in env for n in outs):
        raise GraphError(f"{where}.outs", "a name is bound twice")
    single = {k: v for k, v in obj.items() if k not in ("outs", "types", "dtype", "shape")}
    eqn = _equation(i, dict(single, out=outs[0]), env)
    vars_ = [Var(n, t) for n, t in zip(outs, types, strict=True)]
    return Eqn(vars_[0], eqn.prim, eqn.params, eqn.ins, tuple(vars_[1:]))


def from_graph(graph: Any) -> Program:
    """A Program from its JSON graph; raises GraphError naming the bad field or equation."""
    try:
        return _program(graph)
    except GraphError:
        raise
    except ParamError as e:  # from the shared field readers of the registry
        raise GraphError(e.where, e.message) from None


def _program(graph: Any) -> Program:
    if not isinstance(graph, dict):
        raise GraphError("graph", "expected an object")
    version = graph.get("format_version", FORMAT_VERSION)
    if version != FORMAT_VERSION:
        raise GraphError("format_version", f"unsupported version {version!r}; expected 1")
    name = graph.get("name", "f")
    if not isinstance(name, str) or not name.isidentifier():
        raise GraphError("name", f"expected an identifier, got {name!r}")
    env: dict[str, Var] = {}
    params = []
    for i, obj in enumerate(json_list("inputs", graph.get("inputs"))):
        if not isinstance(obj, dict):
            raise GraphError(f"inputs[{i}]", "expected an object")
        pname = _name(f"inputs[{i}].name", obj.get("name"))
        if pname in env:
            raise GraphError(f"inputs[{i}].name", f"{pname} is declared twice")
        v = Var(pname, _type(f"inputs[{i}]", obj))
        env[pname] = v
        params.append(v)
    eqns = []
    for i, obj in enumerate(json_list("equations", graph.get("equations"))):
        eqn = _equation(i, obj, env)
        for v in eqn.outs:
            env[v.name] = v
        eqns.append(eqn)
    outs = []
    for i, n in enumerate(json_list("outputs", graph.get("outputs"))):
        if not isinstance(n, str) or n not in env:
            raise GraphError(f"outputs[{i}]", f"{n!r} is not defined")
        outs.append(env[n])
    return Program(name, tuple(params), tuple(eqns), tuple(outs))


# ---------------------------------------------------------------------------------------------
# canonical form and hash


def canonicalize(program: Program) -> Program:
    """The typed program with names fixed by position: params a0.., equations v0..."""
    typed = program if program.checked else infer(program)
    return canonical_names(typed, "a", "v", CANONICAL_BODY).replace(name=CANONICAL_NAME)


def canonical_text(program: Program) -> str:
    """IR text of ``canonicalize(program)``: equal for programs that differ only in names."""
    return print_program(canonicalize(program))


def content_hash(program: Program, wrt: Any, pipeline_version: str) -> str:
    """SHA-256 hex over everything that changes the compiled result.

    ``wrt`` is the list of differentiated input indices; None means every float input, and hashes
    the same as that list spelled out.
    """
    canonical = canonicalize(program)
    if wrt is None:
        wrt = [i for i, p in enumerate(canonical.params) if p.type.is_float]
    h = hashlib.sha256()
    h.update(print_program(canonical).encode())
    h.update(b"\n-- wrt " + ",".join(str(int(i)) for i in wrt).encode())
    h.update(b"\n-- pipeline " + str(pipeline_version).encode())
    return h.hexdigest()
