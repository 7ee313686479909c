"""Service settings, read from the environment with the ``SHAX_`` prefix (e.g. ``SHAX_PORT``).

Every limit is here with a default that suits one machine; ``SHAX_API_KEYS`` is a comma-separated
list (empty: no authentication).
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

MiB = 1024 * 1024


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SHAX_", extra="ignore")

    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)
    workers: int = Field(1, ge=1, description="uvicorn worker processes")

    # compiled-program cache (per process)
    cache_entries: int = Field(256, ge=1)
    cache_bytes: int = Field(256 * MiB, ge=1)

    # limits
    max_body_bytes: int = Field(64 * MiB, ge=1)
    max_equations: int = Field(
        10_000,
        ge=1,
        description="predicted compile cost: equations of a posted program (a 10k-equation "
        "chain parses, differentiates and compiles in about 0.25 s on one core, holding the "
        "GIL in slices; wider programs and loops cost more)",
    )
    max_tensor_elements: int = Field(16 * 1024 * 1024, ge=1)
    max_json_depth: int = Field(
        64, ge=2, description="deepest nesting of arrays/objects in a JSON body (checked unparsed)"
    )
    max_peak_bytes: int = Field(1024 * MiB, ge=1, description="peak live bytes of one evaluation")
    max_trip_count: int = Field(
        1_000_000,
        ge=0,
        description="most iterations of any loop body (a scan's length, a while_loop's "
        "max_trips), nested loops multiplied",
    )
    max_output_bytes: int = Field(
        64 * MiB,
        ge=1,
        description="bytes of one response's tensors in the encoding asked for (computed from "
        "the output types before anything runs)",
    )
    body_bytes_per_element: int = Field(
        64,
        ge=8,
        description="a body may carry at most this many bytes per tensor element the program "
        "takes (plus 1 KiB per tensor and 64 KiB): checked before tensor data is parsed",
    )
    max_compile_queue: int = Field(
        8, ge=1, description="compilations running or queued at once (beyond: 503)"
    )
    small_compile_equations: int = Field(
        2000,
        ge=1,
        description="programs with at most this many equations compile in their own lane, so "
        "they never wait behind big ones",
    )
    minimize_seconds: float = Field(
        30.0, gt=0, description="wall-clock bound of one /minimize stream"
    )
    max_inflight: int = Field(32, ge=1, description="evaluations running or queued at once")
    inline_eval_bytes: int = Field(
        1 * MiB,
        ge=0,
        description="a plan whose peak memory is at most this many bytes (and that has at most "
        "inline_eval_steps steps) runs on the event loop: cheaper than a hop to a worker thread",
    )
    inline_eval_steps: int = Field(2000, ge=0)
    eval_threads: int = Field(2, ge=1, description="threads that run compilations and evaluations")
    eval_timeout: float = Field(60.0, gt=0, description="seconds before an evaluation gives up")
    retry_after: int = Field(1, ge=0, description="Retry-After seconds sent with 503")

    api_keys: Annotated[list[SecretStr], NoDecode] = Field(default_factory=list)
    open_paths: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["/v2/health/live", "/v2/health/ready"],
        description="paths answered without an API key when keys are set (exact match; a "
        "trailing * matches a prefix); everything else needs a key: every API call, "
        "/metrics, /docs, /redoc, /openapi.json, GET /v2 and the site's pages",
    )

    fast_path: bool = Field(
        True,
        description="answer cached evaluation calls (by-id VJP, OIP infer of a loaded model) "
        "ahead of FastAPI's routing, under the same rules (see fastpath.py)",
    )

    # HTTP server (uvicorn): connection hygiene
    timeout_keep_alive: float = Field(5.0, gt=0, description="idle keep-alive seconds")
    header_timeout: float = Field(
        10.0, gt=0, description="seconds a connection may take to send a request's headers"
    )
    body_timeout: float = Field(
        10.0, gt=0, description="seconds a request body may pause between two chunks"
    )
    upload_timeout: float = Field(
        60.0, gt=0, description="seconds a whole request body may take to arrive"
    )
    max_header_bytes: int = Field(
        16 * 1024, ge=1024, description="bytes of a request line plus headers (beyond: 431)"
    )
    limit_concurrency: int = Field(
        512, ge=1, description="open connections plus running requests (beyond: 503)"
    )

    # logging
    log_format: str = Field("text", pattern="^(text|json)$", description="text or json lines")

    # Triton's model repository: DIR/<name>/<version>/model.shax (see repository.py), loaded
    # at start-up; /v2/repository/models/{m}/load|unload change it at run time
    model_repository: str | None = None
    model_control_mode: Literal["explicit", "none"] = Field(
        "explicit",
        description="explicit: /v2/repository/models/{m}/load and unload change the loaded "
        "models; none: the repository is loaded at start-up and stays as it is",
    )
    max_models: int = Field(
        1024, ge=0, description="model versions registered through POST /v1/programs (names)"
    )

    # the KServe v2 / Triton gRPC service (grpc_server.py) on this port; None: off
    grpc_port: int | None = Field(None, ge=0, le=65535)

    # shared store across replicas (the deployment issue plugs Redis in; see store.py)
    redis_url: str | None = None
    store_recheck_seconds: float = Field(
        5.0,
        ge=0,
        description="a program served from the local cache by id is checked to still be in the "
        "shared store (and written back if not) at most this often",
    )
    store_probe_interval: float = Field(
        1.0, gt=0, description="seconds between two health probes of the shared store"
    )
    cache_secret: SecretStr | None = Field(
        None,
        description="HMAC key shared by the replicas: store entries are signed with it, and "
        "only entries with a valid signature are planned without recompiling",
    )

    @field_validator("api_keys", "open_paths", mode="before")
    @classmethod
    def _split_keys(cls, v):
        if isinstance(v, str):
            return [k.strip() for k in v.split(",") if k.strip()]
        return v
