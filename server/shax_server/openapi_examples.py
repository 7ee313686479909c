"""Request examples for every operation of the OpenAPI document, and the IR grammar in it.

``annotate(doc)`` adds to each operation a request example (the seed's ``medium``, or its ``f``
for ``minimize``, which needs a scalar output), example values for its path parameters (the
ids the service gives those programs) and a one-line ``curl`` (``x-codeSamples``, also at the end
of the description, where Swagger UI shows it). It also puts the IR grammar into the
descriptions of the ``program`` fields and of the API. ``tests/test_site.py`` checks that every
operation has its example and runs each one against a real server.
"""

from __future__ import annotations

import json
import shlex
from functools import cache

import shax_core
from shax_server.compilation import prepare
from shax_server.explore import link_document
from shax_server.irdoc import GRAMMAR, GRAMMAR_NOTES, PROGRAM_DESCRIPTION
from shax_server.samples import SEED_F, SEED_MEDIUM
from shax_server.settings import Settings

BASE = "http://127.0.0.1:8000"  # where `make run` serves


def one_line(text: str) -> str:
    """IR text on one line (whitespace is insignificant; comments would not survive)."""
    return " ".join(line for line in text.splitlines() if not line.lstrip().startswith("--"))


MEDIUM = " ".join(one_line(SEED_MEDIUM).split())
F = " ".join(one_line(SEED_F).split())
MEDIUM_INPUTS = [{"data": [1, 2, 3, 4, 5, 6]}, {"data": [[1, 2], [3, 4]]}]
MEDIUM_CT = [{"data": [5, 9]}]
VERSIONED = "/v2/models/{model_name}/versions/{model_version}"
LEAST_SQUARES = {"model_name": "least_squares", "model_version": "1"}
LEAST_SQUARES_INPUTS = [
    {"name": "w", "shape": [3], "datatype": "FP32", "data": [1, 2, 3]},
    {
        "name": "x",
        "shape": [4, 3],
        "datatype": "FP32",
        "data": [1, 0, 0, 0, 1, 0, 0, 0, 1, 1, 1, 1],
    },
    {"name": "y", "shape": [4], "datatype": "FP32", "data": [1, 1, 1, 6]},
]


@cache
def program_id(text: str) -> str:
    """The id the service gives ``text`` (its content hash with default ``wrt``)."""
    return prepare(shax_core.parse(text), None, Settings()).key


def operation_examples() -> dict[tuple[str, str], dict]:
    """``(method, path) -> {"body": ..., "path": {param: value}}`` for every known operation."""
    medium, f = program_id(MEDIUM), program_id(F)
    link = link_document({"program": MEDIUM})[0]
    by_medium = {"program_id": medium}
    infer_inputs = [
        {"name": "a0", "shape": [6], "datatype": "FP32", "data": [1, 2, 3, 4, 5, 6]},
        {"name": "a1", "shape": [2, 2], "datatype": "FP32", "data": [1, 2, 3, 4]},
        {"name": "ct0", "shape": [2], "datatype": "FP32", "data": [5, 9]},
    ]
    return {
        ("post", "/v1/programs"): {"body": {"program": MEDIUM}},
        ("get", "/v1/programs/{program_id}"): {"path": by_medium},
        ("post", "/vjp"): {
            "body": {"program": MEDIUM, "inputs": MEDIUM_INPUTS, "cotangents": MEDIUM_CT}
        },
        ("post", "/v1/programs/{program_id}/vjp"): {
            "path": by_medium,
            "body": {"inputs": MEDIUM_INPUTS, "cotangents": MEDIUM_CT},
        },
        ("post", "/v1/programs/{program_id}/eval"): {
            "path": by_medium,
            "body": {"inputs": MEDIUM_INPUTS},
        },
        ("post", "/v1/programs/{program_id}/jvp"): {
            "path": by_medium,
            "body": {"inputs": MEDIUM_INPUTS, "tangents": MEDIUM_INPUTS},
        },
        ("post", "/v1/programs/{program_id}/minimize"): {
            "path": {"program_id": f},
            "body": {"x0": [{"data": 0.5}, {"data": -0.75}], "steps": 40, "lr": 0.05},
            "needs": {"program": F},
        },
        ("get", "/v2"): {},
        ("get", "/v2/health/live"): {},
        ("get", "/v2/health/ready"): {},
        ("get", "/v2/models/{model_name}"): {"path": {"model_name": medium}},
        ("get", "/v2/models/{model_name}/ready"): {"path": {"model_name": medium}},
        ("post", "/v2/models/{model_name}/infer"): {
            "path": {"model_name": medium},
            "body": {"inputs": infer_inputs},
        },
        # named, versioned models: examples/model_repository (make run loads it)
        ("get", VERSIONED): {"path": LEAST_SQUARES},
        ("get", VERSIONED + "/ready"): {"path": LEAST_SQUARES},
        ("post", VERSIONED + "/infer"): {
            "path": LEAST_SQUARES,
            "body": {"inputs": LEAST_SQUARES_INPUTS},
        },
        ("get", "/v2/models/{model_name}/config"): {"path": {"model_name": "least_squares"}},
        ("get", VERSIONED + "/config"): {"path": LEAST_SQUARES},
        ("get", "/v2/models/stats"): {},
        ("get", "/v2/models/{model_name}/stats"): {"path": {"model_name": "least_squares"}},
        ("get", VERSIONED + "/stats"): {"path": LEAST_SQUARES},
        ("post", "/v2/repository/index"): {"body": {"ready": True}},
        ("get", "/metrics"): {},
        ("post", "/v1/explore"): {
            "body": {
                "program": MEDIUM,
                "inputs": [[1, 2, 3, 4, 5, 6], [[1, 2], [3, 4]]],
                "cotangents": [[5, 9]],
            }
        },
        ("get", "/v1/explore/samples"): {},
        ("post", "/v1/explore/links"): {"body": {"program": MEDIUM}},
        ("get", "/v1/explore/links/{link_id}"): {"path": {"link_id": link}},
        # last: unload a repository model, then load it again
        ("post", "/v2/repository/models/{model_name}/unload"): {"path": {"model_name": "sinsum"}},
        ("post", "/v2/repository/models/{model_name}/load"): {"path": {"model_name": "sinsum"}},
    }


def path_of(path: str, values: dict) -> str:
    for name, value in values.items():
        path = path.replace("{" + name + "}", value)
    return path


def curl(method: str, path: str, example: dict, base: str = BASE) -> str:
    """The one-line curl for an operation's example."""
    url = base + path_of(path, example.get("path", {}))
    words = ["curl", "-s"]
    if method != "get":
        words += ["-X", method.upper()]
    words.append(url)
    if "body" in example:
        body = json.dumps(example["body"], separators=(", ", ": "))
        words += ["-H", "content-type: application/json", "-d", body]
    return " ".join(shlex.quote(w) if i else w for i, w in enumerate(words))


def _before(example: dict) -> str:
    needs = example.get("needs")
    if not needs:
        return ""
    return (
        "\n\nThe example's program (the seed's `f`) must be compiled first: "
        f"`{curl('post', '/v1/programs', {'body': needs})}`"
    )


def annotate(doc: dict) -> dict:
    """Add the examples and the grammar to an OpenAPI document (in place; returned)."""
    known = operation_examples()
    for path, operations in doc.get("paths", {}).items():
        for method, op in operations.items():
            example = known.get((method, path), {})
            for param in op.get("parameters", []):
                if param.get("in") == "path" and param["name"] in example.get("path", {}):
                    param["example"] = example["path"][param["name"]]
            if "body" in example:
                content = op.get("requestBody", {}).get("content", {})
                if "application/json" in content:
                    content["application/json"]["example"] = example["body"]
            if (method, path) in known:
                line = curl(method, path, example)
                op["x-codeSamples"] = [{"lang": "Shell", "label": "curl", "source": line}]
                op["description"] = (
                    op.get("description", op.get("summary", ""))
                    + f"\n\nExample:\n\n```\n{line}\n```"
                    + _before(example)
                )
    schemas = doc.get("components", {}).get("schemas", {})
    for model in schemas.values():
        program = model.get("properties", {}).get("program")
        if program is not None:
            program["description"] = PROGRAM_DESCRIPTION
    info = doc.setdefault("info", {})
    info["description"] = (
        info.get("description", "")
        + "\n\n## The IR\n\n```\n"
        + GRAMMAR
        + "\n```\n\n"
        + GRAMMAR_NOTES
        + " The primitives and a worked example: docs/ir.md. The stage explorer at /explore "
        "shows every stage of a program."
    )
    return doc
