"""OpenAPI fragments shared by the routers (request bodies and problem responses)."""

from __future__ import annotations

from typing import Any

PROBLEM_TITLES = {
    400: "Bad request: malformed body, program or tensor (problem+json)",
    401: "Missing or invalid API key",
    404: "Unknown program id, model name or version",
    408: "The request body arrived too slowly (SHAX_BODY_TIMEOUT, SHAX_UPLOAD_TIMEOUT)",
    409: "The version label already holds another program",
    413: "A limit was exceeded (body, equations, elements, peak memory)",
    503: "Too many evaluations in flight or timed out; see Retry-After",
}


def ref(name: str) -> dict:
    return {"$ref": f"#/components/schemas/{name}"}


def problems(*codes: int) -> dict[int | str, dict[str, Any]]:
    return {
        code: {
            "description": PROBLEM_TITLES[code],
            "content": {"application/problem+json": {"schema": ref("Problem")}},
        }
        for code in codes
    }


def body(model: str, binary: bool = False) -> dict:
    content: dict[str, Any] = {"application/json": {"schema": ref(model)}}
    if binary:
        content["application/octet-stream"] = {
            "schema": {"type": "string", "format": "binary"},
        }
    return {"requestBody": {"required": True, "content": content}}


def ok(model: str, binary: bool = False) -> dict[int | str, dict[str, Any]]:
    content: dict[str, Any] = {"application/json": {"schema": ref(model)}}
    if binary:
        content["application/octet-stream"] = {
            "schema": {"type": "string", "format": "binary"},
        }
    description = "Success"
    if binary:
        description += (
            "; with binary_data_output the body is the JSON header (length in "
            "Inference-Header-Content-Length) followed by raw little-endian tensor bytes"
        )
    return {200: {"description": description, "content": content}}
