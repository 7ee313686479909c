"""Run the benchmark workloads W1–W5 (issue 7), W6 (gather) and W7 (loops, issue 15) for shax
and every installed peer; write a report.

    python bench/run.py            full suite (~10 minutes), writes docs/benchmarks.md + plot
    python bench/run.py --quick    smoke run (< 1 minute): small sizes, W5 tiny; the report goes
                                   to a temporary directory unless --out is given

Peers (hand-written NumPy always; JAX jit and eager, PyTorch eager, autograd when installed with
``pip install -e '.[bench]'``) are measured side by side in the same process run. Exit status is
0 whether or not targets are met; non-zero only when the suite itself (or shax) crashes.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import subprocess
import sys
import tempfile
import time
import traceback

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from common import REPO, Config, Section, log, table, version_of  # noqa: E402

WORKLOADS = ("w1", "w2", "w3", "w4", "w5", "w6", "w7")


def cap_threads(n: int) -> None:
    """Before NumPy, PyTorch or JAX is imported here (subprocesses inherit the environment)."""
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(n)
    flags = os.environ.get("XLA_FLAGS", "")
    if n == 1:
        flags += " --xla_cpu_multi_thread_eigen=false"
    os.environ["XLA_FLAGS"] = flags.strip()
    os.environ["SHAX_BENCH_THREADS"] = str(n)


def machine_facts() -> list[str]:
    import numpy as np

    facts = []
    cpu = "?"
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    n_aff = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else "?"
    facts.append(f"CPU: {cpu}; {os.cpu_count()} logical cores ({n_aff} usable by this process)")
    try:
        with open("/proc/meminfo") as fh:
            mem = int(fh.readline().split()[1]) / 2**20
        facts.append(f"Memory: {mem:.1f} GiB")
    except OSError:
        pass
    facts.append(f"Load average at start: {', '.join(f'{x:.2f}' for x in os.getloadavg())}")
    facts.append(f"OS: {platform.platform()}; Python {platform.python_version()}")
    blas = "?"
    try:
        from threadpoolctl import threadpool_info

        blas = "; ".join(
            f"{i.get('internal_api')} {i.get('version')} ({i.get('threading_layer')}, "
            f"{i.get('num_threads')} threads, {i.get('architecture')})"
            for i in threadpool_info()
            if i.get("user_api") == "blas"
        )
    except ImportError:
        try:
            cfg = np.show_config(mode="dicts")
            b = cfg["Build Dependencies"]["blas"]
            blas = f"{b.get('name')} {b.get('version')} (threadpoolctl not installed)"
        except Exception:  # noqa: BLE001
            pass
    facts.append(f"NumPy BLAS: {blas}")
    capped = os.environ.get("SHAX_BENCH_THREADS")
    facts.append(
        f"Threads: capped to {capped} for every library (--threads)"
        if capped
        else "Threads: each library's default (NumPy's BLAS, PyTorch intra-op, XLA)"
    )
    versions = []
    for dist in (
        "shax",
        "numpy",
        "jax",
        "jaxlib",
        "torch",
        "autograd",
        "fastapi",
        "uvicorn",
        "uvloop",
        "httptools",
        "pydantic",
        "orjson",
        "matplotlib",
    ):
        v = version_of(dist)
        versions.append(f"{dist} {v}" if v else f"{dist} (not installed)")
    facts.append("Versions: " + ", ".join(versions))
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "shax_core", "server"],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout
        facts.append(
            f"shax commit: {commit or '?'}"
            + (" (with uncommitted changes in shax_core/server)" if dirty.strip() else "")
        )
    except (OSError, subprocess.SubprocessError):
        pass
    return facts


def render(
    cfg: Config, sections: list[Section], facts: list[str], crashed: list[str], elapsed: float
) -> str:
    out = ["# Benchmarks", ""]
    when = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    mode = "`python bench/run.py --quick` (smoke sizes)" if cfg.quick else "`make bench`"
    out += [
        f"Written by {mode} on {when} in {elapsed:.0f} s. Rerun with `make bench` (peers: "
        "`.venv/bin/pip install -e '.[bench]'`; a peer that is not installed is skipped). "
        "Workloads and targets: the module docstrings of bench/w1_seed.py ... w5_service.py.",
        "",
        "Method: every figure is the median of at least 5 timed runs after a warm-up; the "
        "implementations of a workload are timed in interleaved rounds in the same process, so "
        "ratios are side by side under the same load (this machine is shared with other jobs "
        "and its absolute numbers are noisy; trust the ratios more). Fast calls are timed in "
        "calibrated loops of many calls per sample. Every peer's results are checked against "
        "the hand-written NumPy reference first. Imports are never timed.",
        "",
        "## Machine",
        "",
    ]
    out += [f"- {f}" for f in facts]
    out += ["", "## Targets", ""]
    rows = []
    for s in sections:
        for t in s.targets:
            verdict = {True: "met", False: "**missed**", None: "not measured"}[t.met]
            rows.append([t.workload, t.what, t.measured, t.target, verdict])
    out += table(["workload", "target", "measured", "goal", ""], rows)
    if crashed:
        out += ["", "## Crashed", ""] + [f"```\n{c}\n```" for c in crashed]
    for s in sections:
        out += ["", f"## {s.title}", ""] + s.lines
        if s.key == "w4" and s.data.get("plot"):
            out += ["", f"![W4 scaling]({os.path.basename(s.data['plot'])})"]
        if s.notes:
            out += ["", "Notes:", ""] + [f"- {n}" for n in s.notes]
    return "\n".join(out) + "\n"


NOTES_HEADING = "## Dated measurements (kept across runs)"


def kept_notes(path: str) -> str:
    """The report's dated-measurements section (from its heading to the end), which a new
    run keeps: before/after figures of a change, written by hand from runs of this suite."""
    try:
        with open(path, encoding="utf-8") as fh:
            text = fh.read()
    except OSError:
        return ""
    at = text.find(NOTES_HEADING)
    return "" if at < 0 else "\n" + text[at:].rstrip() + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="smoke sizes, < 1 minute")
    ap.add_argument("--only", default="", help="comma-separated workloads, e.g. w1,w4")
    ap.add_argument("--skip-peer", default="", help="comma-separated peers: jax,torch,autograd")
    ap.add_argument("--peers", action="store_true", help="with --quick: include the peers too")
    ap.add_argument(
        "--threads",
        type=int,
        default=None,
        help="cap every library's threads (BLAS, OpenMP, PyTorch, XLA) to this many; "
        "default: each library's own default",
    )
    ap.add_argument(
        "--out",
        default=None,
        help="report path (default: docs/benchmarks.md; --quick: a temporary directory)",
    )
    ap.add_argument(
        "--budget",
        type=float,
        default=None,
        help="seconds for the whole suite (default 560, --quick 50)",
    )
    args = ap.parse_args(argv)
    if args.threads:
        cap_threads(args.threads)

    if args.out:
        out = os.path.abspath(args.out)
    elif args.quick:
        out = os.path.join(tempfile.gettempdir(), "shax-bench-quick", "benchmarks.md")
    else:
        out = os.path.join(REPO, "docs", "benchmarks.md")
    os.makedirs(os.path.dirname(out), exist_ok=True)
    budget = args.budget or (50.0 if args.quick else 560.0)
    start = time.monotonic()
    cfg = Config(
        quick=args.quick,
        repeats=5,
        sample_s=0.005 if args.quick else 0.05,
        deadline=start + budget,
        out_dir=os.path.dirname(out),
        only=tuple(w for w in args.only.split(",") if w),
        skip_peers=tuple(p for p in args.skip_peer.split(",") if p),
        peers_in_quick=args.peers,
    )
    unknown = [w for w in cfg.only if w not in WORKLOADS]
    if unknown:
        ap.error(f"unknown workload(s) {unknown}; choose from {WORKLOADS}")
    facts = machine_facts()
    sections: list[Section] = []
    crashed: list[str] = []
    # each workload gets a share of the budget plus whatever the earlier ones left unused
    shares = {"w1": 0.08, "w2": 0.08, "w3": 0.19, "w4": 0.45, "w5": 0.1, "w6": 0.05, "w7": 0.05}
    chosen = [k for k in WORKLOADS if not cfg.only or k in cfg.only]
    total_share = sum(shares[k] for k in chosen)
    for key in chosen:
        left_after = sum(shares[k] for k in chosen[chosen.index(key) + 1 :]) / total_share
        cfg.deadline = start + budget * (1 - left_after)
        mod = __import__(
            {
                "w1": "w1_seed",
                "w2": "w2_mlp",
                "w3": "w3_chain",
                "w4": "w4_deep",
                "w5": "w5_service",
                "w6": "w6_gather",
                "w7": "w7_loops",
            }[key]
        )
        t0 = time.monotonic()
        log(f"== {key} ({cfg.remaining():.0f} s of budget left)")
        try:
            sec = mod.run(cfg)
        except Exception:  # noqa: BLE001  (reported, and the exit status says so)
            tb = traceback.format_exc()
            log(tb)
            crashed.append(f"{key}: {tb.strip()}")
            continue
        sec.notes.append(f"{key} took {time.monotonic() - t0:.0f} s")
        sections.append(sec)
    elapsed = time.monotonic() - start
    facts.append(f"Load average at end: {', '.join(f'{x:.2f}' for x in os.getloadavg())}")
    report = render(cfg, sections, facts, crashed, elapsed) + kept_notes(out)
    with open(out, "w", encoding="utf-8") as fh:
        fh.write(report)
    # a short summary on stdout
    print(f"report: {out} ({elapsed:.0f} s)")
    for s in sections:
        for t in s.targets:
            verdict = {True: "met", False: "MISSED", None: "n/a"}[t.met]
            print(f"  {t.workload} {t.what}: {t.measured} (goal {t.target}) {verdict}")
    if crashed:
        print(f"crashed: {', '.join(c.split(':')[0] for c in crashed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
