"""The stage explorer's engine: every pipeline stage of a pasted program, its dataflow graph with
each value's part (primal, residual, linear), and the seed's numbers for typed-in inputs.

Everything here is a pure function of the request and the settings; ``explore`` runs in the
worker pool and applies the service's limits before anything runs (equation count, the size of
every value from its type, the peak memory of every plan it evaluates).

The parts of a stage, given which of its parameters are linear (tangents or cotangents) and which
are residuals:

- ``linear``: a value that depends on a linear parameter;
- ``residual``: any other value that a linear value uses, a residual parameter, or a residual
  output of the linearized primal (its outputs after the program's own);
- ``primal``: everything else.

>>> from shax_core import parse, infer
>>> p = infer(parse("def f(a :: f32[], t :: f32[]) = let c = cos a  y = mul c t in [y]"))
>>> parts(p, linear_params=1, residual_params=0, linear_first=False)
{'a': 'primal', 't': 'linear', 'c': 'residual', 'y': 'linear'}
"""

from __future__ import annotations

import hashlib
import re
from collections import OrderedDict
from dataclasses import dataclass
from functools import partial

import numpy as np
import orjson

import shax_core
from shax_core import ParseError, Program, ShaxError, ShaxTypeError, infer, parse
from shax_core.ir import dtype_name
from shax_core.passes import lower_reduce_sum, rewrite
from shax_core.primitives import REGISTRY
from shax_core.text import format_float, tokenize
from shax_core.wire import BinaryReader, encode_float
from shax_server.compilation import (
    check_peak,
    check_sizes,
    check_trips,
    count_equations,
    resolve_wrt,
)
from shax_server.problems import Problem, limit_exceeded, problem_for
from shax_server.service import decode_positional
from shax_server.settings import Settings

STAGE_TITLES = {
    "source": "Source (as parsed)",
    "typed": "After type inference",
    "rewritten": "After rewrites",
    "linearized": "Linearized primal: outputs, then residuals",
    "linear": "Linear map df(dx, residuals)",
    "transposed": "Transposed dft(ct, residuals)",
    "vjp": "Zipped primal and transpose (VJP)",
}
REWRITES = ("shax", "seed")
MAX_GRAPH_NODES = 4000  # a stage with more values is listed, not drawn


# ---------------------------------------------------------------------------------------------
# errors at their line and column


_TYPE_ERROR_EQN = re.compile(r"in `([A-Za-z_][A-Za-z0-9_']*) =")


def binding_position(text: str, name: str) -> tuple[int, int] | None:
    """(line, column) where ``name`` is bound (a parameter or a ``let`` binding) in ``text``.

    >>> binding_position("def f(a :: f32[]) =\\n  let y = sin a in [y]", "y")
    (2, 7)
    """
    tokens = tokenize(text)
    for tok, nxt in zip(tokens, tokens[1:]):
        if tok.kind == "name" and tok.text == name and nxt.text in ("=", "::"):
            return tok.line, tok.column
    return None


def located(exc: Exception, text: str) -> Problem:
    """The service's problem for ``exc``, with ``line``/``column`` also for a type error (at the
    binding of the equation its message names)."""
    problem = problem_for(exc)
    if isinstance(exc, ShaxTypeError):
        m = _TYPE_ERROR_EQN.search(str(exc))
        where = binding_position(text, m.group(1)) if m else None
        if where is not None:
            problem.extra.update(line=where[0], column=where[1])
    return problem


# ---------------------------------------------------------------------------------------------
# parts and graphs


def parts(
    program: Program,
    *,
    linear_params: int,
    residual_params: int,
    linear_first: bool = True,
    residual_outs: int = 0,
) -> dict[str, str]:
    """Each value's part (see the module docstring). The linear parameters are the first
    ``linear_params`` (``linear_first``) or the last ones; ``residual_params`` parameters right
    after the linear ones are residuals; the last ``residual_outs`` outputs are residuals."""
    names = [p.name for p in program.params]
    if linear_first:
        linear = set(names[:linear_params])
        residual = set(names[linear_params : linear_params + residual_params])
    else:
        linear = set(names[len(names) - linear_params :])
        residual = set()
    for e in program.eqns:
        if any(v.name in linear for v in e.ins):
            linear.update(v.name for v in e.outs)  # a loop binds several results
    for e in program.eqns:
        if e.out.name in linear:
            residual.update(v.name for v in e.ins if v.name not in linear)
    if residual_outs:
        residual.update(v.name for v in program.outs[len(program.outs) - residual_outs :])
    every = names + [v.name for e in program.eqns for v in e.outs]
    return {
        n: "linear" if n in linear else "residual" if n in residual else "primal" for n in every
    }


def stage_parts(name: str, program: Program, n_in: int, n_out: int, n_wrt: int) -> dict:
    """The parts of a pipeline stage, from where the stage puts its tangents and residuals."""
    n_params = len(program.params)
    if name == "linearized":
        return parts(
            program,
            linear_params=0,
            residual_params=0,
            residual_outs=len(program.outs) - n_out,
        )
    if name == "linear":
        return parts(program, linear_params=n_wrt, residual_params=n_params - n_wrt)
    if name == "transposed":
        return parts(program, linear_params=n_out, residual_params=n_params - n_out)
    if name == "vjp":
        return parts(program, linear_params=n_params - n_in, residual_params=0, linear_first=False)
    return parts(program, linear_params=0, residual_params=0)


def layout(program: Program, part: dict[str, str]) -> dict:
    """A layered drawing of the dataflow graph: nodes are parameters and equations, edges their
    operands. A node's layer is one more than its deepest operand's (parameters at 0, a constant
    just above its first use); within a layer, nodes are ordered by ``order_rows``.

    >>> from shax_core import parse, infer
    >>> g = layout(infer(parse("def f(a :: f32[]) = let b = sin a  c = mul a b in [c]")), {})
    >>> [(n["id"], n["layer"]) for n in g["nodes"]], g["edges"]
    ([('a', 0), ('b', 1), ('c', 2)], [[0, 1], [0, 2], [1, 2]])
    """
    index: dict[str, int] = {}
    nodes: list[dict] = []
    edges: list[list[int]] = []
    outs = {v.name: i for i, v in reversed(list(enumerate(program.outs)))}

    def add(name: str, label: str, t, layer: int, kind: str) -> int:
        index[name] = len(nodes)
        node = {"id": name, "label": label, "type": str(t), "layer": layer, "kind": kind}
        node["part"] = part.get(name, "primal")
        if name in outs:
            node["out"] = outs[name]
        nodes.append(node)
        return index[name]

    for p in program.params:
        add(p.name, p.name, p.type, 0, "param")
    for e in program.eqns:
        srcs = [index[v.name] for v in e.ins]
        layer = 1 + max((nodes[s]["layer"] for s in srcs), default=-1)
        lhs = ", ".join(v.name for v in e.outs)
        label = e.out.name if e.prim == "id" else f"{lhs} = {e.prim}"
        dst = add(e.out.name, label, e.out.type, layer, "eqn")
        for v in e.extra_outs:  # a loop's other results are the same node
            index[v.name] = dst
        edges.extend([s, dst] for s in srcs)
    operands: dict[int, list[int]] = {}
    consumers: dict[int, list[int]] = {}
    for s, d in edges:
        operands.setdefault(d, []).append(s)
        consumers.setdefault(s, []).append(d)
    for i, n in enumerate(nodes):  # a constant sits just above its first use
        if n["kind"] == "eqn" and i not in operands and i in consumers:
            n["layer"] = max(0, min(nodes[d]["layer"] for d in consumers[i]) - 1)
    rows: dict[int, list[int]] = {}
    for i, n in enumerate(nodes):
        rows.setdefault(n["layer"], []).append(i)
    pos = order_rows([rows[k] for k in range(1 + max(rows, default=-1))], operands, consumers)
    for i, n in enumerate(nodes):
        n["pos"] = pos[i]
    return {"nodes": nodes, "edges": edges, "layers": len(rows)}


SWEEPS = 6  # barycentric sweeps, alternately down (by operands) and up (by consumers)
MAX_ORDERED_EDGES = 3000  # past this, one downward sweep only (crossing counts are quadratic)


def order_rows(rows: list[list[int]], operands: dict, consumers: dict) -> dict[int, int]:
    """Each node's position in its row: barycentric sweeps (a node goes to the mean position of
    its neighbours in the rows already placed), keeping the order with the fewest crossings
    between consecutive rows.

    >>> sorted(order_rows([[0, 1], [2, 3]], {2: [1], 3: [0]}, {1: [2], 0: [3]}).items())
    [(0, 0), (1, 1), (2, 1), (3, 0)]
    """
    order = [list(r) for r in rows]
    n_edges = sum(len(v) for v in operands.values())
    sweeps = SWEEPS if n_edges <= MAX_ORDERED_EDGES else 1
    best, best_crossings = None, None
    for sweep in range(sweeps):
        down = sweep % 2 == 0
        pos = {i: p for r in order for p, i in enumerate(r)}
        sequence = range(1, len(order)) if down else range(len(order) - 2, -1, -1)
        near, far = (operands, consumers) if down else (consumers, operands)
        for k in sequence:
            order[k].sort(key=partial(_barycenter, pos=pos, near=near, far=far))
            pos.update({i: p for p, i in enumerate(order[k])})
        crossings = _crossings(order, operands) if sweeps > 1 else 0
        if best_crossings is None or crossings < best_crossings:
            best, best_crossings = [list(r) for r in order], crossings
    return {i: p for r in best for p, i in enumerate(r)}


def _barycenter(i: int, *, pos: dict, near: dict, far: dict) -> tuple[float, int]:
    """Where node ``i`` goes: the mean position of its ``near`` neighbours (operands on a
    downward sweep), else of its ``far`` ones, else where it is; ties keep the order."""
    for links in (near, far):
        placed = [pos[j] for j in links.get(i, ())]
        if placed:
            return (sum(placed) / len(placed), pos[i])
    return (pos[i], pos[i])


def _crossings(order: list[list[int]], operands: dict) -> int:
    """Crossings among edges between consecutive rows (the ones a sweep can untangle)."""
    pos = {i: p for r in order for p, i in enumerate(r)}
    row = {i: k for k, r in enumerate(order) for i in r}
    total = 0
    for k in range(1, len(order)):
        pairs = sorted(
            (pos[s], pos[d]) for d in order[k] for s in operands.get(d, ()) if row[s] == k - 1
        )
        for a in range(len(pairs)):
            for b in range(a + 1, len(pairs)):
                if pairs[a][0] < pairs[b][0] and pairs[a][1] > pairs[b][1]:
                    total += 1
    return total


# ---------------------------------------------------------------------------------------------
# the explorer's answer


def _stages(typed: Program, wrt: list[int], rewrites: str) -> dict[str, Program]:
    if rewrites == "seed":  # the seed's rewrites: canonical dot_general, reduce_sum as slices
        seed = lower_reduce_sum(rewrite(typed))
        st = shax_core.stages(seed, wrt=wrt)
        st["rewritten"] = seed
        return st
    return shax_core.stages(typed, wrt=wrt)


def _tensor(name: str, array: np.ndarray) -> dict:
    """A result for the page: flat data (NaN and the infinities as strings, as on the wire) and
    ``text``, printed the way the seed prints arrays (each float at its dtype's precision).

    >>> _tensor("out0", np.array([34.731194, 67.46239], np.float32))["text"]
    '[34.731194 67.46239]'
    """
    a = np.asarray(array)
    dtype = dtype_name(a.dtype)
    flat = a.reshape(-1).tolist()
    if a.dtype == np.bool_:
        data = [bool(x) for x in flat]
        text = np.array2string(a)
    else:
        data = [encode_float(float(x)) for x in flat]
        text = np.array2string(
            a, max_line_width=100, formatter={"float_kind": lambda v: format_float(v, dtype)}
        )
    return {"name": name, "shape": list(a.shape), "dtype": dtype, "data": data, "text": text}


def _member(doc: dict, key: str, names, types, settings: Settings, default) -> list:
    items = doc.get(key)
    if items is None:
        return default()
    if not isinstance(items, list):
        raise Problem(400, "Invalid request", f"'{key}' must be a list", kind="invalid-request")
    objs = [x if isinstance(x, dict) else {"data": x} for x in items]
    return decode_positional(
        objs,
        BinaryReader(b""),
        names,
        types,
        member=key,
        max_elements=settings.max_tensor_elements,
    )


def _run(program: Program, arrays: list, what: str, settings: Settings) -> list[np.ndarray]:
    exe = shax_core.compile(program)
    check_peak(exe, what, settings)
    return exe.run(list(arrays))


def numbers(st: dict[str, Program], doc: dict, wrt: list[int], settings: Settings) -> dict:
    """The seed's numbers: f(x) from the linearized primal, df(dx) from the linear map
    (tangents default to the inputs, as in the seed), dft(ct) from the transposed map
    (cotangents default to ones) and the zipped VJP; plus the dot-product identity
    <df(dx), ct> = <dx, dft(ct)> that ties the linear and transposed maps together."""
    typed = st["typed"]
    names = [p.name for p in typed.params]
    inputs = _member(doc, "inputs", names, typed.in_types, settings, lambda: None)
    if inputs is None:
        return {}
    wrt_types = [typed.params[i].type for i in wrt]
    tangents = _member(
        doc,
        "tangents",
        [f"d{names[i]}" for i in wrt],
        wrt_types,
        settings,
        lambda: [inputs[i] for i in wrt],
    )
    out_types = typed.out_types
    cotangents = _member(
        doc,
        "cotangents",
        [f"ct{i}" for i in range(len(out_types))],
        out_types,
        settings,
        lambda: [np.ones(t.shape, t.np_dtype) for t in out_types],
    )
    n = len(typed.outs)
    primal = _run(st["linearized"], inputs, "linearized", settings)
    outputs, residuals = primal[:n], primal[n:]
    df = _run(st["linear"], [*tangents, *residuals], "linear", settings)
    dft = _run(st["transposed"], [*cotangents, *residuals], "transposed", settings)
    vjp = _run(st["vjp"], [*inputs, *cotangents], "VJP", settings)

    def dot(xs, ys) -> float:
        return float(
            sum(
                np.vdot(np.asarray(x, np.float64), np.asarray(y, np.float64))
                for x, y in zip(xs, ys, strict=True)
            )
        )

    return {
        "f": [_tensor(f"out{i}", a) for i, a in enumerate(outputs)],
        "df": [_tensor(f"tout{i}", a) for i, a in enumerate(df)],
        "dft": [_tensor(f"grad_{names[i]}", a) for i, a in zip(wrt, dft, strict=True)],
        "vjp": [_tensor(f"out{i}", a) for i, a in enumerate(vjp[:n])]
        + [_tensor(f"grad_{names[i]}", a) for i, a in zip(wrt, vjp[n:], strict=True)],
        "dot_check": {"df_dot_ct": dot(df, cotangents), "dx_dot_dft": dot(tangents, dft)},
        "tangents": [_tensor(f"d{names[i]}", a) for i, a in zip(wrt, tangents, strict=True)],
        "cotangents": [_tensor(f"ct{i}", a) for i, a in enumerate(cotangents)],
    }


def _invalid(detail: str) -> Problem:
    return Problem(400, "Invalid request", detail, kind="invalid-request")


def check_session(doc: dict) -> str:
    """Check a session's fields against the documented schema (null means absent); its
    rewrites. ``program`` is IR text; ``inputs``, ``tangents``, ``cotangents`` lists; ``wrt``
    a list of integers; ``rewrites`` one of ``REWRITES``."""
    if not isinstance(doc.get("program"), str):
        raise _invalid("'program' must be a string of IR text")
    for key in ("inputs", "tangents", "cotangents", "wrt"):
        if doc.get(key) is not None and not isinstance(doc[key], list):
            raise _invalid(f"'{key}' must be a list")
    wrt = doc.get("wrt") or []
    if not all(isinstance(i, int) and not isinstance(i, bool) for i in wrt):
        raise _invalid("'wrt' must be a list of input indices")
    rewrites = doc.get("rewrites")
    if rewrites is None:
        return "shax"
    if rewrites not in REWRITES:
        raise _invalid(f"'rewrites' must be one of {', '.join(REWRITES)}")
    return rewrites


def explore(doc: dict, settings: Settings) -> dict:
    """Every stage of ``doc["program"]`` (IR text) with counts and graphs, and its numbers when
    ``doc["inputs"]`` is given. Errors are problems; parse and type errors carry line/column."""
    rewrites = check_session(doc)
    text = doc["program"]
    try:
        source = parse(text)
        n_eqns = count_equations(source)
        if n_eqns > settings.max_equations:
            raise limit_exceeded(
                "max_equations",
                f"the program has {n_eqns} equations (loop bodies included), more than the "
                f"limit of {settings.max_equations}",
            )
        typed = infer(source)
    except (ParseError, ShaxTypeError) as e:
        raise located(e, text) from None
    check_trips(typed, settings)
    check_sizes(typed, settings)
    wrt = list(resolve_wrt(typed, doc.get("wrt")))
    st = {"source": source, **_stages(typed, wrt, rewrites)}
    n_in, n_out = len(typed.params), len(typed.outs)
    stages = []
    for name in STAGE_TITLES:
        p = st[name]
        part = stage_parts(name, p, n_in, n_out, len(wrt))
        n_values = len(p.params) + len(p.eqns)
        graph = layout(p, part) if n_values <= MAX_GRAPH_NODES else None
        counts = {k: 0 for k in ("primal", "residual", "linear")}
        for e in p.eqns:
            counts[part[e.out.name]] += 1
        stages.append(
            {
                "name": name,
                "title": STAGE_TITLES[name],
                "text": str(p),
                "equations": len(p.eqns),
                "parts": counts,
                "graph": graph,
            }
        )
    return {
        "name": typed.name,
        "rewrites": rewrites,
        "wrt": wrt,
        "signature": {
            "inputs": [{"name": v.name, "type": str(v.type)} for v in typed.params],
            "outputs": [{"name": f"out{i}", "type": str(t)} for i, t in enumerate(typed.out_types)],
        },
        "stages": stages,
        "numbers": _numbers_or_problem(st, doc, wrt, settings),
    }


def _numbers_or_problem(st, doc: dict, wrt: list[int], settings: Settings) -> dict:
    """The numbers, or ``{"problem": ...}`` saying what is wrong with the inputs: the stages are
    the answer's main part and stand on their own (a program pasted over a sample keeps the
    sample's inputs until they are edited)."""
    try:
        return numbers(st, doc, wrt, settings)
    except Problem as p:
        if p.status != 400:
            raise  # limits stay errors of the whole request
        return {"problem": p.body()}
    except ShaxError as e:
        return {"problem": problem_for(e).body()}


def primitive_names() -> list[str]:
    return sorted(REGISTRY)


# ---------------------------------------------------------------------------------------------
# shareable links: a session's request, content-addressed


LINK_ID = re.compile(r"^[0-9a-f]{16}$")
LINK_FIELDS = ("program", "inputs", "tangents", "cotangents", "wrt", "rewrites")
MAX_LINK_BYTES = 256 * 1024


def link_document(doc: dict) -> tuple[str, bytes]:
    """(id, canonical JSON) of a session: its known fields only, checked for size."""
    check_session(doc)
    kept = {k: doc[k] for k in LINK_FIELDS if doc.get(k) is not None}
    data = orjson.dumps(kept, option=orjson.OPT_SORT_KEYS)
    if len(data) > MAX_LINK_BYTES:
        raise limit_exceeded(
            "max_link_bytes", f"a shared session is at most {MAX_LINK_BYTES} bytes, got {len(data)}"
        )
    return hashlib.sha256(b"shax-explore-link\0" + data).hexdigest()[:16], data


@dataclass
class LinkStore:
    """Sessions by id, least recently used first out, bounded in count and bytes."""

    max_entries: int = 4096
    max_bytes: int = 64 * 1024 * 1024

    def __post_init__(self):
        self.items: OrderedDict[str, bytes] = OrderedDict()
        self.bytes = 0

    def put(self, key: str, data: bytes) -> None:
        if key in self.items:
            self.items.move_to_end(key)
            return
        self.items[key] = data
        self.bytes += len(data)
        while len(self.items) > self.max_entries or self.bytes > self.max_bytes:
            _, old = self.items.popitem(last=False)
            self.bytes -= len(old)

    def get(self, key: str) -> bytes | None:
        data = self.items.get(key)
        if data is not None:
            self.items.move_to_end(key)
        return data
