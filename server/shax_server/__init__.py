"""shax_server: the compile-and-evaluate service (FastAPI).

    from shax_server import Settings, create_app
    app = create_app(Settings(max_body_bytes=1 << 20))

``shax serve`` runs it (``shax_server.cli.serve_main``).
"""

from shax_server.app import create_app
from shax_server.settings import Settings

__all__ = ["Settings", "create_app"]
