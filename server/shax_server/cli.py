"""``shax serve``: run the service with uvicorn (uvloop and httptools).

``serve_main(argv)`` is what ``shax serve`` calls; flags override the ``SHAX_`` environment.
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
    parser.add_argument("--log-level", default="info")
    return parser


def serve_main(argv: Sequence[str] | None = None) -> int:
    """Parse ``argv`` (without the ``serve`` word) and run uvicorn until interrupted."""
    import uvicorn

    from shax_server.settings import Settings

    args = build_parser().parse_args(argv)
    # flags become environment so that every worker process builds the same Settings
    for flag, env in (("host", "SHAX_HOST"), ("port", "SHAX_PORT"), ("workers", "SHAX_WORKERS")):
        value = getattr(args, flag)
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
        log_level=args.log_level,
        server_header=False,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(serve_main())
