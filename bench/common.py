"""Shared pieces of the benchmark suite: configuration, the timing helper, peers, report rows.

Timing: every implementation of a workload is warmed up, then sampled in interleaved rounds
(round r times implementation A, then B, then C, ...), so all of them see the same noise of this
shared machine and their ratios are measured side by side. A sample of a very fast callable runs
it in a loop calibrated to last about ``sample_s`` and divides; the figure quoted is the median
of the samples (at least 5).
"""

from __future__ import annotations

import gc
import importlib
import importlib.util
import os
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(BENCH_DIR)
if REPO not in sys.path:  # the process helpers shared with the tests (tests/servers.py)
    sys.path.append(REPO)

PEERS = ("numpy", "jax", "torch", "autograd")
PEER_PACKAGES = {"jax": "jax", "torch": "torch", "autograd": "autograd"}


@dataclass
class Config:
    quick: bool = False
    repeats: int = 5  # samples per implementation (the median is quoted)
    sample_s: float = 0.02  # a sample of a fast callable lasts about this long
    deadline: float = 0.0  # time.monotonic() after which expensive optional parts are skipped
    out_dir: str = ""
    only: tuple[str, ...] = ()
    skip_peers: tuple[str, ...] = ()
    peers_in_quick: bool = False

    def remaining(self) -> float:
        return self.deadline - time.monotonic()


# ---------------------------------------------------------------------------------------------
# peers


_AVAILABLE: dict[str, bool] = {}


def have(peer: str, cfg: Config | None = None) -> bool:
    """Whether a peer framework is installed (and not excluded with --skip-peer)."""
    if cfg is not None and peer != "numpy":
        if peer in cfg.skip_peers or (cfg.quick and not cfg.peers_in_quick):
            return False
    if peer == "numpy":
        return True
    if peer not in _AVAILABLE:
        _AVAILABLE[peer] = importlib.util.find_spec(PEER_PACKAGES[peer]) is not None
    return _AVAILABLE[peer]


def import_jax():
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    jax = importlib.import_module("jax")
    return jax, importlib.import_module("jax.numpy")


def missing_note(peer: str, cfg: Config) -> str:
    if peer in cfg.skip_peers:
        return f"{peer}: skipped (--skip-peer)"
    if cfg.quick and not cfg.peers_in_quick and have(peer):
        return f"{peer}: skipped in --quick (add --peers to include it)"
    return f"{peer}: not installed, skipped (`pip install -e '.[bench]'`)"


def version_of(dist: str) -> str | None:
    try:
        from importlib.metadata import version

        return version(dist)
    except Exception:  # noqa: BLE001
        return None


# ---------------------------------------------------------------------------------------------
# timing


@dataclass
class Timing:
    """Seconds per call: the median of ``samples`` (each the mean over ``loops`` calls)."""

    samples: list[float] = field(default_factory=list)
    loops: int = 1
    error: str | None = None

    @property
    def median(self) -> float:
        return statistics.median(self.samples) if self.samples else float("nan")

    @property
    def ok(self) -> bool:
        return bool(self.samples) and self.error is None

    @property
    def runs(self) -> int:
        return len(self.samples) * self.loops


def _calibrate(fn: Callable[[], object], sample_s: float) -> tuple[int, float]:
    """(loops per sample, seconds of one call) so that a sample lasts about ``sample_s``."""
    one = float("inf")
    for _ in range(3):  # the fastest of three single calls: one scheduler hiccup is not the cost
        t0 = time.perf_counter()
        fn()
        one = min(one, time.perf_counter() - t0)
        if one >= sample_s:
            return 1, one
    loops = 1
    while True:
        t0 = time.perf_counter()
        for _ in range(loops):
            fn()
        dt = time.perf_counter() - t0
        if dt >= sample_s / 4 or loops >= 1_000_000:
            return max(1, int(loops * sample_s / max(dt, 1e-9))), dt / loops
        loops *= 4


def measure(
    fns: dict[str, Callable[[], object]],
    cfg: Config,
    *,
    repeats: int | None = None,
    warmup: int = 1,
) -> dict[str, Timing]:
    """Time each callable, interleaved round by round; ``{name: Timing}``.

    Each callable runs ``warmup`` times first (compilation, caches, allocator); a peer that
    raises is reported with its error instead of a time, while an error of shax itself (a name
    starting with "shax") propagates: the suite is also a smoke test of shax.
    """
    repeats = repeats or cfg.repeats
    timings = {name: Timing() for name in fns}
    live: dict[str, Callable[[], object]] = {}
    for name, fn in fns.items():
        try:
            for _ in range(max(warmup, 0)):
                fn()
            loops, _ = _calibrate(fn, cfg.sample_s)
        except Exception as e:  # noqa: BLE001
            if name.startswith("shax"):
                raise
            timings[name].error = f"{type(e).__name__}: {e}"
            continue
        timings[name].loops = loops
        live[name] = fn
    gc_was = gc.isenabled()
    for _ in range(repeats):
        for name, fn in live.items():
            t = timings[name]
            if t.error:
                continue
            gc.collect()
            gc.disable()
            try:
                t0 = time.perf_counter()
                for _ in range(t.loops):
                    fn()
                t.samples.append((time.perf_counter() - t0) / t.loops)
            except Exception as e:  # noqa: BLE001
                if name.startswith("shax"):
                    raise
                t.error = f"{type(e).__name__}: {e}"
            finally:
                if gc_was:
                    gc.enable()
    return timings


def time_once(fn: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


# ---------------------------------------------------------------------------------------------
# formatting


def fmt_time(s: float | None) -> str:
    if s is None or s != s:
        return "—"
    if s < 1e-3:
        return f"{s * 1e6:.1f} µs"
    if s < 1:
        return f"{s * 1e3:.2f} ms"
    return f"{s:.2f} s"


def fmt_ratio(x: float | None) -> str:
    if x is None or x != x:
        return "—"
    return f"{x:.2f}x"


def fmt_bytes(n: float | None) -> str:
    if n is None or n != n:
        return "—"
    return f"{n / 2**20:.1f} MiB"


def ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or a != a or b != b or b == 0:
        return None
    return a / b


def table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return lines


@dataclass
class Target:
    workload: str
    what: str
    measured: str
    target: str
    met: bool | None  # None: could not be measured (peer missing, skipped)


@dataclass
class Section:
    """One workload's part of the report."""

    key: str
    title: str
    lines: list[str] = field(default_factory=list)
    targets: list[Target] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    data: dict = field(default_factory=dict)


def log(*parts) -> None:
    print(*parts, file=sys.stderr, flush=True)


def close(a, b, rtol=2e-3, atol=1e-3) -> bool:
    """Loose agreement check between implementations (f32, different summation orders)."""
    import numpy as np

    try:
        return bool(np.allclose(np.asarray(a), np.asarray(b), rtol=rtol, atol=atol))
    except Exception:  # noqa: BLE001
        return False


_IMPLEMENTATIONS: dict[str, dict[str, tuple[str, Callable]]] = {}


def implementation(name: str, peer: str):
    """Declare ``make`` as the workload's implementation ``name`` (a row of its tables), which
    needs the library ``peer`` ("shax", "numpy", "jax", "torch", "autograd")."""

    def register(make: Callable) -> Callable:
        _IMPLEMENTATIONS.setdefault(make.__module__, {})[name] = (peer, make)
        return make

    return register


def implementations(module: str) -> dict[str, tuple[str, Callable]]:
    """``{name: (peer, make)}`` declared in ``module``, in the order of their definitions."""
    return dict(_IMPLEMENTATIONS.get(module, {}))


def build(sec: Section, cfg: Config, impls: dict, *args) -> dict:
    """A workload's implementations ``{name: (peer, make)}`` whose peer library is installed,
    each as ``make(*args)``; a note in ``sec`` for each missing peer and each failed setup.
    (Every workload's skeleton: build, check against the hand-written NumPy, measure, report.)"""
    made, missing = {}, set()
    for name, (peer, make) in impls.items():
        if peer != "shax" and not have(peer, cfg):
            missing.add(peer)
            continue
        try:
            made[name] = make(*args)
        except Exception as e:  # noqa: BLE001
            sec.notes.append(f"{name}: setup failed: {type(e).__name__}: {e}")
    sec.notes += [missing_note(p, cfg) for p in sorted(missing)]
    return made


def ratio_at_most(sec: Section, workload: str, what: str, r: float | None, limit: float) -> None:
    """A target ``r <= limit`` (a ratio; not measured when r is None)."""
    met = None if r is None else r <= limit
    sec.targets.append(Target(workload, what, fmt_ratio(r), f"<= {limit}x", met))


def ahead_of(sec: Section, workload: str, what: str, r: float | None) -> None:
    """A target ``r < 1``: shax's time over the peer's (not measured when r is None)."""
    met = r is not None and r < 1
    sec.targets.append(Target(workload, what, fmt_ratio(r), "< 1x (ahead)", met))
