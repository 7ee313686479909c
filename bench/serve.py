"""Run one app under uvicorn for W5: ``python serve.py {shax,echo} PORT``.

Both apps get the same settings, those of ``shax serve`` (one worker, uvloop and httptools when
installed, no server header), except that logging is at ``warning`` with the access log off for
both, so neither pays for a log line per request.
"""

from __future__ import annotations

import importlib.util
import os
import sys


def uvicorn_options() -> dict:
    return {
        "host": "127.0.0.1",
        "workers": 1,
        "loop": "uvloop" if importlib.util.find_spec("uvloop") else "asyncio",
        "http": "httptools" if importlib.util.find_spec("httptools") else "h11",
        "log_level": "warning",
        "access_log": False,
        "server_header": False,
    }


def main(argv: list[str]) -> int:
    import uvicorn

    kind, port = argv[0], int(argv[1])
    opts = uvicorn_options()
    if kind == "shax":
        uvicorn.run("shax_server.app:create_app", factory=True, port=port, **opts)
    elif kind == "echo":
        here = os.path.dirname(os.path.abspath(__file__))
        uvicorn.run("echo_app:app", app_dir=here, port=port, **opts)
    else:
        raise SystemExit(f"unknown app {kind!r}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
