"""Models as the Open Inference Protocol and Triton see them, for the HTTP and gRPC front ends.

A request names a model (a registered name, or a bare content id) and maybe a version;
``find_model`` resolves it to a ``Model`` (compiled entry, name, version, tensor names).
``run_inference`` is the one inference path: decode and check the input tensors, evaluate the
VJP in the worker pool, encode the response, and count the request in Triton's statistics and
Prometheus series. Repository loading (``load_model``, ``load_repository``) compiles every
version of a model before it answers, so a model is READY only once it can be evaluated.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import numpy as np

from shax_core.ir import ShaxError, Type
from shax_core.wire import decode_tensor
from shax_server.compilation import (
    Compiled,
    Source,
    pipeline_version,
    runs_inline,
    tensor_meta,
)
from shax_server.deps import ServiceState
from shax_server.problems import Problem, invalid_request, not_found
from shax_server.repository import (
    LOADING,
    READY,
    UNAVAILABLE,
    Model,
    ModelState,
    Names,
    Timing,
    Version,
    check_config,
    check_name,
    names_for,
    read_model,
)
from shax_server.service import (
    check_tensor,
    default_cotangents,
    expect_tensor,
    find_program,
    run_vjp,
)

log = logging.getLogger("shax_server")

PLATFORM = "shax_vjp"
BACKEND = "shax"


async def _entry(state: ServiceState, source: Source) -> Compiled:
    entry, _ = await state.cache.get_or_build(source)
    return entry.named(source)  # the version's own parameter names, the shared compiled parts


def _model(version: Version, entry: Compiled) -> Model:
    return Model(entry, version.name, version.label, names_for(entry, version.config))


async def find_model(state: ServiceState, ref: str, label: str | None = None) -> Model:
    """The model ``ref`` names (version ``label``, else its latest), or the program whose
    content id ``ref`` is (which has no versions)."""
    version = state.registry.find(ref, label)
    if version is not None:
        return _model(version, await _entry(state, version.source))
    if label is not None:
        raise not_found(f"no model named {ref!r} (a program id has no versions)")
    entry = await find_program(state, ref)
    return Model(entry, ref, None, Names.of(entry))


async def name_program(
    state: ServiceState, entry: Compiled, name: Any, label: Any, config: dict | None = None
) -> Model:
    """Register ``entry`` as version ``label`` of model ``name`` (the next number when None).

    Versions are immutable: naming a label that holds another program is a 409."""
    name = check_name(name, "'name'")
    registry = state.registry
    if label is None:
        label = registry.next_label(name, entry.key)
    label = check_name(label, "'version'")
    existing = registry.models.get(name, {}).get(label)
    if existing is not None and existing.source.key != entry.key:
        raise Problem(
            409,
            "Conflict",
            f"version {label!r} of model {name!r} is another program ({existing.source.key}); "
            "versions are immutable: give a new version label",
            kind="conflict",
        )
    version = Version(name, label, entry.source, config or {}, "api")
    model = _model(version, entry)  # checks the config's names before anything is registered
    registry.add(version)
    return model


# ---------------------------------------------------------------------------------------------
# the repository


def check_model_control(state: ServiceState) -> None:
    """Load and unload requests need the explicit model-control mode (Triton's rule)."""
    if state.settings.model_control_mode != "explicit":
        raise Problem(
            400,
            "Invalid request",
            "explicit model load / unload is not allowed: the server runs with "
            "SHAX_MODEL_CONTROL_MODE=none (--model-control-mode explicit enables it)",
            kind="model-control",
        )


async def load_model(
    state: ServiceState, name: str, override: dict | None = None, startup: bool = False
) -> None:
    """(Re)load every version of repository model ``name``; on failure the versions that were
    serving stay (as Triton does) and the model's state says why."""
    registry = state.registry
    if registry.root is None:
        raise invalid_request(
            "no model repository is configured (shax serve --model-repository DIR)"
        )
    if not startup:
        check_model_control(state)
    check_name(name, "model name")
    async with registry.lock(name):
        previous = registry.states.get(name)
        registry.states[name] = ModelState(LOADING)
        try:
            # reading and preparing a model's versions: the large compile lane (any size)
            found = await state.pool.compile(
                read_model, registry.root, name, override, state.settings, cost=1 << 62
            )
            versions = []
            for label, source, config in found:
                entry = await _entry(state, source)
                version = Version(name, label, source, config, "repository")
                _model(version, entry)  # the names must fit the program
                versions.append(version)
        except (Problem, ShaxError) as e:
            reason = e.detail if isinstance(e, Problem) else str(e)
            if name in registry.models:
                registry.states[name] = previous or ModelState(READY)
            else:
                registry.states[name] = ModelState(UNAVAILABLE, reason)
            raise
        registry.models[name] = {v.label: v for v in versions}
        registry.states[name] = ModelState(READY)
        log.info("loaded model %s versions %s", name, ", ".join(v.label for v in versions))


async def load_repository(state: ServiceState) -> None:
    """Load every model of the repository at start-up; a model that fails is logged and left
    UNAVAILABLE (its reason in the repository index), the others serve."""
    for name in state.registry.repository_names():
        try:
            await load_model(state, name, startup=True)
        except (Problem, ShaxError) as e:
            log.error("model %s failed to load: %s", name, getattr(e, "detail", e))


def load_config(parameters: Any) -> dict | None:
    """The ``config`` parameter of a load request (a JSON string, as tritonclient sends it)."""
    if not isinstance(parameters, dict) or parameters.get("config") is None:
        return None
    import orjson

    raw = parameters["config"]
    try:
        doc = orjson.loads(raw) if isinstance(raw, str | bytes) else raw
    except orjson.JSONDecodeError as e:
        raise Problem(
            400, "Invalid request", f"parameters.config is not JSON: {e}", kind="invalid-request"
        ) from None
    return check_config(doc, "parameters.config")


# ---------------------------------------------------------------------------------------------
# metadata, config, statistics


def _metas(names: Iterable[str], types: Iterable[Type]) -> list[dict]:
    return [tensor_meta(n, t) for n, t in zip(names, types, strict=True)]


def input_types(model: Model) -> dict[str, Type]:
    p = model.entry.program
    types = dict(zip(model.names.inputs, p.in_types, strict=True))
    types.update(zip(model.names.cotangents, p.out_types, strict=True))
    return types


def output_types(model: Model) -> dict[str, Type]:
    p = model.entry.program
    types = dict(zip(model.names.outputs, p.out_types, strict=True))
    wrt = model.entry.source.wrt
    types.update(zip(model.names.gradients, (p.params[i].type for i in wrt), strict=True))
    return types


def metadata_doc(state: ServiceState, model: Model) -> dict:
    doc: dict[str, Any] = {"name": model.name}
    if model.version is not None:
        doc["versions"] = state.registry.labels(model.name)
    doc["platform"] = PLATFORM
    doc["inputs"] = [tensor_meta(n, t) for n, t in input_types(model).items()]
    doc["outputs"] = [tensor_meta(n, t) for n, t in output_types(model).items()]
    return doc


def _config_tensor(name: str, t: Type) -> dict:
    meta = tensor_meta(name, t)
    # Triton's DataType enum spells every OIP datatype TYPE_<datatype> (TYPE_FP32, TYPE_INT64)
    return {"name": name, "data_type": f"TYPE_{meta['datatype']}", "dims": meta["shape"]}


def config_doc(model: Model) -> dict:
    """Triton's model configuration (``ModelConfig``, JSON field names) for a model."""
    source = model.entry.source
    params = {
        "content_id": source.key,
        "wrt": ",".join(str(i) for i in source.wrt),
        "residuals": source.residuals,
        "pipeline_version": pipeline_version(),
        "cotangents": ",".join(model.names.cotangents),
        "gradients": ",".join(model.names.gradients),
    }
    return {
        "name": model.name,
        "platform": PLATFORM,
        "backend": BACKEND,
        "version_policy": {"all": {}},
        "max_batch_size": 0,
        "input": [_config_tensor(n, t) for n, t in input_types(model).items()],
        "output": [_config_tensor(n, t) for n, t in output_types(model).items()],
        "parameters": {k: {"string_value": v} for k, v in params.items()},
    }


async def stats_doc(state: ServiceState, name: str | None, label: str | None) -> dict:
    """Triton's statistics response: every model version, one model's versions, or one."""
    registry = state.registry
    if name is None:
        return {"model_stats": [stats.doc(*key) for key, stats in registry.all_stats()]}
    if name in registry.models and label is None:
        keys = [(name, v) for v in registry.labels(name)]
    else:
        keys = [(await find_model(state, name, label)).stats_key]
    return {"model_stats": [registry.stats_for(k).doc(*k) for k in keys]}


# ---------------------------------------------------------------------------------------------
# inference


Decoded = dict[str, np.ndarray]


def decode_inputs(
    model: Model,
    objs: list,
    take: Callable[[Any], memoryview | None],
    max_elements: int,
    finish: Callable[[], None] = lambda: None,
) -> Decoded:
    """Tensor objects matched to the model's inputs and cotangents by name: every declared
    name, datatype and shape is checked against the program before any data is decoded (the
    data may be megabytes), then each is decoded (``take(obj)``: its binary bytes, if any, in
    order) and checked again. Complete or refused."""
    expected = input_types(model)
    names = model.names
    # the canonical names a0, a1, ... are accepted too (another client's names, same model)
    canonical = {f"a{i}": n for i, n in enumerate(names.inputs) if f"a{i}" not in expected}
    seen: set[str] = set()
    for i, obj in enumerate(objs):
        if not isinstance(obj, dict) or not isinstance(obj.get("name", ""), str):
            decode_tensor(obj, None, default_name=f"inputs[{i}]")  # raises, naming the problem
        given_name = obj.get("name", f"inputs[{i}]")
        name = canonical.get(given_name, given_name)
        if name not in expected:
            raise invalid_request(
                f"unknown input {name!r}; the model takes {', '.join(expected)}", tensor=name
            )
        if name in seen:
            raise invalid_request(f"input {name!r} is given twice", tensor=name)
        seen.add(name)
        expect_tensor(obj, name, expected[name], max_elements)
    missing = [n for n in names.inputs if n not in seen]
    if missing:
        raise invalid_request(f"missing input(s) {', '.join(missing)}", tensor=missing[0])
    if any(n in seen for n in names.cotangents):
        absent = [n for n in names.cotangents if n not in seen]
        if absent:
            raise invalid_request(f"missing cotangent(s) {', '.join(absent)}", tensor=absent[0])
    given: Decoded = {}
    for i, obj in enumerate(objs):
        name, array = decode_tensor(
            obj, take(obj), default_name=f"inputs[{i}]", max_elements=max_elements
        )
        name = canonical.get(name, name)
        given[name] = check_tensor(name, array, expected[name])
    finish()
    return given


def _arguments(model: Model, given: Decoded) -> tuple[list, list]:
    """(inputs, cotangents) in the program's order; ``given`` is complete (decode_inputs)."""
    names = model.names
    if not any(n in given for n in names.cotangents):
        return [given[n] for n in names.inputs], default_cotangents(model.entry)
    return [given[n] for n in names.inputs], [given[n] for n in names.cotangents]


def _timed_vjp(entry: Compiled, inputs, cotangents):
    start = time.perf_counter_ns()
    outs, grads = run_vjp(entry, inputs, cotangents)
    return outs, grads, start, time.perf_counter_ns()


def _failure_reason(e: BaseException) -> str:
    status = getattr(e, "status", 500)
    if status == 503:
        return "REJECTED"
    if isinstance(e, asyncio.CancelledError):
        return "CANCELED"
    return "OTHER" if status < 500 else "BACKEND"


async def run_inference(
    state: ServiceState,
    model: Model,
    decode: Callable[[Model], Awaitable[Decoded]],
    respond: Callable[[dict[str, np.ndarray]], Awaitable[Any]],
) -> Any:
    """Decode, evaluate, respond; counted in the model's statistics and metrics either way."""
    timing = Timing()
    stats = state.registry.stats_for(model.stats_key)
    labels = (model.name, model.version or "")
    metrics = state.metrics
    try:
        inputs, cotangents = _arguments(model, await decode(model))
        timing.decoded = time.perf_counter_ns()
        entry = model.entry
        small = runs_inline(entry.require_vjp(), state.settings)
        submitted = time.perf_counter_ns()
        outs, grads, started, ended = await state.pool.run(
            _timed_vjp, entry, inputs, cotangents, inline=small
        )
        names = model.names
        results = dict(zip(names.outputs + names.gradients, outs + grads, strict=True))
        encode_start = time.perf_counter_ns()
        response = await respond(results)
    except BaseException as e:
        took = time.perf_counter_ns() - timing.start
        stats.fail.add(took)
        metrics.triton_failure.inc(*labels, _failure_reason(e))
        metrics.triton_request_us.inc(*labels, amount=took / 1e3)
        raise
    end = time.perf_counter_ns()
    phases = {
        "queue": started - submitted,
        "compute_input": timing.decoded - timing.start,
        "compute_infer": ended - started,
        "compute_output": end - encode_start,
    }
    stats.success.add(end - timing.start)
    for phase, ns in phases.items():
        getattr(stats, phase).add(ns)
    stats.inference_count += 1
    stats.execution_count += 1
    stats.last_inference = time.time_ns() // 1_000_000
    metrics.triton_success.inc(*labels)
    metrics.triton_count.inc(*labels)
    metrics.triton_exec_count.inc(*labels)
    metrics.triton_request_us.inc(*labels, amount=(end - timing.start) / 1e3)
    for phase, ns in phases.items():
        metrics.triton_phase_us[phase].inc(*labels, amount=ns / 1e3)
    return response
