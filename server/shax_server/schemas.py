"""Pydantic models that document the API in OpenAPI. They are never used to validate tensor data
(bodies are parsed with orjson and converted with NumPy); request models are attached to routes
as schemas only, response models describe what the handlers build.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

Datatype = Literal["FP32", "FP64", "BOOL", "INT32", "INT64"]
TensorData = list[Any] | float | bool | str


class TensorParameters(BaseModel):
    model_config = ConfigDict(extra="allow")
    binary_data_size: int | None = Field(
        None, ge=0, description="bytes of this tensor in the binary tail (binary extension)"
    )


class Tensor(BaseModel):
    """An Open Inference Protocol tensor. ``data`` is row-major, flat or nested; NaN and the
    infinities are the strings "NaN", "Infinity", "-Infinity". With the binary extension, ``data``
    is absent and ``parameters.binary_data_size`` gives the byte count."""

    name: str
    shape: list[int]
    datatype: Datatype
    data: TensorData | None = None
    parameters: TensorParameters | None = None


class TensorIn(BaseModel):
    """A tensor in a native request: name, datatype and shape default to the program's."""

    name: str | None = None
    shape: list[int] | None = None
    datatype: Datatype | None = None
    data: TensorData | None = None
    parameters: TensorParameters | None = None


class TensorMeta(BaseModel):
    name: str
    datatype: Datatype
    shape: list[int]


class Signature(BaseModel):
    inputs: list[TensorMeta]
    outputs: list[TensorMeta]
    gradients: list[TensorMeta]
    wrt: list[int]


def _exactly_one(*members: tuple[str, dict]) -> dict:
    """JSON Schema for "exactly one of these members is given (not null)"."""
    return {
        "oneOf": [
            {
                "required": [name],
                "properties": {
                    name: kind,
                    **{other: {"type": "null"} for other, _ in members if other != name},
                },
            }
            for name, kind in members
        ]
    }


SOURCE = (("program", {"type": "string"}), ("graph", {"type": "object"}))


class ProgramSource(BaseModel):
    model_config = ConfigDict(json_schema_extra=_exactly_one(*SOURCE))

    program: str | None = Field(None, description="IR text (exactly one of program, graph)")
    graph: dict[str, Any] | None = Field(None, description="JSON graph (format_version 1)")
    wrt: list[int] | None = Field(None, description="input indices; default: every float input")


class CompileRequest(ProgramSource):
    name: str | None = Field(
        None, description="register the program as a version of this model (/v2/models/{name})"
    )
    version: str | None = Field(
        None, description="the version label (default: the next number); needs 'name'"
    )
    residuals: Literal["recompute", "save"] | None = Field(
        None, description="residual policy of the VJP (default recompute; part of the id)"
    )


class CompileResponse(BaseModel):
    id: str
    cached: bool
    pipeline_version: str
    signature: Signature
    name: str | None = None
    version: str | None = None


class ProgramInfo(BaseModel):
    id: str
    pipeline_version: str
    signature: Signature
    program: str = Field(description="canonical IR text")
    stages: dict[str, str] = Field(
        description="IR text of each stage: typed, rewritten, linearized, linear, transposed, vjp"
    )


class EvalRequest(BaseModel):
    inputs: list[TensorIn]
    binary_data_output: bool | None = None


class VjpByIdRequest(EvalRequest):
    cotangents: list[TensorIn] | None = Field(
        None, description="one per output; may be omitted only when every output is a scalar"
    )


class JvpRequest(EvalRequest):
    tangents: list[TensorIn] = Field(description="one per wrt input")


class VjpRequest(VjpByIdRequest):
    model_config = ConfigDict(json_schema_extra=_exactly_one(*SOURCE, ("id", {"type": "string"})))

    program: str | None = None
    graph: dict[str, Any] | None = None
    id: str | None = Field(None, description="a compiled program's id instead of its source")
    wrt: list[int] | None = None


class EvalResponse(BaseModel):
    id: str
    outputs: list[Tensor]


class VjpResponse(EvalResponse):
    gradients: list[Tensor]
    cached: bool | None = None


class JvpResponse(EvalResponse):
    tangents: list[Tensor]


class Problem(BaseModel):
    """RFC 9457 problem details, plus ``error`` (same as detail) for OIP clients."""

    model_config = ConfigDict(extra="allow")
    type: str
    title: str
    status: int
    detail: str
    error: str


# ---- Open Inference Protocol


class ServerMetadata(BaseModel):
    name: str
    version: str
    extensions: list[str]


class ModelMetadata(BaseModel):
    name: str
    versions: list[str] | None = None
    platform: str
    inputs: list[TensorMeta]
    outputs: list[TensorMeta]


class RequestOutput(BaseModel):
    name: str
    parameters: dict[str, Any] | None = None


class InferRequest(BaseModel):
    id: str | None = None
    parameters: dict[str, Any] | None = None
    inputs: list[Tensor]
    outputs: list[RequestOutput] | None = None


class InferResponse(BaseModel):
    model_name: str
    model_version: str | None = None
    id: str | None = None
    outputs: list[Tensor]


REQUEST_MODELS = [CompileRequest, VjpRequest, VjpByIdRequest, EvalRequest, JvpRequest, InferRequest]
