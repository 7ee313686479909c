"""The Redis shared store: compiled programs shared across replicas as JSON text, never pickles.

``make_store`` (store.py) calls ``from_url(SHAX_REDIS_URL)``. One entry per program::

    key    <prefix>:p<pipeline version>:<program id>      e.g. shax:p1:3f2a...
    value  {"format": 1, "id": ..., "text": <canonical IR text>,
            "metadata": {"wrt": [...], "pipeline_version": "1", "vjp": <VJP IR text>},
            "sha256": <hex digest of id, text and metadata>}

Entries expire after ``SHAX_REDIS_TTL`` seconds (default 7 days, 0: never); Redis itself should
also bound its memory (``maxmemory`` with ``allkeys-lru``, as docker/docker-compose.yml does), so
that old programs are evicted first. Nothing read from Redis is executed: the cache (cache.py)
parses the text, re-hashes it and checks it against the id, and checks the VJP's signature.

Entries are signed by the cache (``cache.sign``, HMAC-SHA256 under ``SHAX_CACHE_SECRET``, in
the metadata's ``signature``); the checksum here only catches damage, not forgery.
``probe()`` PINGs Redis (the app calls it every second), so ``shax_redis_up`` is Redis' health
now; ``exists()`` lets a replica write back a program the store lost.

Redis is an optimisation, never a dependency of a request:

- every call has a short socket timeout (``SHAX_REDIS_TIMEOUT``, default 0.25 s) and no retries;
- a failed call (refused, timed out, any Redis error) returns "not found" / does nothing, logs a
  warning (at most one per kind every ``WARN_EVERY`` seconds), counts ``shax_redis_errors_total``
  and sets ``shax_redis_up`` to 0; for ``SHAX_REDIS_RETRY_INTERVAL`` seconds after it (default 2)
  Redis is not asked at all, so a dead or blackholed Redis costs one timeout per interval, not one
  per request; then the next call tries again (and sets ``shax_redis_up`` back to 1 on success);
- an entry that is not valid JSON, lacks a field or fails its checksum is ignored (logged,
  ``shax_store_corrupt_total``) and deleted; the program is compiled again and rewritten.

Anyone who can write to this Redis can change what the replicas serve: keep it on a private
network and use a password (``redis://:password@host:6379/0``) or TLS (``rediss://``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
from typing import Any
from urllib.parse import urlsplit

import redis
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict
from redis.backoff import NoBackoff
from redis.retry import Retry

from shax_server.compilation import pipeline_version

log = logging.getLogger("shax_server.redis")

FORMAT = 1
WARN_EVERY = 30.0  # seconds between two warnings of the same kind


class RedisSettings(BaseSettings):
    """Settings of the Redis store (``SHAX_REDIS_*``; the URL itself is ``SHAX_REDIS_URL``)."""

    model_config = SettingsConfigDict(env_prefix="SHAX_REDIS_", extra="ignore")

    ttl: int = Field(7 * 24 * 3600, ge=0, description="seconds an entry lives; 0: no expiry")
    timeout: float = Field(0.25, gt=0, description="connect and read/write timeout per call (s)")
    retry_interval: float = Field(
        2.0, ge=0, description="seconds Redis is left alone after a failed call"
    )
    key_prefix: str = Field("shax", min_length=1, description="namespace of the keys")


def _checksum(program_id: str, text: str, metadata: dict) -> str:
    h = hashlib.sha256()
    h.update(program_id.encode())
    h.update(b"\0")
    h.update(text.encode())
    h.update(b"\0")
    h.update(json.dumps(metadata, sort_keys=True, separators=(",", ":")).encode())
    return h.hexdigest()


def encode_entry(program_id: str, text: str, metadata: dict) -> bytes:
    """The JSON value stored for a program."""
    doc = {
        "format": FORMAT,
        "id": program_id,
        "text": text,
        "metadata": metadata,
        "sha256": _checksum(program_id, text, metadata),
    }
    return json.dumps(doc, separators=(",", ":")).encode()


def decode_entry(program_id: str, raw: bytes) -> tuple[str, dict]:
    """``(text, metadata)`` of a stored value; ValueError saying what is wrong otherwise."""
    try:
        doc = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as e:
        raise ValueError(f"not JSON ({e})") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise ValueError(f"not a format-{FORMAT} entry")
    text, metadata = doc.get("text"), doc.get("metadata")
    if not isinstance(text, str) or not isinstance(metadata, dict):
        raise ValueError("'text' must be a string and 'metadata' an object")
    if doc.get("id") != program_id:
        raise ValueError(f"it is the entry of {str(doc.get('id'))[:16]!r}")
    if doc.get("sha256") != _checksum(program_id, text, metadata):
        raise ValueError("checksum mismatch")
    return text, metadata


def redact(url: str) -> str:
    """The URL without its password, for logs."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}{parts.path}"


class RedisStore:
    """A ``SharedStore`` over one Redis client; every method is blocking and never raises."""

    def __init__(self, client: redis.Redis, settings: RedisSettings, where: str = "redis"):
        self.client = client
        self.settings = settings
        self.where = where
        self.metrics = None
        self.up: bool | None = None  # unknown until the first call
        self._lock = threading.Lock()
        self._skip_until = 0.0
        self._warned: dict[str, tuple[float, int]] = {}  # kind -> (last warning, suppressed)

    # -- wiring ------------------------------------------------------------------------------

    def bind_metrics(self, metrics) -> None:
        """Report into an app's /metrics (ProgramCache calls this)."""
        self.metrics = metrics
        metrics.redis_attached = True
        metrics.redis_up.read = lambda: 1.0 if self.up else 0.0

    def key(self, program_id: str) -> str:
        return f"{self.settings.key_prefix}:p{pipeline_version()}:{program_id}"

    # -- the SharedStore interface -------------------------------------------------------------

    def get(self, key: str) -> tuple[str, dict] | None:
        raw = self._call("get", self.client.get, self.key(key))
        if raw is None:
            return None
        try:
            return decode_entry(key, raw)
        except ValueError as e:
            self._warn("corrupt", "ignoring Redis entry %s (%s); it will be recompiled", key, e)
            if self.metrics is not None:
                self.metrics.store_corrupt.inc()
            self._call("delete", self.client.delete, self.key(key))
            return None

    def put(self, key: str, text: str, metadata: dict) -> None:
        value = encode_entry(key, text, metadata)
        ttl = self.settings.ttl or None
        self._call("put", self.client.set, self.key(key), value, ex=ttl)

    def exists(self, key: str) -> bool | None:
        """Whether Redis holds ``key`` (None when Redis cannot say)."""
        n = self._call("exists", self.client.exists, self.key(key))
        return None if n is None else bool(n)

    def probe(self) -> bool:
        """PING Redis now (also while failed calls leave it alone): sets ``up``, and when it
        answers again, ends the pause so requests use it at once."""
        try:
            self.client.ping()
        except redis.RedisError as e:
            if self.up is not False:
                self._failed("probe", e)
            self.up = False
            return False
        if self.up is False:
            log.warning("Redis at %s answers again", self.where)
        self.up = True
        with self._lock:
            self._skip_until = 0.0
        return True

    def close(self) -> None:
        self.client.close()

    # -- failure handling ------------------------------------------------------------------------

    def _call(self, op: str, fn, *args, **kwargs) -> Any:
        """``fn(*args)``, or None when Redis is being left alone or the call fails."""
        if time.monotonic() < self._skip_until:
            return None
        try:
            result = fn(*args, **kwargs)
        except redis.RedisError as e:
            self._failed(op, e)
            return None
        if not self.up:
            if self.up is False:
                log.warning("Redis at %s answers again", self.where)
            self.up = True
        return result

    def _failed(self, op: str, e: Exception) -> None:
        if isinstance(e, redis.TimeoutError):
            reason = "timeout"
        elif isinstance(e, redis.ConnectionError):
            reason = "connection"
        else:
            reason = "error"
        self.up = False
        if reason != "error":
            with self._lock:
                self._skip_until = time.monotonic() + self.settings.retry_interval
        if self.metrics is not None:
            self.metrics.redis_errors.inc(op, reason)
        self._warn(
            reason,
            "Redis at %s failed (%s on %s: %s); serving from this replica's own cache",
            self.where,
            reason,
            op,
            e,
        )

    def _warn(self, kind: str, msg: str, *args) -> None:
        """``log.warning`` at most once per ``kind`` every WARN_EVERY seconds."""
        now = time.monotonic()
        with self._lock:
            last, suppressed = self._warned.get(kind, (-WARN_EVERY, 0))
            if now - last < WARN_EVERY:
                self._warned[kind] = (last, suppressed + 1)
                return
            self._warned[kind] = (now, 0)
        if suppressed:
            msg += f" ({suppressed} similar warnings suppressed)"
        log.warning(msg, *args)


def from_url(url: str, settings: RedisSettings | None = None) -> RedisStore:
    """A store for ``redis://[:password@]host[:port][/db]`` (or ``rediss://``, ``unix://``).

    No connection is made here: a replica starts (and is ready) while Redis is down.
    """
    settings = settings or RedisSettings()
    client = redis.Redis.from_url(
        url,
        socket_timeout=settings.timeout,
        socket_connect_timeout=settings.timeout,
        retry=Retry(NoBackoff(), 0),
        health_check_interval=0,
        decode_responses=False,
    )
    where = redact(url)
    log.info(
        "shared store: Redis at %s (ttl %s s, timeout %s s)", where, settings.ttl, settings.timeout
    )
    return RedisStore(client, settings, where)
