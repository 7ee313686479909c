"""Named, versioned models over content-addressed programs, and Triton's model repository.

A compiled program is found by its content id (the cache key). A *model* is a name whose
*versions* each point at one content id, with the tensor names clients use for it::

    registry["pendulum"] = {"1": Version(source of id 3fa9..., names), "2": ...}

``/v2/models/pendulum`` resolves to the latest version (the highest number; labels that are not
numbers sort before numbers, in the order they were added), ``/v2/models/pendulum/versions/1`` to
version 1, and ``/v2/models/3fa9...`` (a bare id) still works: the id is not a name.

A version keeps its ``Source`` (the canonical program, small), never its compiled plans: the
cache may evict them, and a request then rebuilds them through the cache (single flight).

The repository (Triton's layout) is a directory of models, each a directory of numeric
versions::

    DIR/<name>/config.json             optional: applies to every version
    DIR/<name>/<version>/model.shax    IR text  (or model.json: a JSON graph)
    DIR/<name>/<version>/config.json   optional: overrides the model's config for this version

A config is a JSON object with optional ``wrt`` (input indices), ``residuals`` (the residual
policy: ``recompute`` or ``save``), ``inputs`` and ``outputs`` (tensor names for the program's
inputs and outputs), ``cotangents`` and ``gradients`` (names for the output cotangents and the
gradients; when only ``inputs``/``outputs`` are renamed they follow: ``<output>_ct``,
``<input>_grad``) and ``max_batch_size`` (must be 0:
shax programs have fixed shapes). Unknown keys are an error naming the file.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

import shax_core
from shax_core.graph import from_graph
from shax_server.compilation import RESIDUAL_POLICIES, Compiled, Source, prepare
from shax_server.problems import Problem, invalid_request, limit_exceeded, not_found
from shax_server.settings import Settings

log = logging.getLogger("shax_server")

NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")  # model names and version labels
PROGRAM_FILES = ("model.shax", "model.json")
CONFIG_FILE = "config.json"
CONFIG_KEYS = {"wrt", "residuals", "inputs", "outputs", "cotangents", "gradients", "max_batch_size"}

READY, UNAVAILABLE, LOADING = "READY", "UNAVAILABLE", "LOADING"


def check_name(value: Any, what: str) -> str:
    if not isinstance(value, str) or not NAME.fullmatch(value):
        raise invalid_request(
            f"{what} must be 1-128 letters, digits, '_', '.' or '-' (not starting with '.' "
            f"or '-'), got {value!r}"
        )
    return value


# ---------------------------------------------------------------------------------------------
# tensor names of a model version


@dataclass(frozen=True)
class Names:
    """The four name lists of a model: what clients send (inputs, cotangents) and get back
    (outputs, gradients). Inputs and cotangents are distinct, outputs and gradients too."""

    inputs: tuple[str, ...]
    cotangents: tuple[str, ...]
    outputs: tuple[str, ...]
    gradients: tuple[str, ...]

    @staticmethod
    def of(entry: Compiled) -> Names:
        """The names the compiled program carries (whatever the pipeline calls them)."""
        return Names(
            tuple(entry.input_names),
            tuple(entry.cotangent_names),
            tuple(entry.output_names),
            tuple(entry.gradient_names),
        )


def names_for(entry: Compiled, config: dict) -> Names:
    """The entry's own names with the config's renames: ``inputs``/``outputs`` rename the
    program's; cotangents and gradients follow the renamed ones (``<output>_ct``,
    ``<input>_grad``) unless the config names them too."""
    own = Names.of(entry)
    inputs = _name_list(config.get("inputs"), own.inputs, "inputs")
    outputs = _name_list(config.get("outputs"), own.outputs, "outputs")
    wrt = entry.source.wrt
    cotangents = own.cotangents if "outputs" not in config else tuple(f"{o}_ct" for o in outputs)
    gradients = own.gradients if "inputs" not in config else tuple(f"{inputs[i]}_grad" for i in wrt)
    cotangents = _name_list(config.get("cotangents"), cotangents, "cotangents")
    gradients = _name_list(config.get("gradients"), gradients, "gradients")
    for side, names in (
        ("inputs and cotangents", inputs + cotangents),
        ("outputs and gradients", outputs + gradients),
    ):
        if len(set(names)) != len(names):
            raise invalid_request(f"the names of the {side} must be distinct, got {list(names)}")
    return Names(inputs, cotangents, outputs, gradients)


def _name_list(value: Any, default: tuple[str, ...], what: str) -> tuple[str, ...]:
    if value is None:
        return default
    if not isinstance(value, list) or len(value) != len(default):
        raise invalid_request(
            f"config '{what}' must be a list of {len(default)} names, got {value!r}"
        )
    return tuple(check_name(v, f"config '{what}' entry") for v in value)


@dataclass(frozen=True)
class Model:
    """What a request resolved to: a compiled entry, the name and version it was asked by
    (``version`` None for a bare content id) and its tensor names."""

    entry: Compiled
    name: str
    version: str | None
    names: Names

    @property
    def stats_key(self) -> tuple[str, str]:
        return self.name, self.version or ""


# ---------------------------------------------------------------------------------------------
# statistics (Triton's shape)


@dataclass
class Duration:
    count: int = 0
    ns: int = 0

    def add(self, ns: int) -> None:
        self.count += 1
        self.ns += ns

    def doc(self) -> dict:
        return {"count": self.count, "ns": self.ns}


@dataclass
class Stats:
    """Triton's per-model-version inference statistics (``InferStatistics``): every request
    counts in ``success`` or ``fail`` with its whole duration; successful ones also in the
    phases: queue (waiting for a worker thread), compute_input (decoding and checking tensors),
    compute_infer (evaluating the VJP) and compute_output (encoding the response)."""

    success: Duration = field(default_factory=Duration)
    fail: Duration = field(default_factory=Duration)
    queue: Duration = field(default_factory=Duration)
    compute_input: Duration = field(default_factory=Duration)
    compute_infer: Duration = field(default_factory=Duration)
    compute_output: Duration = field(default_factory=Duration)
    inference_count: int = 0
    execution_count: int = 0
    last_inference: int = 0  # ms since the epoch

    def doc(self, name: str, version: str) -> dict:
        phases = ("success", "fail", "queue", "compute_input", "compute_infer", "compute_output")
        inference = {p: getattr(self, p).doc() for p in phases}
        inference["cache_hit"] = {"count": 0, "ns": 0}  # Triton's response cache: none here
        inference["cache_miss"] = {"count": 0, "ns": 0}
        return {
            "name": name,
            "version": version,
            "last_inference": self.last_inference,
            "inference_count": self.inference_count,
            "execution_count": self.execution_count,
            "inference_stats": inference,
            "batch_stats": [],
            "memory_usage": [],
        }


@dataclass
class Timing:
    """Monotonic nanosecond marks of one inference request."""

    start: int = field(default_factory=time.perf_counter_ns)
    decoded: int = 0
    queue_ns: int = 0
    infer_ns: int = 0


# ---------------------------------------------------------------------------------------------
# the registry


@dataclass(frozen=True)
class Version:
    name: str
    label: str
    source: Source
    config: dict  # the config the names come from (renames); {} for the program's own
    origin: str  # "repository" or "api"


def _version_order(label: str, position: int) -> tuple:
    return (1, int(label), 0) if label.isdigit() else (0, 0, position)


@dataclass
class ModelState:
    state: str
    reason: str = ""


class Registry:
    """Model names -> versions, repository states, and statistics. Event-loop only.

    Bounded: at most ``max_models`` versions registered through the API (repository models are
    the operator's and not counted); statistics of bare program ids (requests by content id)
    are kept for the ``cache_entries`` most recently used ids, and ``forget`` is called with
    the key of every statistics entry dropped (the metrics drop its series)."""

    def __init__(self, settings: Settings, forget=lambda key: None):
        self.settings = settings
        self.root = Path(settings.model_repository) if settings.model_repository else None
        self.models: dict[str, dict[str, Version]] = {}
        self.states: dict[str, ModelState] = {}
        self.stats: dict[tuple[str, str], Stats] = {}
        self.program_stats: OrderedDict[tuple[str, str], Stats] = OrderedDict()
        self.locks: dict[str, asyncio.Lock] = {}
        self.forget = forget

    # -- names and versions

    def api_versions(self) -> int:
        return sum(v.origin == "api" for vs in self.models.values() for v in vs.values())

    def add(self, version: Version) -> None:
        existing = self.models.get(version.name, {}).get(version.label)
        limit = self.settings.max_models
        if version.origin == "api" and existing is None and self.api_versions() >= limit:
            raise limit_exceeded(
                "max_models",
                f"{limit} model versions are registered through the API (SHAX_MAX_MODELS); "
                "unload some (POST /v2/repository/models/{name}/unload)",
            )
        versions = dict(self.models.get(version.name, {}))
        versions[version.label] = version
        self.models[version.name] = versions
        self.states[version.name] = ModelState(READY)

    def next_label(self, name: str, key: str) -> str:
        """The label for content ``key`` under ``name``: the version that already holds it,
        else one more than the highest numeric version (1 for a new name)."""
        versions = self.models.get(name, {})
        for label, v in versions.items():
            if v.source.key == key:
                return label
        numbers = [int(label) for label in versions if label.isdigit()]
        return str(max(numbers, default=0) + 1)

    def labels(self, name: str) -> list[str]:
        versions = self.models.get(name, {})
        order = {label: i for i, label in enumerate(versions)}
        return sorted(versions, key=lambda label: _version_order(label, order[label]))

    def find(self, name: str, label: str | None) -> Version | None:
        """The version ``label`` of ``name`` (latest when None); None if ``name`` is no model;
        404 when the model has no such version."""
        versions = self.models.get(name)
        if not versions:
            if label is not None and name in self.states:
                raise not_found(f"model {name!r} is not loaded ({self.states[name].reason})")
            return None
        if label is None:
            return versions[self.labels(name)[-1]]
        if label not in versions:
            raise not_found(
                f"model {name!r} has no version {label!r}; it has " + ", ".join(self.labels(name))
            )
        return versions[label]

    def unload(self, name: str) -> None:
        if name not in self.models and name not in self.states:
            raise not_found(f"no model named {name!r}")
        for label in self.models.pop(name, {}):
            if self.stats.pop((name, label), None) is not None:
                self.forget((name, label))
        self.states[name] = ModelState(UNAVAILABLE, "unloaded")

    # -- the repository

    def repository_names(self) -> list[str]:
        if self.root is None or not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir() if p.is_dir() and NAME.fullmatch(p.name))

    def index(self, ready_only: bool) -> list[dict]:
        """Triton's repository index: one row per loaded version, one per model not loaded."""
        rows = []
        for name in sorted({*self.repository_names(), *self.models, *self.states}):
            if name in self.models:
                rows += [{"name": name, "version": v, "state": READY} for v in self.labels(name)]
            elif not ready_only:
                st = self.states.get(name, ModelState(UNAVAILABLE, "not loaded"))
                rows.append({"name": name, "state": st.state, "reason": st.reason})
        return rows

    def lock(self, name: str) -> asyncio.Lock:
        return self.locks.setdefault(name, asyncio.Lock())

    # -- statistics

    def stats_for(self, key: tuple[str, str]) -> Stats:
        if key[1]:  # a model version: bounded by the registry
            return self.stats.setdefault(key, Stats())
        found = self.program_stats.get(key)
        if found is not None:
            self.program_stats.move_to_end(key)
            return found
        found = self.program_stats[key] = Stats()
        while len(self.program_stats) > self.settings.cache_entries:
            old, _ = self.program_stats.popitem(last=False)
            self.forget(old)
        return found

    def all_stats(self) -> list[tuple[tuple[str, str], Stats]]:
        """Every model version's statistics (zeros when unused), then the program ids'."""
        keys = [(n, v) for n in sorted(self.models) for v in self.labels(n)]
        return [(k, self.stats_for(k)) for k in keys] + list(self.program_stats.items())


# ---------------------------------------------------------------------------------------------
# reading a repository model (runs in the worker pool: file I/O and parsing)


def read_config(path: Path, settings: Settings) -> dict:
    """A config.json as a checked dict ({} when the file is absent)."""
    if not path.exists() or path.is_dir():
        return {}
    return check_config(orjson.loads(_read_bounded(path, settings)), str(path))


def check_config(doc: Any, where: str) -> dict:
    if not isinstance(doc, dict):
        raise invalid_request(f"{where}: a model config must be a JSON object")
    unknown = sorted(set(doc) - CONFIG_KEYS)
    if unknown:
        raise invalid_request(
            f"{where}: unknown config key(s) {', '.join(unknown)}; known: "
            + ", ".join(sorted(CONFIG_KEYS))
        )
    if doc.get("residuals", "recompute") not in RESIDUAL_POLICIES:
        raise invalid_request(f"{where}: 'residuals' must be one of {', '.join(RESIDUAL_POLICIES)}")
    if doc.get("max_batch_size", 0) != 0:
        raise invalid_request(
            f"{where}: 'max_batch_size' must be 0 (shax programs have fixed shapes)"
        )
    return doc


def _is_file(path: Path) -> bool:
    return path.exists() and not path.is_dir()  # a file, a link to one, or a pipe


def _read_bounded(path: Path, settings: Settings) -> bytes:
    limit = settings.max_body_bytes
    with open(path, "rb") as f:
        data = f.read(limit + 1)
    if len(data) > limit:
        raise invalid_request(f"{path}: larger than max_body_bytes ({limit})")
    return data


def read_version(directory: Path, config: dict, settings: Settings) -> tuple[Source, dict]:
    """The prepared program of one version directory, and its effective config."""
    config = {**config, **read_config(directory / CONFIG_FILE, settings)}
    found = [directory / f for f in PROGRAM_FILES if _is_file(directory / f)]
    if len(found) != 1:
        raise invalid_request(
            f"{directory}: expected exactly one of {', '.join(PROGRAM_FILES)}, found "
            + (", ".join(p.name for p in found) or "none")
        )
    data = _read_bounded(found[0], settings)
    try:
        if found[0].suffix == ".shax":
            program = shax_core.parse(data.decode("utf-8"))
        else:
            program = from_graph(orjson.loads(data))
        source = prepare(program, config.get("wrt"), settings, config.get("residuals"))
    except Problem as e:
        raise invalid_request(f"{found[0]}: {e.detail}") from None
    except (shax_core.ShaxError, ValueError) as e:
        raise invalid_request(f"{found[0]}: {e}") from None
    return source, config


def read_model(root: Path, name: str, override: dict | None, settings: Settings):
    """``[(label, Source, config), ...]`` for every numeric version directory of a model."""
    directory = root / name
    if not directory.is_dir() or directory.resolve().parent != root.resolve():
        raise not_found(f"no model {name!r} in the model repository {root}")
    config = read_config(directory / CONFIG_FILE, settings)
    if override is not None:
        config = check_config(override, f"the load request's config for {name!r}")
    labels = sorted(
        (p.name for p in directory.iterdir() if p.is_dir() and p.name.isdigit()), key=int
    )
    if not labels:
        raise invalid_request(f"{directory}: no version directories (1/, 2/, ...)")
    return [(label, *read_version(directory / label, config, settings)) for label in labels]
