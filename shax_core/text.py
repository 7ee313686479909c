"""IR text: the seed's syntax, printed and parsed.

>>> p = parse(
...     "def f(arg0 :: f32[], arg1 :: f32[]) = let x2 :: f32[] = add arg0 arg1"
...     "  x3 = broadcast [] [2,2] x2  x4 = pad [(1,0),(0,0)] 0.0 x3"
...     "  x5 :: f32[] = fromList [] [1.0]  x6 = x4 in [x6]"
... )
>>> print(p)
def f(arg0 :: f32[],
      arg1 :: f32[]) =
  let x2 :: f32[] = add arg0 arg1
      x3 = broadcast [] [2,2] x2
      x4 = pad [(1,0),(0,0)] 0.0 x3
      x5 :: f32[] = fromList [] [1.0]
      x6 = x4
  in [x6]
>>> parse(print_program(p)) == p
True
>>> parse("def f(a :: f32[]) = let x = sin b in [x]")
Traceback (most recent call last):
...
shax_core.text.ParseError: line 1, column 33: undefined variable b

Whitespace and newlines are insignificant; binding annotations are optional (``infer`` fills
them in); several ``def``s may follow each other. A binding whose right-hand side is a bare
variable (``x0 = arg0``) is the ``id`` primitive. Parameters are printed and parsed by the
primitive's parameter spec in the registry, so adding a primitive never touches this file.
A constant's dtype is spelled in its binding's annotation (always printed).
"""

from __future__ import annotations

import re
from bisect import bisect_right

from shax_core.ir import (
    DTYPES,
    MAX_NESTING,
    Eqn,
    Program,
    ShaxError,
    Type,
    Var,
    canonical_float,
    format_float,
    set_printer,
)
from shax_core.registry import REGISTRY, bare_primitive, lookup, normalize_literals

__all__ = [
    "ParseError",
    "canonical_float",
    "format_eqn",
    "format_float",
    "format_params",
    "normalize_literals",
    "parse",
    "parse_module",
    "print_module",
    "print_program",
]


class ParseError(ShaxError):
    def __init__(self, message: str, line: int, column: int):
        super().__init__(f"line {line}, column {column}: {message}")
        self.message = message
        self.line = line
        self.column = column


# ---------------------------------------------------------------------------------------------
# printing


def format_params(prim_name: str, params) -> str:
    return lookup(prim_name).format_params(params)


def format_eqn(eqn: Eqn) -> str:
    """One binding (a sub-program parameter spans several lines; see ``print_program``)."""
    prim = lookup(eqn.prim)
    lhs = eqn.out.name
    t = eqn.out.type
    if t is None and any(p.spec.hidden for p in prim.params):
        # a hidden parameter is spelled in the annotation (a constant's dtype): always print it
        try:
            t = prim.out_type(eqn, [v.type for v in eqn.ins])
        except ShaxError:
            t = None  # an ill-typed equation being shown in an error message
    if t is not None:
        lhs += f" :: {t}"
    for v in eqn.extra_outs:
        lhs += f", {v.name} :: {v.type}" if v.type is not None else f", {v.name}"
    if prim.bare:
        return f"{lhs} = {eqn.ins[0].name}"
    parts = [eqn.prim]
    ps = prim.format_params(eqn.params)
    if ps:
        parts.append(ps)
    parts.extend(v.name for v in eqn.ins)
    return f"{lhs} = {' '.join(parts)}"


def short_eqn(eqn: Eqn) -> str:
    """A binding for an error message: sub-programs shown as ``{def name ...}``."""
    if not eqn.subprograms:
        return format_eqn(eqn)
    lhs = ", ".join(v.name for v in eqn.outs)
    bodies = " ".join(f"{{def {p.name} ...}}" for p in eqn.subprograms)
    return f"{lhs} = {eqn.prim} {bodies} {' '.join(v.name for v in eqn.ins)}"


def print_program(program: Program) -> str:
    """The program's text. A binding with a sub-program spans several lines: the lines after
    its first are indented past the binding's column, so bodies nest visibly."""

    def binder(v: Var) -> str:
        return f"{v.name} :: {v.type}" if v.type is not None else v.name

    head = f"def {program.name}("
    sep = ",\n" + " " * len(head)
    lines = [head + sep.join(binder(p) for p in program.params) + ") ="]
    eqns = [format_eqn(e).replace("\n", "\n      ") for e in program.eqns]
    if eqns:
        lines.append("  let " + eqns[0])
        lines.extend("      " + e for e in eqns[1:])
    else:
        lines.append("  let")
    lines.append("  in [" + ", ".join(v.name for v in program.outs) + "]")
    return "\n".join(lines)


def print_module(programs) -> str:
    return "\n\n".join(print_program(p) for p in programs)


set_printer(print_program)  # str(program) is its IR text


# ---------------------------------------------------------------------------------------------
# lexing

_TOKEN = re.compile(
    r"""
    (?P<ws>\s+|--[^\n]*)
  | (?P<number>[-+]?(?:\d+\.\d*(?:[eE][-+]?\d+)?|\d+(?:[eE][-+]?\d+)?|\.\d+(?:[eE][-+]?\d+)?
                     |inf(?:inity)?|nan)(?![A-Za-z0-9_']))
  | (?P<name>[A-Za-z_][A-Za-z0-9_'.]*)
  | (?P<sym>::|[()\[\],={}])
  | (?P<bad>.)
    """,
    re.VERBOSE | re.DOTALL,
)


class Token:
    """A token; its line and column are computed from its offset only when an error needs
    them (keeping tokenizing to one regex scan)."""

    __slots__ = ("kind", "text", "pos", "_lines")

    def __init__(self, kind: str, text: str, pos: int, lines: list[int]):
        self.kind = kind  # number | name | sym | eof
        self.text = text
        self.pos = pos
        self._lines = lines  # offsets at which lines start

    @property
    def line(self) -> int:
        return bisect_right(self._lines, self.pos)

    @property
    def column(self) -> int:
        return self.pos - self._lines[self.line - 1] + 1

    def describe(self) -> str:
        return "end of input" if self.kind == "eof" else repr(self.text)


MAX_TEXT = 64 * 1024 * 1024


def tokenize(text: str) -> list[Token]:
    if not isinstance(text, str):
        raise ParseError("IR text must be a string", 1, 1)
    if len(text) > MAX_TEXT:
        raise ParseError(f"IR text of {len(text)} characters exceeds {MAX_TEXT}", 1, 1)
    lines = [0] + [m.end() for m in _NEWLINE.finditer(text)]
    tokens: list[Token] = []
    append = tokens.append
    for m in _TOKEN.finditer(text):
        kind = m.lastgroup
        if kind == "ws":
            continue
        if kind == "bad":
            bad = Token(kind, m.group(), m.start(), lines)
            raise ParseError(f"unexpected character {m.group()!r}", bad.line, bad.column)
        append(Token(kind, m.group(), m.start(), lines))
    tokens.append(Token("eof", "", len(text), lines))
    return tokens


_NEWLINE = re.compile("\n")


# ---------------------------------------------------------------------------------------------
# parsing (recursive descent over a flat token list; no recursion on program size)


class _Parser:
    def __init__(self, text: str):
        self.tokens = tokenize(text)
        self.i = 0
        self.depth = 0  # sub-program nesting

    @property
    def tok(self) -> Token:
        return self.tokens[self.i]

    def peek(self, k: int = 1) -> Token:
        return self.tokens[min(self.i + k, len(self.tokens) - 1)]

    def error(self, expected: str, tok: Token | None = None):
        tok = tok or self.tok
        raise ParseError(f"expected {expected}, found {tok.describe()}", tok.line, tok.column)

    def take(self, kind: str, text: str | None = None, expected: str | None = None) -> Token:
        tok = self.tok
        if tok.kind != kind or (text is not None and tok.text != text):
            self.error(expected or (repr(text) if text else kind))
        self.i += 1
        return tok

    def at(self, text: str) -> bool:
        return self.tok.kind in ("sym", "name") and self.tok.text == text

    def integer(self) -> int:
        tok = self.take("number", expected="an integer")
        if not re.fullmatch(r"[-+]?\d+", tok.text):
            self.error("an integer", tok)
        value = int(tok.text)
        if abs(value) > 2**62:
            raise ParseError(f"integer {tok.text} is too large", tok.line, tok.column)
        return value

    def number(self) -> float:
        tok = self.take("number", expected="a number")
        text = tok.text.lower().replace("infinity", "inf")
        try:
            return float(text)
        except ValueError:
            self.error("a number", tok)

    def dim_list(self, item) -> tuple:
        self.take("sym", "[")
        out = []
        if not self.at("]"):
            out.append(item())
            while self.at(","):
                self.i += 1
                out.append(item())
        self.take("sym", "]", expected="',' or ']'")
        return tuple(out)

    def pair(self) -> tuple[int, int]:
        self.take("sym", "(")
        lo = self.integer()
        self.take("sym", ",")
        hi = self.integer()
        self.take("sym", ")")
        return (lo, hi)

    def literal(self):
        if self.tok.kind == "name" and self.tok.text in ("true", "false", "True", "False"):
            return self.take("name").text.lower() == "true"
        return self.number()

    def type_(self) -> Type:
        tok = self.take("name", expected="a dtype (f32, f64, i32, i64, bool)")
        if tok.text not in DTYPES:
            raise ParseError(
                f"unknown dtype {tok.text!r}; expected one of {', '.join(DTYPES)}",
                tok.line,
                tok.column,
            )
        shape = self.dim_list(self.integer)
        if any(d < 0 for d in shape):
            raise ParseError(f"negative dimension in {tok.text}{list(shape)}", tok.line, tok.column)
        return Type(tok.text, shape)

    def module(self) -> list[Program]:
        programs = [self.definition()]
        while self.tok.kind != "eof":
            programs.append(self.definition())
        return programs

    def definition(self) -> Program:
        self.take("name", "def", expected="'def'")
        name = self.take("name", expected="a function name").text
        self.take("sym", "(")
        env: dict[str, Var] = {}
        params = []
        while not self.at(")"):
            if params:
                self.take("sym", ",", expected="',' or ')'")
            tok = self.take("name", expected="a parameter name")
            self.take("sym", "::", expected="'::' and a type")
            if tok.text in env:
                raise ParseError(f"parameter {tok.text} is declared twice", tok.line, tok.column)
            v = Var(tok.text, self.type_())
            env[v.name] = v
            params.append(v)
        self.take("sym", ")")
        self.take("sym", "=")
        self.take("name", "let", expected="'let'")
        eqns = []
        while not self.at("in"):
            if self.tok.kind == "eof":
                self.error("a binding or 'in'")
            eqns.append(self.binding(env))
        self.take("name", "in")
        outs = self.dim_list(lambda: self.use(env, allow_annotation=True))
        return Program(name, tuple(params), tuple(eqns), outs)

    def use(self, env, allow_annotation=False) -> Var:
        tok = self.take("name", expected="a variable")
        if tok.text not in env:
            raise ParseError(f"undefined variable {tok.text}", tok.line, tok.column)
        v = env[tok.text]
        if allow_annotation and self.at("::"):
            self.i += 1
            at = self.tok
            t = self.type_()
            if v.type is not None and t != v.type:
                raise ParseError(f"{v.name} is {v.type}, annotated here as {t}", at.line, at.column)
        return v

    def binding(self, env) -> Eqn:
        tok = self.take("name", expected="a variable to bind")
        if tok.text in env:
            raise ParseError(f"{tok.text} is bound twice", tok.line, tok.column)
        if tok.text in ("def", "let", "in") or tok.text in REGISTRY:
            raise ParseError(f"{tok.text!r} is reserved and cannot be bound", tok.line, tok.column)
        annotation = None
        if self.at("::"):
            self.i += 1
            annotation = self.type_()
        extra: list[tuple[Token, Type | None]] = []
        while self.at(","):  # further results of a multi-result primitive (a loop)
            self.i += 1
            more = self.take("name", expected="a variable to bind")
            names = [tok.text] + [t.text for t, _ in extra]
            if more.text in env or more.text in names:
                raise ParseError(f"{more.text} is bound twice", more.line, more.column)
            more_type = None
            if self.at("::"):
                self.i += 1
                more_type = self.type_()
            extra.append((more, more_type))
        if not self.at("="):
            hint = (
                ""
                if not self.tok.text
                else f" (is {tok.text} an extra operand of the line before?)"
            )
            raise ParseError(
                f"expected '=' or '::' after {tok.text}, found {self.tok.describe()}{hint}",
                self.tok.line,
                self.tok.column,
            )
        self.take("sym", "=", expected="'=' or '::'")
        head = self.tok
        if head.kind != "name":
            self.error("a primitive or a variable")
        if head.text in REGISTRY:
            self.i += 1
            eqn = self.application(head, annotation, tok.text, env)
        else:
            eqn = Eqn(Var(tok.text, annotation), bare_primitive().name, (), (self.use(env),))
        prim = REGISTRY.get(eqn.prim)
        if extra and not (prim and prim.multiple_results):
            raise ParseError(
                f"{eqn.prim} has one result; {len(extra) + 1} variables are bound",
                tok.line,
                tok.column,
            )
        if extra:
            outs = tuple(Var(t.text, ty) for t, ty in extra)
            eqn = Eqn(eqn.out, eqn.prim, eqn.params, eqn.ins, outs)
        for v in eqn.outs:
            env[v.name] = v
        return eqn

    def application(self, head: Token, annotation, out_name: str, env) -> Eqn:
        prim = REGISTRY[head.text]
        values = []
        for p in prim.params:
            if p.spec.hidden:
                values.append(None)
                continue
            try:
                values.append(p.spec.parse(self))
            except ParseError as e:
                raise ParseError(
                    f"{e.message} (parameter {p.name!r} of {prim.name})", e.line, e.column
                ) from None
        try:
            values = prim.complete_params(values, annotation.dtype if annotation else None)
        except ShaxError as e:
            raise ParseError(str(e), head.line, head.column) from None
        ins = []
        if prim.arity is None:
            while (
                self.tok.kind == "name"
                and self.tok.text != "in"
                and self.peek().text not in ("::", "=", ",")
            ):
                ins.append(self.use(env))
        else:
            for k in range(prim.arity):
                if (
                    self.tok.kind != "name"
                    or self.tok.text == "in"
                    or self.peek().text in ("::", "=", ",")
                ):
                    raise ParseError(
                        f"{prim.name} takes {prim.arity} operand(s), found {k}",
                        head.line,
                        head.column,
                    )
                ins.append(self.use(env))
        return Eqn(Var(out_name, annotation), prim.name, tuple(values), tuple(ins))

    def dtype(self) -> str:
        tok = self.take("name", expected="a dtype")
        if tok.text not in DTYPES:
            raise ParseError(f"unknown dtype {tok.text!r}", tok.line, tok.column)
        return tok.text

    def block(self) -> Program:
        """``{def name(...) = let ... in [...]}``: a closed sub-program."""
        start = self.take("sym", "{", expected="'{' and a sub-program")
        if self.depth >= MAX_NESTING:
            raise ParseError(
                f"sub-programs nested more than {MAX_NESTING} deep", start.line, start.column
            )
        self.depth += 1
        program = self.definition()
        self.depth -= 1
        self.take("sym", "}", expected="'}' closing the sub-program")
        return program


def parse_module(text: str) -> list[Program]:
    """Every ``def`` in ``text``, in order."""
    return _Parser(text).module()


def parse(text: str) -> Program:
    """The first ``def`` in ``text`` (the rest must parse too)."""
    return parse_module(text)[0]
