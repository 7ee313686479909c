"""Issue 12's attacks at the issue's own sizes, once, with the liveness figures (for the docs).

    .venv/bin/python tests/attacks/run_full.py            # a markdown table on stdout
    .venv/bin/python tests/attacks/run_full.py --json     # machine-readable

One ``shax serve`` on defaults (plus short connection timeouts for the slow-connection attack,
and API keys for the upload one); every attack runs under a ``LivenessProbe`` (GET
/v2/health/live every 100 ms). Bounded: each attack has its own timeouts; the whole run takes
about a minute on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.attacks import attacks  # noqa: E402
from tests.attacks.attacks import LIVENESS_BOUND, LivenessProbe  # noqa: E402

FAST_CLOSE = {"SHAX_HEADER_TIMEOUT": "2", "SHAX_BODY_TIMEOUT": "2"}


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    rows = []

    def run(name: str, url: str, fn, *a, **k) -> None:
        with LivenessProbe(url) as probe:
            seen = fn(url, *a, **k)
        rows.append({"attack": name, "observed": seen, "liveness": probe.summary()})

    with attacks.serve(FAST_CLOSE) as (url, _):
        run(
            "1 output bomb: 4 x eval of broadcast [8192,8192] + sin", url, attacks.output_bomb, 8192
        )
        run('2 60 MiB of \\"[ in a string', url, attacks.escaped_brackets, 60)
        run("3 shape [16000000] (61 MiB) for f32[3]", url, attacks.lying_shape, 16_000_000)
        run("6 two 60k-equation compiles + a trivial one", url, attacks.compile_flood, 60_000)
        run(
            "6 two 10k-equation compiles (the limit) + a trivial one",
            url,
            attacks.compile_flood,
            10_000,
        )
        run(
            "7 300 idle/slow connections, 1 MiB header, slow body",
            url,
            attacks.slow_connections,
            150,
            2.0,
        )
    with attacks.serve({"SHAX_API_KEYS": "k-full-size-run-0123456789"}) as (url, _):
        run("5 64 MiB upload without a key", url, attacks.unauthenticated_upload, 63)
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        print("| attack | observed | liveness probes | worst wait |")
        print("|---|---|---|---|")
        for r in rows:
            lv = r["liveness"]
            ok = "ok" if (lv["max_ms"] or 1e9) <= 1e3 * LIVENESS_BOUND else "OVER"
            print(
                f"| {r['attack']} | `{json.dumps(r['observed'])}` | {lv['probes']} "
                f"(p50 {lv['p50_ms']} ms, {lv['failures']} failed) | {lv['max_ms']} ms {ok} |"
            )
    return 0 if all((r["liveness"]["max_ms"] or 1e9) <= 1e3 * LIVENESS_BOUND for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
