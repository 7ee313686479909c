"""Compressed request bodies (``Content-Encoding: gzip`` or ``deflate``), inflated with a bound.

The decompressed body obeys the same ``max_body_bytes`` limit as a plain one (as Triton's
``--http-max-input-size`` does): zlib is asked for at most ``limit + 1`` bytes at a time, so a
small body that inflates to gigabytes (a zip bomb) stops at the limit with 413 and never holds
more than ``limit + 1`` bytes. ``Inference-Header-Content-Length`` counts the inflated JSON
(tritonclient compresses the whole framed body).

>>> import gzip
>>> inflate(gzip.compress(b'{"a": 1}'), "gzip", 100)
b'{"a": 1}'
>>> try:
...     inflate(gzip.compress(bytes(1000)), "gzip", 100)
... except Problem as e:
...     print(e.status, e.extra["limit"])
413 max_body_bytes
"""

from __future__ import annotations

import zlib

from shax_server.problems import Problem, limit_exceeded

GZIP = 16 + zlib.MAX_WBITS  # gzip header and trailer
ZLIB = zlib.MAX_WBITS  # "deflate" in HTTP is the zlib format (RFC 9110)
RAW = -zlib.MAX_WBITS  # some clients send bare deflate data


def inflate(body: bytes, encoding: str | None, limit: int) -> bytes:
    """``body`` decoded from ``encoding`` (none or ``identity``: unchanged), at most ``limit``
    bytes, or a Problem: 415 for an unknown coding, 400 for corrupt data, 413 over the limit."""
    coding = (encoding or "").strip().lower()
    if coding in ("", "identity"):
        return body
    if coding not in ("gzip", "x-gzip", "deflate"):
        raise Problem(
            415,
            "Unsupported media type",
            f"Content-Encoding {encoding!r} is not supported; use gzip or deflate",
            kind="unsupported-encoding",
        )
    if coding == "deflate":
        try:
            return _inflate(body, ZLIB, coding, limit)
        except zlib.error:
            try:
                return _inflate(body, RAW, coding, limit)
            except zlib.error as e:
                raise _corrupt(coding, str(e)) from None
    return _inflate(body, GZIP, coding, limit)


def _inflate(body: bytes, wbits: int, coding: str, limit: int) -> bytes:
    out = bytearray()
    data = body
    while True:  # a gzip body may hold several members, one after the other
        d = zlib.decompressobj(wbits)
        try:
            out += d.decompress(data, limit + 1 - len(out))
            while d.unconsumed_tail and len(out) <= limit:
                out += d.decompress(d.unconsumed_tail, limit + 1 - len(out))
        except zlib.error as e:
            if wbits != GZIP:
                raise
            raise _corrupt(coding, str(e)) from None
        if len(out) > limit:
            raise limit_exceeded(
                "max_body_bytes",
                f"the {coding} body inflates to more than the limit of {limit} bytes "
                "(max_body_bytes)",
            )
        if not d.eof:
            raise _corrupt(coding, "the compressed data is truncated")
        data = d.unused_data
        if wbits != GZIP or not data:
            return bytes(out)


def _corrupt(coding: str, why: str) -> Problem:
    return Problem(
        400,
        "Malformed body",
        f"the {coding} body does not decompress: {why}",
        kind="malformed-body",
    )
