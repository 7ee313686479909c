"""``shax serve``: run the service with uvicorn (uvloop and httptools).

``serve(host, port, workers)`` is what ``shax serve`` calls (``serve_main(argv)`` parses the flags
itself); given values override the ``SHAX_`` environment.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence


def build_parser(prog: str = "shax serve") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description="Run the shax service.")
    parser.add_argument("--host", default=None, help="bind address (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=None, help="port (default 8000)")
    parser.add_argument("--workers", type=int, default=None, help="worker processes (default 1)")
    parser.add_argument(
        "--model-repository",
        default=None,
        metavar="DIR",
        help="load Triton-layout models DIR/<name>/<version>/model.shax at start-up",
    )
    parser.add_argument(
        "--model-control-mode",
        choices=["explicit", "none"],
        default=None,
        help="explicit (default): the repository API loads and unloads models; none: fixed",
    )
    parser.add_argument(
        "--grpc-port",
        type=int,
        nargs="?",
        const=8001,
        default=None,
        metavar="PORT",
        help="also serve the KServe v2 / Triton gRPC API (default port 8001; off if absent)",
    )
    parser.add_argument("--log-level", default="info")
    return parser


def serve(
    host: str | None = None,
    port: int | None = None,
    workers: int | None = None,
    log_level: str = "info",
    model_repository: str | None = None,
    grpc_port: int | None = None,
    model_control_mode: str | None = None,
) -> int:
    """Run uvicorn until interrupted; arguments left None come from the ``SHAX_`` environment."""
    import uvicorn

    from shax_server.settings import Settings

    # arguments become environment so that every worker process builds the same Settings
    for value, env in (
        (host, "SHAX_HOST"),
        (port, "SHAX_PORT"),
        (workers, "SHAX_WORKERS"),
        (model_repository, "SHAX_MODEL_REPOSITORY"),
        (grpc_port, "SHAX_GRPC_PORT"),
        (model_control_mode, "SHAX_MODEL_CONTROL_MODE"),
    ):
        if value is not None:
            os.environ[env] = str(value)
    settings = Settings()
    uvicorn.run(
        "shax_server.app:create_app",
        factory=True,
        host=settings.host,
        port=settings.port,
        workers=settings.workers,
        loop="uvloop",
        http="httptools",
        log_level=log_level,
        server_header=False,
    )
    return 0


def serve_main(argv: Sequence[str] | None = None) -> int:
    """``shax serve`` with its own argument parsing (``argv`` without the ``serve`` word)."""
    args = build_parser().parse_args(argv)
    return serve(
        args.host,
        args.port,
        args.workers,
        args.log_level,
        args.model_repository,
        args.grpc_port,
        args.model_control_mode,
    )


if __name__ == "__main__":
    raise SystemExit(serve_main())
