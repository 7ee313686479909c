"""The load test at CI size (well under 30 s): zero errors, bounded memory, 503 not hangs."""

from __future__ import annotations

import loadtest


def test_load_small():
    report = loadtest.run(
        clients=12, requests=400, duration=15, n_programs=40, cache_entries=12, burst=16
    )
    print(loadtest.markdown(report))
    failed = [k for k, ok in report["checks"].items() if not ok]
    assert not failed, (failed, report)
