"""Reading Prometheus text exposition (``GET /metrics``) in the tests."""

from __future__ import annotations

import re


def metric_sum(text: str, name: str, **labels: str) -> float:
    """The sum of the samples of metric ``name`` whose labels include ``labels`` (0 when
    there are none)."""
    total = 0.0
    for line in text.splitlines():
        m = re.match(r"^(\w+)(?:\{(.*)\})? (\S+)$", line)
        if m and m[1] == name:
            got = dict(re.findall(r'(\w+)="([^"]*)"', m[2] or ""))
            if all(got.get(k) == v for k, v in labels.items()):
                total += float(m[3])
    return total
