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

from collections.abc import Generator, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx
import numpy as np
import orjson

from shax_client import errors
from shax_client._arrays import as_typed_all, example_types, nbytes
from shax_core import Program, ShaxError, Type, infer, trace
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
DEFAULT_BINARY_THRESHOLD = 64 * 1024  # bytes; a tensor at least this large goes binary
USER_AGENT = "shax-client/0.1"

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
    if call.doc is None:
        return http.build_request(call.method, url, headers=headers)
    body, body_headers = join_body(call.doc, list(call.chunks))
    return http.build_request(call.method, url, content=body, headers={**headers, **body_headers})


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


def trace_entry(f, specs: Sequence[Any], wrt: Any, program_format: str) -> Entry:
    """Trace ``f`` at the specs' types (locally, with shax_core) into an Entry to upload.

    ``f`` may also be a ``shax_core.Program`` or IR text (then ``specs`` are ignored)."""
    if isinstance(f, str):
        wrt_list = None if wrt is None else resolve_wrt_indices(wrt)
        return Entry(None, wrt_list, wrt, True, program_format, text=f)
    if isinstance(f, Program):
        return _program_entry(infer(f), wrt, len(f.outs) == 1, program_format)
    types = example_types(specs)
    returned: list[bool] = []

    def probe(*args):
        result = f(*args)
        returned.append(not isinstance(result, tuple | list))
        return result

    probe.__name__ = getattr(f, "__name__", "f")
    program = infer(trace(probe, *types))
    return _program_entry(program, wrt, returned[0], program_format)


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


def memo_key(f, types: Sequence[Type], wrt: Any, program_format: str):
    """The memo key of a compiled function, or None when ``f`` cannot be hashed."""
    wrt_key = wrt if wrt is None or isinstance(wrt, int) else tuple(wrt)
    key = (f, tuple(types), wrt_key, program_format)
    try:
        hash(key)
    except TypeError:
        return None
    return key


def minimize_x0(x0: Any) -> list[Any]:
    """``x0`` as a list of arguments: a tuple or list is one argument per parameter; anything
    else (an array, a scalar) is the single argument."""
    return list(x0) if isinstance(x0, tuple | list) else [x0]


Flow = Generator[Call, httpx.Response, Any]


class BaseClient:
    """Configuration and flows shared by the sync and async clients (no I/O here)."""

    def __init__(
        self,
        base_url: str = "http://127.0.0.1:8000",
        *,
        api_key: str | None = None,
        timeout: float | httpx.Timeout | None = DEFAULT_TIMEOUT,
        retries: int = 3,
        backoff: float = 0.1,
        max_backoff: float = 5.0,
        binary_threshold: int = DEFAULT_BINARY_THRESHOLD,
        program_format: str = "text",
    ):
        if program_format not in ("text", "graph"):
            raise ValueError("program_format must be 'text' (IR text) or 'graph' (JSON graph)")
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self.retry = RetryPolicy(retries=retries, backoff=backoff, max_backoff=max_backoff)
        self.binary_threshold = binary_threshold
        self.program_format = program_format
        self.headers = {"user-agent": USER_AGENT, "accept": "application/json"}
        if api_key is not None:
            self.headers["x-api-key"] = api_key
        self._entries: dict[Any, Entry] = {}
        self.uploads = 0  # POST /v1/programs sent by this client (first uploads and re-uploads)

    # -- memo ------------------------------------------------------------------------------

    def _entry_for(self, f, specs: Sequence[Any], wrt: Any) -> tuple[Entry, bool]:
        """(entry, needs upload): the memoised entry of ``f`` at these types, traced if new."""
        key = memo_key(f, example_types(specs), wrt, self.program_format)
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
        response = yield Call("POST", "/v1/programs", entry.upload_doc())
        raise_for_problem(response)
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
        arrays = as_typed_all(args, entry.in_types, "arguments")
        return [(f"a{i}", a) for i, a in enumerate(arrays)]

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
        members = {
            "inputs": self._inputs(entry, args),
            "tangents": [(f"t_a{i}", t) for i, t in zip(entry.wrt, ts, strict=True)],
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
        doc, chunks = encode_members({"x0": self._inputs(entry, x0)}, self.binary_threshold)
        doc.update(options)
        return Call("POST", f"/v1/programs/{entry.id}/minimize", doc, tuple(chunks), stream=True)

    # -- checks ----------------------------------------------------------------------------

    @staticmethod
    def _check_scalar(entry: Entry) -> None:
        outs = entry.out_types
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
    params: list[np.ndarray] | None


@dataclass
class MinimizeResult:
    params: list[np.ndarray]
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
    }
