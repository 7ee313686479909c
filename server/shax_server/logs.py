"""Logging: one format for every logger the service writes to, the request id on every record.

``install()`` sets a log record factory that gives every record (``shax_server``,
``shax_server.redis``, ``uvicorn.access``, ``uvicorn.error``, worker threads included, since
jobs run in the request's context) a ``request_id`` attribute: the id of the request being
served, or ``-``. ``log_config(fmt, level)`` is the ``logging.config`` dict ``shax serve``
hands to uvicorn: one handler on stderr, and either text lines::

    2026-12-01 09:00:00,123 WARNING shax_server.redis: Redis at ... failed ... [request_id=4f2a]

or JSON lines (``SHAX_LOG_FORMAT=json``)::

    {"time": "2026-12-01T09:00:00.123Z", "level": "WARNING", "logger": "shax_server.redis",
     "request_id": "4f2a...", "message": "Redis at ... failed ..."}
"""

from __future__ import annotations

import contextvars
import json
import logging
import time

request_id: contextvars.ContextVar[str] = contextvars.ContextVar("shax_request_id", default="-")

_installed = False


def install() -> None:
    """Give every log record made from now on a ``request_id`` attribute (idempotent)."""
    global _installed
    if _installed:
        return
    _installed = True
    previous = logging.getLogRecordFactory()

    def factory(*args, **kwargs) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        record.request_id = request_id.get()
        return record

    logging.setLogRecordFactory(factory)


class TextFormatter(logging.Formatter):
    def __init__(self):
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        rid = getattr(record, "request_id", "-")
        return line if rid == "-" else f"{line} [request_id={rid}]"


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        doc = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "request_id": getattr(record, "request_id", "-"),
            "message": record.getMessage(),
        }
        if record.exc_info:
            doc["exception"] = self.formatException(record.exc_info)
        return json.dumps(doc)


def log_config(fmt: str = "text", level: str = "info") -> dict:
    level = level.upper()
    formatter = {"text": TextFormatter, "json": JsonFormatter}[fmt]
    handler = {"handlers": ["stderr"], "level": level, "propagate": False}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"shax": {"()": f"{formatter.__module__}.{formatter.__qualname__}"}},
        "handlers": {
            "stderr": {
                "class": "logging.StreamHandler",
                "formatter": "shax",
                "stream": "ext://sys.stderr",
            }
        },
        "loggers": {
            "uvicorn": handler,
            "uvicorn.error": {"level": level},
            "uvicorn.access": handler,
            "shax_server": handler,
            "shax_core": handler,
        },
    }
