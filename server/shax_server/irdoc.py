"""The IR's documentation, from the registry: its grammar and every primitive's spelling.

``GRAMMAR`` goes into the OpenAPI descriptions (the ``program`` fields) and ``docs/ir.md``;
``primitive_table()`` is the table of ``docs/ir.md`` between its ``primitives`` markers, generated
from ``shax_core.primitives.REGISTRY`` (``python -m shax_server.irdoc docs/ir.md`` rewrites it;
``tests/test_site.py`` fails when the file and the registry disagree).

>>> print(spelling(REGISTRY["broadcast"]))
y = broadcast [dims] [shape] a
>>> print(spelling(REGISTRY["fromList"]))
y :: f32[shape] = fromList [shape] [data]
"""

from __future__ import annotations

import sys
from pathlib import Path

from shax_core.ir import DTYPES
from shax_core.primitives import REGISTRY, Primitive

GRAMMAR = """\
module     ::= definition+
definition ::= "def" NAME "(" [param ("," param)*] ")" "=" "let" binding* "in" "[" uses "]"
param      ::= NAME "::" type
type       ::= DTYPE "[" [INT ("," INT)*] "]"                e.g. f32[2, 6], f64[]
DTYPE      ::= {dtypes}
binding    ::= result ("," result)* "=" (NAME | PRIMITIVE argument* NAME*)
result     ::= NAME ["::" type]                             several: a loop's results
uses       ::= [use ("," use)*]
use        ::= NAME ["::" type]
argument   ::= INT | "[" INT,* "]" | "[" pair,* "]" | NUMBER | DTYPE | "[" literal,* "]"
             | WORD | block | "[" block,* "]"
block      ::= "{" definition "}"                           a closed sub-program (a body)
pair       ::= "(" INT "," INT ")"
literal    ::= NUMBER | "true" | "false"
NAME       ::= [A-Za-z_][A-Za-z0-9_']*   (not a primitive, not def/let/in)
NUMBER     ::= decimal or scientific, inf, nan;  comments run from "--" to the end of the line
""".replace("{dtypes}", " | ".join(f'"{d}"' for d in DTYPES)).rstrip()  # from the IR's table

GRAMMAR_NOTES = (
    "Whitespace and newlines are insignificant. Operands are names bound before (parameters or "
    "earlier bindings; each name is bound once). A binding's `:: type` is optional: the server "
    "infers every type and checks the annotations given. `x = y` copies (the `id` primitive). "
    "A primitive's arguments come before its operands, in the order of its parameter list."
)

PROGRAM_DESCRIPTION = (
    "IR text: one or more `def`s (the first is compiled). Grammar:\n\n```\n"
    + GRAMMAR
    + "\n```\n\n"
    + GRAMMAR_NOTES
    + " Every primitive's spelling: docs/ir.md. Example: the seed's `medium` "
    "(`def medium(arg0 :: f32[6], arg1 :: f32[2, 2]) = let x1 = broadcast [1] [2,6] arg0 ... "
    "in [x14]`)."
)

KIND_TEXT = {
    "int": "an integer: `0`",
    "ints": "integers: `[1,0]`",
    "pairs": "(low, high) pairs: `[(1,0),(0,0)]`",
    "scalar": "a number: `0.0`",
    "dtype": "a dtype: `f64`",
    "literals": "the values, row-major: `[1.0,2.0]`",
    "hidden_dtype": "not written: the binding's annotated dtype",
    "word": "a word: `save`",
    "program": "a sub-program: `{def body(...) = let ... in [...]}`",
    "programs": "sub-programs: `[{def b0 ...}, {def b1 ...}]`",
}

MEANINGS = {
    "add": "a + b",
    "sub": "a - b",
    "mul": "a * b",
    "div": "a / b",
    "pow": "a ** b",
    "negate": "-a",
    "id": "a (written `y = a`)",
    "max": "elementwise maximum (ties split the gradient evenly)",
    "min": "elementwise minimum (ties split the gradient evenly)",
    "eq": "a == b (bool)",
    "ne": "a != b (bool)",
    "lt": "a < b (bool)",
    "le": "a <= b (bool)",
    "gt": "a > b (bool)",
    "ge": "a >= b (bool)",
    "select": "where(a, b, c): a is bool",
    "convert": "a as another dtype",
    "abs": "|a|",
    "sign": "sign(a) (no gradient)",
    "dot": "matrix/vector product (NumPy dot for rank <= 2)",
    "dot_general": "contract the lhs/rhs axes, batch over the batch axes; "
    "output axes: batch, free lhs, free rhs",
    "fromList": "a constant of the annotated type (f32 when not annotated)",
    "broadcast": "operand axis i becomes output axis dims[i] of an array of the given shape",
    "reshape": "same elements, row-major, new shape",
    "transpose": "axes permuted: output axis i is operand axis perm[i]",
    "slice": "a[start:limit] on every axis",
    "pad": "pad each axis with (low, high) copies of value",
    "concatenate": "join the operands along axis",
    "reduce_sum": "sum over the axes (removed)",
    "reduce_max": "maximum over the axes (removed)",
    "solve": "the x with a x = b",
    "triangular_solve": "the x with t x = b, t the lower (lower = 1) or upper triangle of a, "
    "transposed when trans = 1",
    "cholesky": "the lower-triangular l with l lᵀ = a",
    "logabsdet": "log |det a|",
    "det_sign": "the sign of det a",
    "gather": "a at the integer positions b, along the axes from axis (clamped)",
    "scatter_add": "a with c added at the integer positions b, along the axes from axis",
    "rev": "a reversed along the axes",
    "cumsum": "running sum along axis (from the end when reverse = 1)",
    "argmax": "the position of the maximum along axis (i32)",
    "argsort": "the positions that sort a along axis (i32)",
    "atan2": "elementwise atan2(a, b)",
    "stop_gradient": "a, with a zero gradient",
}


def _arg(kind: str, name: str) -> str | None:
    if kind == "hidden_dtype":
        return None
    if kind in ("ints", "pairs", "literals", "programs"):
        return f"[{name}]"
    if kind == "program":
        return f"{{{name}}}"
    return name


def spelling(prim: Primitive) -> str:
    """How an equation with ``prim`` is written (operands ``a, b, c``; variadic ``a b ...``)."""
    args = [a for a in (_arg(p.kind, p.name) for p in prim.params) if a is not None]
    if prim.arity is None:
        operands = ["a", "b", "..."]
    else:
        operands = list("abcdefgh"[: prim.arity])
    if prim.bare:  # written as its operand alone
        return "y = a"
    # a hidden dtype is the binding's annotation
    lhs = "y :: f32[shape]" if any(p.kind == "hidden_dtype" for p in prim.params) else "y"
    if prim.multiple_results:
        lhs = "y0, y1, ..."
    return " ".join([lhs, "=", prim.name, *args, *operands])


def meaning(prim: Primitive) -> str:
    if prim.doc:
        return prim.doc.strip().splitlines()[0]
    if prim.name in MEANINGS:
        return MEANINGS[prim.name]
    if "elementwise" in prim.traits and prim.arity == 1:
        return f"elementwise {prim.name}(a)"
    return ""


def differentiation(prim: Primitive) -> str:
    """What the AD pipeline has for ``prim``: no tangent, a linearize rule, a transpose rule."""
    if prim.no_tangent:
        return "no tangent (its gradient is zero)"
    have = [name for name in ("linearize", "transpose") if getattr(prim, name) is not None]
    return " and ".join(have) if have else "not differentiable"


def primitive_table() -> str:
    """The markdown table of every registered primitive, in registry order."""
    rows = [
        "| primitive | written | parameters | operands | rules | meaning |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for prim in REGISTRY.values():
        params = "; ".join(f"`{p.name}`: {KIND_TEXT[p.kind]}" for p in prim.params) or "none"
        arity = "any number" if prim.arity is None else str(prim.arity)
        text = meaning(prim).replace("|", "\\|")
        rows.append(
            f"| `{prim.name}` | `{spelling(prim)}` | {params} | {arity} | "
            f"{differentiation(prim)} | {text} |"
        )
    return "\n".join(rows)


BEGIN, END = (
    "<!-- primitives:begin (generated by python -m shax_server.irdoc) -->",
    ("<!-- primitives:end -->"),
)


def table_in(text: str) -> str:
    """The generated table between the markers of a docs/ir.md text."""
    start, end = text.index(BEGIN) + len(BEGIN), text.index(END)
    return text[start:end].strip()


def rewrite_doc(path: Path) -> None:
    """Regenerate docs/ir.md's grammar block and primitive table from the code."""
    text = path.read_text(encoding="utf-8")
    head = "## Grammar\n\n```\n"
    g0 = text.index(head) + len(head)
    text = text[:g0] + GRAMMAR + text[text.index("\n```", g0) :]
    start, end = text.index(BEGIN) + len(BEGIN), text.index(END)
    path.write_text(text[:start] + "\n" + primitive_table() + "\n" + text[end:], encoding="utf-8")


if __name__ == "__main__":
    rewrite_doc(Path(sys.argv[1] if len(sys.argv) > 1 else "docs/ir.md"))
