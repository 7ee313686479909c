"""The I/O-free half of the SDK, shared by ``Client`` and ``AsyncClient`` (as httpx shares
``BaseClient``): request building, tensor encoding, response decoding, error mapping, the retry
policy, and the *flows* of each operation.

A flow is a generator that yields ``Call``s and receives ``httpx.Response``s; it returns the
operation's result. The sync client drives a flow with ``httpx.Client.send``, the async client
with ``await httpx.AsyncClient.send``; the logic (upload on first use, re-upload after a 404 for
an evicted id, decoding) is written once::

    def _vjp_flow(...):
        response = yield Call("POST", f"/v1/programs/{id}/vjp", doc, chunks)
        ...
        return outputs, gradients
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Generator, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx
import numpy as np
import orjson

from shax_client import errors
from shax_client._arrays import as_typed, as_typed_all, nbytes
from shax_core import Program, ShaxError, Type, infer
from shax_core.api import call_types, trace_pytree
from shax_core.tree_util import LEAF, PyTreeDef, tree_flatten, tree_unflatten
from shax_core.wire import (
    HEADER_LENGTH,
    IR_DTYPES,
    BinaryReader,
    FramingError,
    decode_tensors,
    encode_tensor,
    join_body,
    split_body,
)

DEFAULT_TIMEOUT = 30.0
DEFAULT_COMPILE_TIMEOUT = 600.0  # uploads compile on the server: long programs take a while
LARGE_PROGRAM = 2000  # equations: uploading a program this large says so
DEFAULT_BINARY_THRESHOLD = 64 * 1024  # bytes; a tensor at least this large goes binary
USER_AGENT = "shax-client/0.1"

log = logging.getLogger("shax_client")

# transport errors worth another attempt: the request never reached the app, or the
# connection was dropped (a server restart closes kept-alive connections)
RETRYABLE_ERRORS = (
    httpx.ConnectError,
    httpx.ConnectTimeout,
    httpx.RemoteProtocolError,
    httpx.ReadError,
    httpx.WriteError,
)


# ---------------------------------------------------------------------------------------------
# calls and retries


@dataclass(frozen=True)
class Call:
    """One HTTP exchange a flow asks for. ``chunks`` are binary-extension tails, in order."""

    method: str
    path: str
    doc: Any = None
    chunks: tuple[bytes, ...] = ()
    idempotent: bool = True
    stream: bool = False
    timeout: Any = None  # None: the client's default (per-call) timeout


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff for idempotent calls: ``backoff * 2**attempt``, capped, or the
    server's ``Retry-After`` when it sends one (capped too)."""

    retries: int = 3
    backoff: float = 0.1
    max_backoff: float = 5.0
    statuses: frozenset[int] = frozenset({503})

    def delay(self, attempt: int, retry_after: str | None = None) -> float:
        if retry_after is not None:
            try:
                return min(max(float(retry_after), 0.0), self.max_backoff)
            except ValueError:
                pass
        return min(self.backoff * (2**attempt), self.max_backoff)

    def retry_status(self, call: Call, attempt: int, status: int) -> bool:
        return call.idempotent and attempt < self.retries and status in self.statuses

    def retry_error(self, call: Call, attempt: int, exc: Exception) -> bool:
        return call.idempotent and attempt < self.retries and isinstance(exc, RETRYABLE_ERRORS)


def map_transport_error(exc: httpx.TransportError) -> errors.ShaxClientError:
    """A typed SDK error for an httpx transport failure (raised ``from exc``)."""
    if isinstance(exc, httpx.ConnectTimeout | httpx.ConnectError):
        return errors.ConnectionFailed(f"cannot reach the shax server: {exc!r}")
    if isinstance(exc, httpx.TimeoutException):
        return errors.Timeout(f"the shax server did not answer in time: {exc!r}")
    return errors.ConnectionFailed(f"connection to the shax server failed: {exc!r}")


# ---------------------------------------------------------------------------------------------
# bodies


def encode_members(
    members: dict[str, Sequence[tuple[str, np.ndarray]]], threshold: int
) -> tuple[dict, list[bytes]]:
    """Tensor-list members of a body: each tensor binary iff it has ``threshold`` bytes or more."""
    doc: dict[str, Any] = {}
    chunks: list[bytes] = []
    for member, named in members.items():
        objs = []
        for name, array in named:
            obj, raw = encode_tensor(name, array, binary=array.nbytes >= threshold)
            objs.append(obj)
            if raw is not None:
                chunks.append(raw)
        doc[member] = objs
    return doc, chunks


def _is_tensor_list(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(v, dict) and "datatype" in v for v in value)


def decode_tensor_doc(doc: dict, tail: memoryview) -> dict[str, list[np.ndarray]]:
    """Every tensor-list member of a response, binary chunks read in document order."""
    reader = BinaryReader(tail)
    out = {}
    for key, value in doc.items():
        if _is_tensor_list(value) and value:
            out[key] = decode_tensors(value, reader, member=key).arrays
        elif _is_tensor_list(value):
            out[key] = []
    reader.finish()
    return out


def parse_body(response: httpx.Response) -> tuple[Any, memoryview]:
    """(JSON document, binary tail) of a successful response."""
    try:
        return split_body(response.content, response.headers.get(HEADER_LENGTH))
    except FramingError as e:
        raise errors.ShaxClientError(
            f"malformed response from the server: {e}", status=response.status_code
        ) from None


def raise_for_problem(response: httpx.Response) -> None:
    """Raise the typed error for a 4xx/5xx response (reads its problem+json body)."""
    if response.status_code < 400:
        return
    try:
        problem = orjson.loads(response.content) if response.content else {}
    except orjson.JSONDecodeError:
        problem = {"detail": response.text[:500]}
    raise errors.error_from_problem(response.status_code, problem, dict(response.headers))


def build_request(
    http: httpx.Client | httpx.AsyncClient, call: Call, headers: dict[str, str], base_url: str
) -> httpx.Request:
    """The httpx request for a call (JSON, or the binary extension when there are chunks)."""
    url = base_url + call.path
    extra = {} if call.timeout is None else {"timeout": call.timeout}
    if call.doc is None:
        return http.build_request(call.method, url, headers=headers, **extra)
    body, body_headers = join_body(call.doc, list(call.chunks))
    return http.build_request(
        call.method, url, content=body, headers={**headers, **body_headers}, **extra
    )


# ---------------------------------------------------------------------------------------------
# compiled programs


@dataclass
class Entry:
    """What the client knows about one uploaded program (shared by its RemoteFunctions).

    A traced function carries its ``program`` (types known locally); IR text given as is is
    uploaded verbatim (``text``), and its types come from the server's signature, so parse and
    type errors are the server's to report, with line and column."""

    program: Program | None
    wrt: tuple[int, ...] | None  # resolved input indices to differentiate (None: server's default)
    wrt_spec: Any  # as the user gave it (None, int, or a tuple): decides grad's return shape
    single: bool  # the Python function returned one value, not a tuple
    program_format: str = "text"
    text: str | None = None
    in_types: tuple[Type, ...] = ()
    out_types: tuple[Type, ...] = ()
    id: str | None = None
    signature: dict = field(default_factory=dict)
    cached: bool | None = None
    # pytrees: the arguments' structures (one per positional argument), the result's, how
    # many leaves each argument has, and closed-over arrays lifted to trailing inputs
    in_trees: tuple[PyTreeDef, ...] = ()
    out_tree: PyTreeDef | None = None
    leaf_counts: tuple[int, ...] = ()
    captured: tuple[np.ndarray, ...] = ()

    @property
    def input_names(self) -> list[str]:
        if self.program is not None:
            return [p.name for p in self.program.params]
        names = [t.get("name") for t in self.signature.get("inputs", [])]
        return names if all(names) else [f"a{i}" for i in range(len(self.in_types))]

    def leaves_of(self, args: Sequence[Any], what: str = "arguments") -> list[np.ndarray]:
        """The input arrays for ``args`` (pytrees with the traced structure), then the
        captured constants."""
        if not self.in_trees:  # IR text or a Program: one array per input
            return as_typed_all(list(args), self.in_types, what)
        if len(args) != len(self.in_trees):
            raise TypeError(f"expected {len(self.in_trees)} {what}, got {len(args)}")
        leaves: list = []
        for arg, tree in zip(args, self.in_trees, strict=True):
            ls, got = tree_flatten(arg)
            if got != tree:
                raise TypeError(f"{what}: structure {got} differs from the traced {tree}")
            leaves += ls
        n = len(leaves)
        typed = [as_typed(x, t) for x, t in zip(leaves, self.in_types[:n], strict=True)]
        return typed + list(self.captured)

    def outputs_tree(self, outputs: Sequence[np.ndarray]) -> Any:
        if self.out_tree is None:
            return outputs[0] if self.single else tuple(outputs)
        return tree_unflatten(self.out_tree, list(outputs))

    def per_argument(self, argnums: Sequence[int], flat: Sequence[np.ndarray]) -> list:
        """Gradients (one per leaf of the ``argnums`` arguments) in each argument's tree."""
        if not self.in_trees:
            return list(flat)
        out, i = [], 0
        for a in argnums:
            n = self.leaf_counts[a]
            out.append(tree_unflatten(self.in_trees[a], list(flat[i : i + n])))
            i += n
        return out

    def leaf_indices(self, argnums: Sequence[int]) -> list[int]:
        if not self.leaf_counts:
            return list(argnums)
        starts = [0]
        for n in self.leaf_counts:
            starts.append(starts[-1] + n)
        return [i for a in argnums for i in range(starts[a], starts[a + 1])]

    def scatter_per_argument(self, grads: Sequence[np.ndarray]) -> list:
        """Cotangents of every argument (zeros for leaves that have none) in its tree."""
        n = sum(self.leaf_counts) if self.leaf_counts else len(self.in_types)
        full = zeros_of(self.in_types[:n])
        for i, g in zip(self.wrt, grads, strict=True):
            full[i] = g
        return self.per_argument(range(len(self.in_trees) or n), full)

    @property
    def name(self) -> str:
        return self.program.name if self.program is not None else "program"

    @property
    def grad_single(self) -> bool:
        if isinstance(self.wrt_spec, int):
            return True
        return self.wrt_spec is None and len(self.wrt or ()) == 1

    def upload_doc(self) -> dict:
        if self.text is not None:
            doc: dict[str, Any] = {"program": self.text}
        elif self.program_format == "graph":
            from shax_core.graph import to_graph

            doc = {"graph": to_graph(self.program)}
        else:
            doc = {"program": str(self.program)}
        if self.wrt is not None:
            doc["wrt"] = list(self.wrt)
        return doc

    def adopt_signature(self, signature: dict) -> None:
        """Keep the server's signature; fill in the types and wrt of an IR-text upload."""
        self.signature = signature
        if self.program is None and signature:
            self.in_types = tuple(signature_type(t) for t in signature["inputs"])
            self.out_types = tuple(signature_type(t) for t in signature["outputs"])
            self.wrt = tuple(signature.get("wrt", ()))
            self.single = len(self.out_types) == 1


def signature_type(meta: dict) -> Type:
    """The IR type of a signature entry ``{"name", "datatype", "shape"}``."""
    return Type(IR_DTYPES[meta["datatype"]], tuple(meta["shape"]))


def resolve_wrt_indices(wrt: Any) -> tuple[int, ...]:
    return (wrt,) if isinstance(wrt, int) else tuple(wrt)


def resolve_wrt(types: Sequence[Type], wrt: Any) -> tuple[int, ...]:
    """Indices to differentiate: ``None`` is every float input; an int or a sequence of ints."""
    if wrt is None:
        return tuple(i for i, t in enumerate(types) if t.is_float)
    indices = resolve_wrt_indices(wrt)
    for i in indices:
        if not isinstance(i, int) or not 0 <= i < len(types):
            raise ValueError(f"wrt index {i!r} is out of range for {len(types)} input(s)")
    return indices


def argnums_of(argnums: Any, n: int) -> tuple[int, ...]:
    """JAX's argnums (an int or a tuple; negative counts from the end) as indices."""
    nums = resolve_wrt_indices(argnums)
    for a in nums:
        if not isinstance(a, int) or isinstance(a, bool) or not -n <= a < n:
            raise ValueError(f"argnums {argnums!r} is out of range for {n} argument(s)")
    out = tuple(a % n for a in nums)
    if len(set(out)) != len(out):
        raise ValueError(f"argnums {argnums!r} repeats an argument")
    return out


def as_examples(specs: Sequence[Any]) -> list[Any]:
    """Arguments to trace at: examples as they are (pytrees), and type specs (a ``Type`` or
    ``(shape, dtype)``) as zero arrays of that type (broadcast views: no memory)."""
    from shax_core import as_type

    out = []
    for s in specs:
        if isinstance(s, Type) or (
            isinstance(s, tuple)
            and len(s) == 2
            and isinstance(s[0], tuple | list)
            and isinstance(s[1], str | np.dtype | type)
        ):
            t = as_type(s)
            s = np.broadcast_to(np.zeros((), t.np_dtype), t.shape)
        out.append(s)
    return out


def trace_entry(f, specs: Sequence[Any], wrt: Any, program_format: str) -> Entry:
    """Trace ``f`` at these arguments (pytrees of examples or type specs; locally, with
    shax_core) into an Entry to upload. ``wrt`` are argument numbers (JAX's argnums).

    ``f`` may also be a ``shax_core.Program`` or IR text (then ``specs`` are ignored and
    ``wrt`` are input indices)."""
    if isinstance(f, str):
        wrt_list = None if wrt is None else resolve_wrt_indices(wrt)
        return Entry(None, wrt_list, wrt, True, program_format, text=f)
    if isinstance(f, Program):
        return _program_entry(infer(f), wrt, len(f.outs) == 1, program_format)
    args = as_examples(specs)
    start = time.perf_counter()
    traced = trace_pytree(f, args)
    program = infer(traced.program)
    n_args = len(args)
    nums = tuple(range(n_args)) if wrt is None else argnums_of(wrt, n_args)
    leaf_wrt = tuple(i for i in traced.leaf_indices(nums) if program.params[i].type.is_float)
    if len(program.eqns) >= LARGE_PROGRAM:
        announce(
            f"traced {program.name}: {len(program.eqns)} equations, "
            f"{len(program.params)} inputs in {time.perf_counter() - start:.1f}s"
        )
    single = traced.out_tree.cls is None
    entry = Entry(
        program,
        leaf_wrt,
        wrt,
        single,
        program_format,
        in_types=tuple(p.type for p in program.params),
        out_types=tuple(v.type for v in program.outs),
        in_trees=traced.in_trees,
        out_tree=traced.out_tree,
        leaf_counts=traced.leaf_counts,
        captured=tuple(np.asarray(c) for c in traced.captured),
    )
    return entry


def announce(message: str) -> None:
    """A line about long work: on stderr when it is a terminal, else in the log."""
    if sys.stderr.isatty():
        print(f"shax: {message}", file=sys.stderr)
    else:
        log.info(message)


def _program_entry(program: Program, wrt: Any, single: bool, program_format: str) -> Entry:
    in_types = tuple(p.type for p in program.params)
    out_types = tuple(v.type for v in program.outs)
    return Entry(
        program,
        resolve_wrt(in_types, wrt),
        wrt,
        single,
        program_format,
        in_types=in_types,
        out_types=out_types,
    )


def memo_key(f, specs: Sequence[Any], wrt: Any, program_format: str):
    """The memo key of a compiled function, or None when ``f`` cannot be hashed."""
    wrt_key = wrt if wrt is None or isinstance(wrt, int) else tuple(wrt)
    if isinstance(f, str | Program):
        key = (f, wrt_key, program_format)
    else:
        key = (f, call_types(as_examples(specs)), wrt_key, program_format)
    try:
        hash(key)
    except TypeError:
        return None
    return key


def zeros_of(types: Sequence[Type]) -> list[np.ndarray]:
    return [np.zeros(t.shape, t.np_dtype) for t in types]


def main_outputs(entry: Entry, has_aux: bool) -> tuple[int, PyTreeDef | None]:
    """``(number of main output leaves, aux tree)``: with ``has_aux`` f returns (out, aux)."""
    tree = entry.out_tree or LEAF
    if not has_aux:
        return len(entry.out_types), None
    if tree.cls is not tuple or len(tree.children) != 2:
        raise ShaxError("with has_aux=True the function must return a pair (output, aux)")
    return tree.children[0].num_leaves, tree.children[1]


def _main_tree(entry: Entry, has_aux: bool) -> PyTreeDef:
    tree = entry.out_tree or LEAF
    if entry.out_tree is None and not entry.single:
        return tree_flatten(tuple(range(len(entry.out_types))))[1]
    return tree.children[0] if has_aux else tree


def _check_float(entry: Entry, leaves: Sequence[int]) -> None:
    for i in leaves:
        t = entry.in_types[i]
        if not t.is_float:
            raise ShaxError(
                f"grad requires float inputs; {entry.input_names[i]} :: {t} is not (as in JAX)"
            )


def restructure(result: MinimizeResult, entry: Entry, x0: Any) -> MinimizeResult:
    """``result`` with params (flat inputs, as the server sends them) in ``x0``'s structure."""

    def shaped(flat):
        if flat is None:
            return None
        n = sum(entry.leaf_counts) if entry.leaf_counts else len(flat)
        args = entry.per_argument(range(len(entry.in_trees) or n), list(flat[:n]))
        if isinstance(x0, tuple):
            return tuple(args)
        return list(args) if isinstance(x0, list) else args[0]

    trajectory = [Step(s.step, s.value, shaped(s.params)) for s in result.trajectory]
    return MinimizeResult(shaped(result.params), result.value, trajectory)


def minimize_x0(x0: Any) -> list[Any]:
    """``x0`` as a list of arguments: a tuple or list is one argument per parameter; anything
    else (an array, a scalar) is the single argument."""
    return list(x0) if isinstance(x0, tuple | list) else [x0]


Flow = Generator[Call, httpx.Response, Any]


class BaseClient:
    """Configuration and flows shared by the sync and async clients (no I/O here).

    A subclass names its httpx client class in ``http_class`` (``httpx.Client`` or
    ``httpx.AsyncClient``); ``transport`` is a transport of the matching kind and ``http`` a
    client of that class to use as is, which this client then does not close.
    """

    http_class: type[httpx.Client] | type[httpx.AsyncClient]

    def __init__(
        self,
        base_url: str = "http://127.0.0.1:8000",
        *,
        api_key: str | None = None,
        timeout: float | httpx.Timeout | None = DEFAULT_TIMEOUT,
        transport: httpx.BaseTransport | httpx.AsyncBaseTransport | None = None,
        http: httpx.Client | httpx.AsyncClient | None = None,
        retries: int = 3,
        backoff: float = 0.1,
        max_backoff: float = 5.0,
        binary_threshold: int = DEFAULT_BINARY_THRESHOLD,
        program_format: str = "text",
        compile_timeout: float | None = DEFAULT_COMPILE_TIMEOUT,
    ):
        if program_format not in ("text", "graph"):
            raise ValueError("program_format must be 'text' (IR text) or 'graph' (JSON graph)")
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        # uploading compiles on the server (the AD pipeline, the plans): its own timeout,
        # separate from the per-call one
        self.compile_timeout = compile_timeout
        self.retry = RetryPolicy(retries=retries, backoff=backoff, max_backoff=max_backoff)
        self.binary_threshold = binary_threshold
        self.program_format = program_format
        self.headers = {"user-agent": USER_AGENT, "accept": "application/json"}
        if api_key is not None:
            self.headers["x-api-key"] = api_key
        self._entries: dict[Any, Entry] = {}
        self._hessian_fns: dict[Any, Any] = {}
        self.uploads = 0  # POST /v1/programs sent by this client (first uploads and re-uploads)
        self._owns_http = http is None
        self._http = http or self.http_class(timeout=timeout, transport=transport)

    # -- memo ------------------------------------------------------------------------------

    def _entry_for(self, f, specs: Sequence[Any], wrt: Any) -> tuple[Entry, bool]:
        """(entry, needs upload): the memoised entry of ``f`` at these types, traced if new."""
        key = memo_key(f, specs, wrt, self.program_format)
        entry = self._entries.get(key) if key is not None else None
        if entry is not None and entry.id is not None:
            return entry, False
        entry = trace_entry(f, specs, wrt, self.program_format)
        if key is not None:
            self._entries[key] = entry
        return entry, True

    # -- flows -----------------------------------------------------------------------------

    def _upload_flow(self, entry: Entry) -> Flow:
        """POST /v1/programs (idempotent: the id is a content hash) and keep the id."""
        self.uploads += 1
        doc = entry.upload_doc()
        large = entry.program is not None and len(entry.program.eqns) >= LARGE_PROGRAM
        start = time.perf_counter()
        if large:
            announce(
                f"uploading {entry.name}: {len(entry.program.eqns)} equations; the server "
                "compiles it once (later calls reuse it)"
            )
        timeout = self.compile_timeout if self.compile_timeout is not None else self.timeout
        response = yield Call("POST", "/v1/programs", doc, timeout=timeout)
        raise_for_problem(response)
        if large:
            announce(f"compiled {entry.name} in {time.perf_counter() - start:.1f}s")
        doc, _ = parse_body(response)
        entry.id = doc["id"]
        entry.adopt_signature(doc.get("signature") or {})
        entry.cached = doc.get("cached")
        return entry

    def _with_reupload(self, entry: Entry, make_call) -> Flow:
        """Send ``make_call()``; after a 404 (the id was evicted or the server restarted),
        upload the program again and retry once."""
        if entry.id is None:
            yield from self._upload_flow(entry)
        response = yield make_call()
        if response.status_code == 404:
            yield from self._upload_flow(entry)
            response = yield make_call()
        raise_for_problem(response)
        return response

    def _tensor_call(self, entry: Entry, action: str, members: dict, out_types) -> Call:
        doc, chunks = encode_members(members, self.binary_threshold)
        if nbytes(out_types) >= self.binary_threshold:
            doc["parameters"] = {"binary_data_output": True}
        return Call("POST", f"/v1/programs/{entry.id}/{action}", doc, tuple(chunks))

    def _invoke_flow(self, entry: Entry, action: str, members: dict, out_types) -> Flow:
        """POST a tensor body to ``/v1/programs/{id}/{action}``; the decoded tensor members."""
        response = yield from self._with_reupload(
            entry, lambda: self._tensor_call(entry, action, members, out_types)
        )
        doc, tail = parse_body(response)
        return decode_tensor_doc(doc, tail)

    def _inputs(self, entry: Entry, args: Sequence[Any]) -> list[tuple[str, np.ndarray]]:
        """Input tensors named as the program's parameters (``x``, ``params.w1``...)."""
        arrays = entry.leaves_of(args)
        return list(zip(entry.input_names, arrays, strict=True))

    def _eval_flow(self, entry: Entry, args: Sequence[Any]) -> Flow:
        members = {"inputs": self._inputs(entry, args)}
        out = yield from self._invoke_flow(entry, "eval", members, entry.out_types)
        return out["outputs"]

    def _vjp_flow(self, entry: Entry, args: Sequence[Any], cotangents) -> Flow:
        if cotangents is None:
            if not all(t.shape == () and t.is_float for t in entry.out_types):
                raise ValueError("cotangents are required unless every output is a float scalar")
            cts = [np.ones((), t.np_dtype) for t in entry.out_types]
        else:
            cts = list(cotangents) if isinstance(cotangents, tuple | list) else [cotangents]
            cts = as_typed_all(cts, entry.out_types, "cotangents")
        members = {
            "inputs": self._inputs(entry, args),
            "cotangents": [(f"ct{i}", c) for i, c in enumerate(cts)],
        }
        out_types = entry.out_types + tuple(entry.in_types[i] for i in entry.wrt)
        out = yield from self._invoke_flow(entry, "vjp", members, out_types)
        return out["outputs"], out["gradients"]

    def _jvp_flow(self, entry: Entry, args: Sequence[Any], tangents: Sequence[Any]) -> Flow:
        tangent_types = [entry.in_types[i] for i in entry.wrt]
        ts = as_typed_all(list(tangents), tangent_types, "tangents (one per wrt input)")
        names = entry.input_names
        members = {
            "inputs": self._inputs(entry, args),
            "tangents": [(f"t_{names[i]}", t) for i, t in zip(entry.wrt, ts, strict=True)],
        }
        out = yield from self._invoke_flow(entry, "jvp", members, entry.out_types * 2)
        tangent_key = next(k for k in out if k != "outputs")
        return out["outputs"], out[tangent_key]

    def _stages_flow(self, entry: Entry) -> Flow:
        response = yield from self._with_reupload(
            entry, lambda: Call("GET", f"/v1/programs/{entry.id}")
        )
        doc, _ = parse_body(response)
        return dict(doc.get("stages") or {})

    def _minimize_call(self, entry: Entry, x0: Sequence[Any], options: dict) -> Call:
        # every input travels (the data too, unchanged); the server moves only the wrt ones
        doc, chunks = encode_members({"x0": self._inputs(entry, x0)}, self.binary_threshold)
        doc.update(options)
        return Call("POST", f"/v1/programs/{entry.id}/minimize", doc, tuple(chunks), stream=True)

    # -- the transformations, as JAX spells them (flows shared by both clients) -----------

    def _compiled_flow(self, f, args: Sequence[Any], argnums: Any) -> Flow:
        entry, new = self._entry_for(f, args, argnums)
        if new:
            yield from self._upload_flow(entry)
        return entry

    def _value_and_grad_flow(self, f, args, argnums, has_aux: bool) -> Flow:
        nums = argnums_of(argnums, len(args))
        entry = yield from self._compiled_flow(f, args, nums)
        n_main, aux_tree = main_outputs(entry, has_aux)
        _check_float(entry, entry.leaf_indices(nums))
        self._check_scalar(entry, n_main)
        cts = [np.ones((), entry.out_types[0].np_dtype)] + zeros_of(entry.out_types[1:])
        outputs, grads = yield from self._vjp_flow(entry, args, cts)
        trees = entry.per_argument(nums, grads)
        grad = trees[0] if isinstance(argnums, int) else tuple(trees)
        value = outputs[0]
        if has_aux:
            value = (value, tree_unflatten(aux_tree, list(outputs[1:])))
        return value, grad

    def _vjp_outputs_flow(self, f, primals, has_aux: bool) -> Flow:
        """``(entry, outputs tree, aux)`` for ``vjp``: the program compiled, run forward."""
        entry = yield from self._compiled_flow(f, primals, None)
        outputs = yield from self._eval_flow(entry, primals)
        n_main, aux_tree = main_outputs(entry, has_aux)
        main = _main_tree(entry, has_aux)
        out = tree_unflatten(main, list(outputs[:n_main]))
        aux = tree_unflatten(aux_tree, list(outputs[n_main:])) if has_aux else None
        return entry, out, aux

    def _pullback_flow(self, entry: Entry, primals, cotangent, has_aux: bool) -> Flow:
        main = _main_tree(entry, has_aux)
        cts, tree = tree_flatten(cotangent)
        if tree != main:
            raise ValueError(f"the cotangent's structure {tree} differs from the output's {main}")
        n_main = main.num_leaves
        cts = list(cts) + zeros_of(entry.out_types[n_main:])
        _, grads = yield from self._vjp_flow(entry, primals, cts)
        return tuple(entry.scatter_per_argument(grads))

    def _jvp_user_flow(self, f, primals, tangents, has_aux: bool) -> Flow:
        primals, tangents = tuple(primals), tuple(tangents)
        if len(primals) != len(tangents):
            raise ValueError(f"jvp got {len(primals)} primals and {len(tangents)} tangents")
        entry = yield from self._compiled_flow(f, primals, None)
        t_leaves: list = []
        for tree, t in zip(entry.in_trees, tangents, strict=True):
            ls, got = tree_flatten(t)
            if got != tree:
                raise ValueError(f"a tangent's structure {got} differs from its primal's {tree}")
            t_leaves += ls
        outs, touts = yield from self._jvp_flow(entry, primals, [t_leaves[i] for i in entry.wrt])
        n_main, aux_tree = main_outputs(entry, has_aux)
        main = _main_tree(entry, has_aux)
        out = tree_unflatten(main, list(outs[:n_main]))
        tout = tree_unflatten(main, list(touts[:n_main]))
        if has_aux:
            return out, tout, tree_unflatten(aux_tree, list(outs[n_main:]))
        return out, tout

    def _hessian_flow(self, f, args, argnums) -> Flow:
        """The Hessian: the gradient program is traced here, the server differentiates it
        again (one VJP per gradient element), as ``jacrev(grad(f))``."""
        from shax_core.api import grad as local_grad

        nums = argnums_of(argnums, len(args))
        key = ("hessian", f, nums)
        g = self._hessian_fns.get(key)
        if g is None:
            g = self._hessian_fns[key] = local_grad(f, argnums)
        entry = yield from self._compiled_flow(g, args, nums)
        wrt_types = [entry.in_types[i] for i in entry.wrt]
        n_out = len(entry.out_types)
        rows: list[list[list[np.ndarray]]] = [[[] for _ in wrt_types] for _ in range(n_out)]
        for j, t in enumerate(entry.out_types):
            for k in range(t.size):
                cts = zeros_of(entry.out_types)
                cts[j].reshape(-1)[k] = 1
                _, grads = yield from self._vjp_flow(entry, args, cts)
                for i, gi in enumerate(grads):
                    rows[j][i].append(np.asarray(gi))
        blocks = []
        for j, t in enumerate(entry.out_types):
            per_leaf = [
                np.stack(rows[j][i]).reshape(t.shape + u.shape)
                if rows[j][i]
                else np.zeros(t.shape + u.shape, u.np_dtype)
                for i, u in enumerate(wrt_types)
            ]
            trees = entry.per_argument(nums, per_leaf)
            blocks.append(trees[0] if isinstance(argnums, int) else tuple(trees))
        return tree_unflatten(entry.out_tree, blocks)

    # -- checks ----------------------------------------------------------------------------

    @staticmethod
    def _check_scalar(entry: Entry, n_main: int = 1) -> None:
        outs = entry.out_types[:n_main] if n_main == 1 else entry.out_types
        if len(outs) != 1 or outs[0].shape != () or not outs[0].is_float:
            raise ShaxError(
                f"grad needs a function with one float scalar output; {entry.name} "
                "returns " + ", ".join(str(t) for t in outs)
            )


# ---------------------------------------------------------------------------------------------
# minimize: the NDJSON stream, read line by line


@dataclass
class Step:
    """One point of a trajectory: ``step`` is 1-based (the first point is the start)."""

    step: int
    value: np.floating  # a NumPy scalar of the output's dtype (prints like the seed)
    params: Any  # in x0's structure (None when the server did not report this step's)


@dataclass
class MinimizeResult:
    params: Any  # in x0's structure
    value: np.ndarray
    trajectory: list[Step] = field(repr=False)

    @property
    def values(self) -> list[np.floating]:
        return [s.value for s in self.trajectory]


def _arrays(objs: Any, member: str) -> list[np.ndarray]:
    return decode_tensors(objs, BinaryReader(memoryview(b"")), member=member).arrays


class MinimizeReader:
    """Turns the NDJSON lines of ``/minimize`` into Steps and, at the end, a MinimizeResult.

    Progress lines carry params (every ``every`` steps); the final line carries every step's
    value, so the trajectory has all steps, with params where they were reported."""

    def __init__(self, value_dtype: Any = np.float32) -> None:
        self.value_dtype = np.dtype(value_dtype)
        self.reported: dict[int, Step] = {}
        self.result: MinimizeResult | None = None

    def feed(self, line: str | bytes) -> Step | None:
        """Read one line; return the Step it reports (None for the final or a blank line)."""
        if not line or not line.strip():
            return None
        doc = orjson.loads(line)
        if "error" in doc:
            problem = doc["error"] if isinstance(doc["error"], dict) else {"detail": doc["error"]}
            raise errors.error_from_problem(int(problem.get("status", 500)), problem)
        if doc.get("done"):
            trajectory = [
                self.reported.get(int(p["step"])) or Step(int(p["step"]), self._value(p), None)
                for p in doc.get("trajectory") or []
            ] or sorted(self.reported.values(), key=lambda s: s.step)
            value = np.asarray(self._value(doc))
            self.result = MinimizeResult(_arrays(doc["params"], "params"), value, trajectory)
            return None
        params = _arrays(doc["params"], "params") if doc.get("params") is not None else None
        step = Step(int(doc["step"]), self._value(doc), params)
        self.reported[step.step] = step
        return step

    def _value(self, doc: dict) -> np.floating:
        return self.value_dtype.type(float(doc["value"]))  # float() reads "NaN"/"Infinity" too

    def finish(self) -> MinimizeResult:
        if self.result is None:
            raise errors.ShaxClientError("the minimize stream ended before its final line")
        return self.result


def make_progress(total: int, enabled: bool):
    """A tqdm bar (or a no-op when disabled or tqdm is missing)."""
    if enabled:
        try:
            from tqdm.auto import tqdm

            return tqdm(total=total, desc="minimize", unit="step")
        except ImportError:
            pass
    return _NoProgress()


class _NoProgress:
    n = 0

    def update(self, n: int = 1) -> None:
        self.n += n

    def set_postfix(self, **_: Any) -> None:
        pass

    def close(self) -> None:
        pass


def minimize_options(steps: int, lr: float, optimizer: str, every: int, hyper: dict) -> dict:
    if not isinstance(steps, int) or steps < 1:
        raise ValueError("steps must be a positive integer")
    return {
        "steps": steps,
        "lr": float(lr),
        "optimizer": optimizer,
        "every": int(every),
        "hyper": {k: float(v) for k, v in hyper.items()},
        "report": "moving",  # the data stays here: only the moving params come back
    }


def complete(result: MinimizeResult, entry: Entry, args: Sequence[Any]) -> MinimizeResult:
    """``result`` (moving params only, as reported) with every input's value."""
    leaves = entry.leaves_of(args)
    trajectory = [
        Step(s.step, s.value, full_params(entry, leaves, s.params)) for s in result.trajectory
    ]
    return MinimizeResult(full_params(entry, leaves, result.params), result.value, trajectory)


def full_params(entry: Entry, x0_leaves: Sequence[np.ndarray], moving) -> list[np.ndarray]:
    """Every input's value: the moving (wrt) ones the server reported, the others as sent."""
    if moving is None:
        return None
    full = list(x0_leaves)
    for i, x in zip(entry.wrt, moving, strict=True):
        full[i] = x
    return full
