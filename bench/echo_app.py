"""The framework's floor for W5: bare FastAPI endpoints on the same uvicorn settings as shax.

``POST /echo`` parses the W1 VJP request body (the same JSON shax's endpoint receives) through a
pydantic model and returns it, as a typical FastAPI endpoint does; ``POST /raw`` takes an
``application/octet-stream`` f32 body into NumPy and sends the bytes back; ``POST /json`` does the
same with a JSON list of numbers through orjson (no pydantic).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import orjson
from fastapi import FastAPI, Request
from pydantic import BaseModel
from starlette.responses import Response

app = FastAPI(title="shax bench echo")


class TensorIn(BaseModel):
    name: str | None = None
    shape: list[int] | None = None
    datatype: str | None = None
    data: list[float] | list[list[float]] | float | None = None
    parameters: dict[str, Any] | None = None


class VjpBody(BaseModel):
    inputs: list[TensorIn]
    cotangents: list[TensorIn] | None = None


@app.get("/health")
async def health() -> Response:
    return Response(status_code=200)


@app.post("/echo")
async def echo(body: VjpBody) -> VjpBody:
    return body


@app.post("/raw")
async def raw(request: Request) -> Response:
    array = np.frombuffer(await request.body(), dtype="<f4")
    return Response(array.tobytes(), media_type="application/octet-stream")


@app.post("/json")
async def json_list(request: Request) -> Response:
    doc = orjson.loads(await request.body())
    array = np.asarray(doc["data"], dtype=np.float32)
    return Response(
        orjson.dumps({"data": array}, option=orjson.OPT_SERIALIZE_NUMPY),
        media_type="application/json",
    )
