"""``shax serve``: run the service with uvicorn (uvloop and httptools, guarded: see ``http.py``).

``serve(host, port, workers, ...)`` is what ``shax serve`` calls (``serve_main(argv)`` parses the
flags itself); given values override the ``SHAX_`` environment, so every worker process builds
the same Settings. Connection hygiene has defaults (``settings.py``) and flags:
``--timeout-keep-alive``, ``--limit-concurrency``, ``--header-timeout``, ``--max-header-bytes``,
``--body-timeout``, ``--upload-timeout``; logging: ``--log-level``, ``--log-format text|json``.

``--workers N`` (N > 1) needs a store the workers share (``SHAX_REDIS_URL``): each worker has
its own in-process cache, so without one a program compiled by one worker is unknown to the
next (404s that come and go). It is refused with a message saying so (exit status 2). With
Redis, the workers share compiled programs through it, and their metrics through
prometheus-client's multiprocess files (a fresh ``PROMETHEUS_MULTIPROC_DIR``, removed at exit).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from collections.abc import Sequence

FLAGS = {  # flag -> (SHAX_ variable, type, help)
    "--timeout-keep-alive": ("SHAX_TIMEOUT_KEEP_ALIVE", float, "idle keep-alive seconds (5)"),
    "--limit-concurrency": (
        "SHAX_LIMIT_CONCURRENCY",
        int,
        "open connections + running requests before 503 (512)",
    ),
    "--header-timeout": ("SHAX_HEADER_TIMEOUT", float, "seconds to send request headers (10)"),
    "--max-header-bytes": ("SHAX_MAX_HEADER_BYTES", int, "request line + headers (16384)"),
    "--body-timeout": ("SHAX_BODY_TIMEOUT", float, "seconds a body may pause (10)"),
    "--upload-timeout": ("SHAX_UPLOAD_TIMEOUT", float, "seconds a whole body may take (60)"),
    "--log-format": ("SHAX_LOG_FORMAT", str, "text or json (text)"),
    "--model-repository": (
        "SHAX_MODEL_REPOSITORY",
        str,
        "a Triton-layout model repository DIR/<name>/<version>/model.shax, loaded at start-up",
    ),
    "--model-control-mode": (
        "SHAX_MODEL_CONTROL_MODE",
        str,
        "explicit (default): the repository API loads and unloads models; none: it cannot",
    ),
    "--grpc-port": (
        "SHAX_GRPC_PORT",
        int,
        "also serve the KServe v2 / Triton gRPC API on this port (8001 when given without one)",
    ),
}
OPTIONAL_VALUE = {"--grpc-port": 8001}  # flags that may be given without a value


def build_parser(prog: str = "shax serve") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description="Run the shax service.")
    parser.add_argument("--host", default=None, help="bind address (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=None, help="port (default 8000)")
    parser.add_argument(
        "--workers",
        type=int,
        default=None,
        help="worker processes (default 1; more need SHAX_REDIS_URL)",
    )
    parser.add_argument("--log-level", default="info")
    for flag, (_, kind, help_) in FLAGS.items():
        extra = {"nargs": "?", "const": OPTIONAL_VALUE[flag]} if flag in OPTIONAL_VALUE else {}
        parser.add_argument(flag, type=kind, default=None, help=help_, **extra)
    return parser


class ServeError(SystemExit):
    def __init__(self, message: str):
        print(f"shax serve: {message}", file=sys.stderr)
        super().__init__(2)


def serve(
    host: str | None = None,
    port: int | None = None,
    workers: int | None = None,
    log_level: str = "info",
    **options,
) -> int:
    """Run uvicorn until interrupted; arguments left None come from the ``SHAX_`` environment.
    ``options`` are the hygiene flags by their Python names (``timeout_keep_alive=...``)."""
    import uvicorn
    from pydantic import ValidationError

    from shax_server.logs import log_config
    from shax_server.settings import Settings

    given = {"--host": host, "--port": port, "--workers": workers}
    given.update({"--" + k.replace("_", "-"): v for k, v in options.items()})
    envs = {"--host": "SHAX_HOST", "--port": "SHAX_PORT", "--workers": "SHAX_WORKERS"}
    envs.update({flag: env for flag, (env, _, _) in FLAGS.items()})
    for flag, value in given.items():
        if value is not None:
            os.environ[envs[flag]] = str(value)
    try:
        settings = Settings()
    except ValidationError as e:
        raise ServeError(f"invalid setting: {e}") from None
    if settings.workers > 1 and not settings.redis_url:
        raise ServeError(
            f"--workers {settings.workers} needs a store the workers share: each worker has its "
            "own compiled-program cache, so a program compiled by one would be unknown to the "
            "others (404s that come and go). Set SHAX_REDIS_URL, or run one worker per "
            "container/replica behind a load balancer."
        )
    metrics_dir = None
    if settings.workers > 1 and not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        # every worker writes its metrics here; any worker's /metrics renders their sum
        metrics_dir = tempfile.mkdtemp(prefix="shax-metrics-")
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
    try:
        _run(uvicorn, settings, log_level, log_config)
    finally:
        if metrics_dir is not None:
            shutil.rmtree(metrics_dir, ignore_errors=True)
    return 0


def _run(uvicorn, settings, log_level: str, log_config) -> None:
    uvicorn.run(
        "shax_server.app:create_app",
        factory=True,
        host=settings.host,
        port=settings.port,
        workers=settings.workers,
        loop="uvloop",
        http="shax_server.http:GuardedHttpToolsProtocol",
        log_level=log_level,
        log_config=log_config(settings.log_format, log_level),
        server_header=False,
        timeout_keep_alive=settings.timeout_keep_alive,
        limit_concurrency=settings.limit_concurrency,
        h11_max_incomplete_event_size=settings.max_header_bytes,
    )


def serve_main(argv: Sequence[str] | None = None) -> int:
    """``shax serve`` with its own argument parsing (``argv`` without the ``serve`` word)."""
    args = build_parser().parse_args(argv)
    options = {
        flag[2:].replace("-", "_"): getattr(args, flag[2:].replace("-", "_")) for flag in FLAGS
    }
    return serve(args.host, args.port, args.workers, args.log_level, **options)


if __name__ == "__main__":
    sys.exit(serve_main())
