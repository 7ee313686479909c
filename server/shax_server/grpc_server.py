"""The KServe v2 / Triton gRPC inference service (``inference.GRPCInferenceService``).

Served with ``grpcio``'s asyncio server on the HTTP app's event loop (``--grpc-port``), from the
service definitions tritonclient ships (``tritonclient.grpc.service_pb2``), so that
``tritonclient.grpc`` works unchanged. It shares everything with the HTTP server: the program
cache, the model registry, the worker pool and its limits, statistics and metrics. The largest
message accepted is ``max_body_bytes``; tensors obey ``max_tensor_elements``. With API keys set,
every call but ServerLive and ServerReady needs one as gRPC metadata
(``x-api-key: <key>`` or ``authorization: Bearer <key>``).

Implemented: ServerLive, ServerReady, ModelReady, ServerMetadata, ModelMetadata, ModelInfer
(typed ``contents`` or ``raw_input_contents``; outputs are sent as ``raw_output_contents``),
ModelConfig, ModelStatistics, RepositoryIndex, RepositoryModelLoad, RepositoryModelUnload.
The rest (streaming, shared memory, trace and log settings) answer UNIMPLEMENTED.
Problems map to status codes as Triton's do (400 INVALID_ARGUMENT, 404 NOT_FOUND, 503
UNAVAILABLE, ...); the details are the problem's ``detail``.
"""

from __future__ import annotations

import functools
import logging
from typing import Any

import grpc
from google.protobuf import json_format
from tritonclient.grpc import model_config_pb2 as mc
from tritonclient.grpc import service_pb2 as pb
from tritonclient.grpc import service_pb2_grpc as rpc

from shax_core.ir import ShaxError
from shax_core.wire import encode_tensor
from shax_server.deps import ServiceState, _matches
from shax_server.models import (
    check_model_control,
    config_doc,
    decode_inputs,
    find_model,
    load_config,
    load_model,
    metadata_doc,
    output_types,
    run_inference,
    stats_doc,
)
from shax_server.problems import Problem, problem_for
from shax_server.routes.oip import EXTENSIONS, _version
from shax_server.service import check_output

log = logging.getLogger("shax_server")

STATUS = {
    400: grpc.StatusCode.INVALID_ARGUMENT,
    401: grpc.StatusCode.UNAUTHENTICATED,
    404: grpc.StatusCode.NOT_FOUND,
    409: grpc.StatusCode.ALREADY_EXISTS,
    413: grpc.StatusCode.RESOURCE_EXHAUSTED,
    415: grpc.StatusCode.INVALID_ARGUMENT,
    503: grpc.StatusCode.UNAVAILABLE,
}
CONTENTS = {  # InferTensorContents field of each datatype shax takes
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    "BOOL": "bool_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
}


def _call(protected: bool):
    """Wrap a servicer method: API-key check, then problems and core errors as statuses."""

    def wrap(method):
        @functools.wraps(method)
        async def run(self, request, context):
            try:
                if protected:
                    self.authorize(context)
                return await method(self, request, context)
            except Problem as p:
                await context.abort(STATUS.get(p.status, grpc.StatusCode.INTERNAL), p.detail)
            except ShaxError as e:
                p = problem_for(e)
                await context.abort(STATUS.get(p.status, grpc.StatusCode.INTERNAL), p.detail)

        return run

    return wrap


def _version_arg(version: str) -> str | None:
    return version or None  # tritonclient sends "" for "the server's choice"


def _meta(doc: dict) -> pb.ModelMetadataResponse.TensorMetadata:
    return pb.ModelMetadataResponse.TensorMetadata(
        name=doc["name"], datatype=doc["datatype"], shape=doc["shape"]
    )


def _tensors(request: pb.ModelInferRequest) -> tuple[list[dict], dict[int, memoryview]]:
    """Tensor objects per input, as the HTTP path's decoding takes them, and the raw bytes of
    each (by the object's id) when the request carries ``raw_input_contents``."""
    raw = request.raw_input_contents
    if raw and len(raw) != len(request.inputs):
        raise Problem(
            400,
            "Invalid request",
            f"raw_input_contents has {len(raw)} entries for {len(request.inputs)} inputs",
            kind="invalid-request",
        )
    objs, chunks = [], {}
    for i, tensor in enumerate(request.inputs):
        obj: dict[str, Any] = {
            "name": tensor.name,
            "datatype": tensor.datatype,
            "shape": list(tensor.shape),
        }
        if raw:
            obj["parameters"] = {"binary_data_size": len(raw[i])}
            chunks[id(obj)] = memoryview(raw[i])
        elif tensor.datatype in CONTENTS:
            obj["data"] = getattr(tensor.contents, CONTENTS[tensor.datatype])
        objs.append(obj)
    return objs, chunks


class InferenceService(rpc.GRPCInferenceServiceServicer):
    def __init__(self, state: ServiceState):
        self.state = state

    def authorize(self, context) -> None:
        keys = self.state.settings.api_keys
        if not keys:
            return
        metadata = dict(context.invocation_metadata() or ())
        candidate = metadata.get("x-api-key")
        auth = metadata.get("authorization", "")
        if candidate is None and auth.lower().startswith("bearer "):
            candidate = auth[7:].strip()
        if candidate is None or not _matches(candidate, keys):
            raise Problem(
                401,
                "Unauthorized",
                "missing or invalid API key: send it as x-api-key or authorization: Bearer "
                "metadata",
                kind="unauthorized",
            )

    # -- health and metadata

    @_call(protected=False)
    async def ServerLive(self, request, context):
        return pb.ServerLiveResponse(live=True)

    @_call(protected=False)
    async def ServerReady(self, request, context):
        return pb.ServerReadyResponse(ready=self.state.ready)

    @_call(protected=True)  # as GET /v2: only the health paths are open (SHAX_OPEN_PATHS)
    async def ServerMetadata(self, request, context):
        return pb.ServerMetadataResponse(name="shax", version=_version(), extensions=EXTENSIONS)

    @_call(protected=True)
    async def ModelReady(self, request, context):
        try:
            await find_model(self.state, request.name, _version_arg(request.version))
        except Problem as p:
            if p.status != 404:
                raise
            return pb.ModelReadyResponse(ready=False)
        return pb.ModelReadyResponse(ready=True)

    @_call(protected=True)
    async def ModelMetadata(self, request, context):
        model = await find_model(self.state, request.name, _version_arg(request.version))
        doc = metadata_doc(self.state, model)
        return pb.ModelMetadataResponse(
            name=doc["name"],
            versions=doc.get("versions", []),
            platform=doc["platform"],
            inputs=[_meta(t) for t in doc["inputs"]],
            outputs=[_meta(t) for t in doc["outputs"]],
        )

    @_call(protected=True)
    async def ModelConfig(self, request, context):
        model = await find_model(self.state, request.name, _version_arg(request.version))
        config = json_format.ParseDict(config_doc(model), mc.ModelConfig())
        return pb.ModelConfigResponse(config=config)

    @_call(protected=True)
    async def ModelStatistics(self, request, context):
        doc = await stats_doc(self.state, request.name or None, _version_arg(request.version))
        return json_format.ParseDict(doc, pb.ModelStatisticsResponse())

    # -- the repository

    @_call(protected=True)
    async def RepositoryIndex(self, request, context):
        rows = self.state.registry.index(request.ready)
        return pb.RepositoryIndexResponse(
            models=[pb.RepositoryIndexResponse.ModelIndex(**row) for row in rows]
        )

    @_call(protected=True)
    async def RepositoryModelLoad(self, request, context):
        params = {}
        if "config" in request.parameters:
            params["config"] = request.parameters["config"].string_param
        await load_model(self.state, request.model_name, load_config(params))
        return pb.RepositoryModelLoadResponse()

    @_call(protected=True)
    async def RepositoryModelUnload(self, request, context):
        registry = self.state.registry
        check_model_control(self.state)
        async with registry.lock(request.model_name):
            registry.unload(request.model_name)
        return pb.RepositoryModelUnloadResponse()

    # -- inference

    @_call(protected=True)
    async def ModelInfer(self, request, context):
        state = self.state
        model = await find_model(state, request.model_name, _version_arg(request.model_version))
        names = model.names
        available = [*names.outputs, *names.gradients]
        wanted = [o.name for o in request.outputs] or available
        unknown = [n for n in wanted if n not in available]
        if unknown:
            raise Problem(
                400,
                "Invalid request",
                f"unknown output {unknown[0]!r}; the model has {', '.join(available)}",
                kind="invalid-request",
            )
        out_types = output_types(model)
        check_output(state.settings, [out_types[n] for n in wanted], True)
        limit = state.settings.max_tensor_elements

        async def decode(model):
            objs, chunks = _tensors(request)
            return decode_inputs(model, objs, lambda obj: chunks.get(id(obj)), limit)

        async def respond(results):
            response = pb.ModelInferResponse(
                model_name=model.name, model_version=model.version or "", id=request.id
            )
            for name in wanted:
                obj, raw = encode_tensor(name, results[name], binary=True)
                response.outputs.add(name=name, datatype=obj["datatype"], shape=obj["shape"])
                response.raw_output_contents.append(raw)
            return response

        return await run_inference(state, model, decode, respond)


def make_server(state: ServiceState) -> grpc.aio.Server:
    """The gRPC server for ``state`` (not started), bound to ``settings.host:grpc_port``."""
    settings = state.settings
    limit = settings.max_body_bytes
    server = grpc.aio.server(
        options=[
            ("grpc.max_receive_message_length", limit),
            ("grpc.max_send_message_length", -1),
            # one process: a port in use is an error; several uvicorn workers share the port
            ("grpc.so_reuseport", 1 if settings.workers > 1 else 0),
        ]
    )
    rpc.add_GRPCInferenceServiceServicer_to_server(InferenceService(state), server)
    address = f"{settings.host}:{settings.grpc_port}"
    if server.add_insecure_port(address) == 0:
        raise RuntimeError(f"cannot listen for gRPC on {address}")
    return server
