"""Prometheus metrics in the text exposition format.

A handful of counters, gauges and histograms per app (so apps built in tests never share state),
kept in plain Python and rendered without a client library: one process, one set of numbers.

Several worker processes (``shax serve --workers N``, which sets ``PROMETHEUS_MULTIPROC_DIR``):
every metric also writes to prometheus-client's multiprocess files, and ``/metrics`` renders the
sum over all live workers (``MultiProcessCollector``), whichever worker answers the scrape.
Counters and histograms add up; gauges are summed over live workers (``livesum``), except
``shax_redis_up`` (the minimum: 0 if any worker cannot reach Redis). Gauges read at scrape
time (cache entries and bytes) are written by each worker after each of its requests.
"""

from __future__ import annotations

import bisect
import os
import threading
from collections import defaultdict

MULTIPROCESS_ENV = "PROMETHEUS_MULTIPROC_DIR"


def _multiprocess() -> bool:
    return bool(os.environ.get(MULTIPROCESS_ENV))


LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


def _labels(names: tuple[str, ...], values: tuple[str, ...]) -> str:
    if not names:
        return ""
    inner = ",".join(
        f'{n}="{str(v).replace(chr(92), chr(92) * 2).replace(chr(34), chr(92) + chr(34))}"'
        for n, v in zip(names, values, strict=True)
    )
    return "{" + inner + "}"


class _Metric:
    kind = ""

    def __init__(self, name: str, help_: str, labels: tuple[str, ...] = ()):
        self.name, self.help, self.labelnames = name, help_, labels
        self.lock = threading.Lock()
        self.shared = None  # the prometheus-client twin in multiprocess mode

    def share(self) -> None:
        """Also write to prometheus-client's multiprocess files (registered nowhere: the
        multiprocess collector reads the files)."""
        import prometheus_client as pc

        kind = {"counter": pc.Counter, "gauge": pc.Gauge, "histogram": pc.Histogram}[self.kind]
        kwargs: dict = {"labelnames": self.labelnames, "registry": None}
        name = self.name.removesuffix("_total") if self.kind == "counter" else self.name
        if self.kind == "gauge":
            kwargs["multiprocess_mode"] = "min" if self.name == "shax_redis_up" else "livesum"
        if self.kind == "histogram":
            kwargs["buckets"] = self.buckets
        self.shared = kind(name, self.help, **kwargs)

    def header(self) -> list[str]:
        return [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} {self.kind}"]


class Counter(_Metric):
    kind = "counter"

    def __init__(self, *a, **k):
        super().__init__(*a, **k)
        self.values: dict[tuple, float] = defaultdict(float)

    def inc(self, *labels: str, amount: float = 1.0) -> None:
        with self.lock:
            self.values[labels] += amount
        if self.shared is not None:
            (self.shared.labels(*labels) if labels else self.shared).inc(amount)

    def remove(self, *prefix: str) -> None:
        """Drop every series whose first label values are ``prefix``."""
        with self.lock:
            keys = [k for k in self.values if k[: len(prefix)] == prefix]
            for key in keys:
                del self.values[key]
        if self.shared is not None:
            for key in keys:
                self.shared.remove(*key)

    def render(self) -> list[str]:
        lines = self.header()
        with self.lock:
            items = sorted(self.values.items())
        lines += [f"{self.name}{_labels(self.labelnames, k)} {v}" for k, v in items]
        return lines


class Gauge(_Metric):
    kind = "gauge"

    def __init__(self, name: str, help_: str, read=None):
        super().__init__(name, help_)
        self.value = 0.0
        self.read = read  # a callable sampled at scrape time, when given

    def add(self, amount: float) -> None:
        with self.lock:
            self.value += amount
        if self.shared is not None:
            self.shared.inc(amount)

    def set(self, value: float) -> None:
        with self.lock:
            self.value = value
        if self.shared is not None:
            self.shared.set(value)

    def refresh(self) -> None:
        """Write a read-at-scrape gauge's current value to the shared files."""
        if self.shared is not None and self.read is not None:
            self.shared.set(self.read())

    def render(self) -> list[str]:
        value = self.read() if self.read else self.value
        return self.header() + [f"{self.name} {value}"]


class Histogram(_Metric):
    kind = "histogram"

    def __init__(self, name: str, help_: str, labels=(), buckets=LATENCY_BUCKETS):
        super().__init__(name, help_, labels)
        self.buckets = tuple(buckets)
        self.series: dict[tuple, list] = {}

    def observe(self, value: float, *labels: str) -> None:
        with self.lock:
            s = self.series.get(labels)
            if s is None:
                s = self.series[labels] = [[0] * (len(self.buckets) + 1), 0.0, 0]
            s[0][bisect.bisect_left(self.buckets, value)] += 1
            s[1] += value
            s[2] += 1
        if self.shared is not None:
            (self.shared.labels(*labels) if labels else self.shared).observe(value)

    def render(self) -> list[str]:
        lines = self.header()
        with self.lock:
            items = sorted((k, ([*v[0]], v[1], v[2])) for k, v in self.series.items())
        for key, (counts, total, n) in items:
            cumulative = 0
            for bound, c in zip((*self.buckets, "+Inf"), counts, strict=True):
                cumulative += c
                names = (*self.labelnames, "le")
                lines.append(f"{self.name}_bucket{_labels(names, (*key, str(bound)))} {cumulative}")
            lines.append(f"{self.name}_sum{_labels(self.labelnames, key)} {total}")
            lines.append(f"{self.name}_count{_labels(self.labelnames, key)} {n}")
        return lines


class Metrics:
    """The service's metrics; ``render()`` is the body of GET /metrics."""

    def __init__(self, cache_entries=lambda: 0, cache_bytes=lambda: 0):
        self.requests = Counter(
            "shax_requests_total", "HTTP requests by route and status", ("route", "status")
        )
        self.latency = Histogram(
            "shax_request_duration_seconds", "HTTP request latency by route", ("route",)
        )
        self.compile_time = Histogram(
            "shax_compile_duration_seconds", "time to compile a program's VJP"
        )
        self.fast_path = Counter(
            "shax_fast_path_requests_total",
            "requests answered by the cached-call fast path (fastpath.py), ahead of the routing",
        )
        self.cache_hits = Counter("shax_cache_hits_total", "compiled-program cache hits")
        self.cache_misses = Counter("shax_cache_misses_total", "compiled-program cache misses")
        self.inflight = Gauge("shax_evaluations_in_flight", "evaluations running or queued")
        self.rejected = Counter(
            "shax_evaluations_rejected_total", "evaluations refused with 503 (too many in flight)"
        )
        self.cache_entries = Gauge("shax_cache_entries", "programs in the cache", cache_entries)
        self.cache_bytes = Gauge(
            "shax_cache_bytes", "estimated bytes held by the cache", cache_bytes
        )
        # shared store (Redis): see redis_store.py; the redis_* series appear once a Redis store
        # is attached (``bind_metrics``), so a single process without Redis does not report them
        self.store_hits = Counter(
            "shax_store_hits_total", "local cache misses served from the shared store, uncompiled"
        )
        self.store_corrupt = Counter(
            "shax_store_corrupt_total", "shared-store entries ignored as unusable (then compiled)"
        )
        self.redis_errors = Counter(
            "shax_redis_errors_total", "failed Redis calls by operation, reason", ("op", "reason")
        )
        self.redis_up = Gauge(
            "shax_redis_up", "1 if Redis answered its last health probe (every second), else 0"
        )
        self.store_refused = Counter(
            "shax_store_refused_total",
            "shared-store entries whose VJP was not used as stored (unsigned, bad-signature, "
            "no-secret), so the program was compiled from its source",
            ("reason",),
        )
        self.store_republished = Counter(
            "shax_store_republished_total", "programs written back to a store that had lost them"
        )
        self.compiling = Gauge("shax_compilations_in_flight", "compilations running or queued")
        self.compile_rejected = Counter(
            "shax_compilations_rejected_total", "compilations refused with 503 (queue full)"
        )
        # Triton's per-model inference series (same names and labels as Triton's /metrics)
        mv = ("model", "version")
        self.triton_success = Counter(
            "nv_inference_request_success", "successful inference requests", mv
        )
        self.triton_failure = Counter(
            "nv_inference_request_failure",
            "failed inference requests (reason REJECTED, CANCELED, BACKEND or OTHER)",
            (*mv, "reason"),
        )
        self.triton_count = Counter("nv_inference_count", "inferences performed", mv)
        self.triton_exec_count = Counter(
            "nv_inference_exec_count", "model executions performed (no batching: = inferences)", mv
        )
        self.triton_request_us = Counter(
            "nv_inference_request_duration_us", "cumulative inference request duration, us", mv
        )
        self.triton_queue_us = Counter(
            "nv_inference_queue_duration_us", "cumulative time waiting for a worker thread, us", mv
        )
        self.triton_compute_input_us = Counter(
            "nv_inference_compute_input_duration_us",
            "cumulative time decoding and checking input tensors, us",
            mv,
        )
        self.triton_compute_infer_us = Counter(
            "nv_inference_compute_infer_duration_us", "cumulative time evaluating the VJP, us", mv
        )
        self.triton_compute_output_us = Counter(
            "nv_inference_compute_output_duration_us", "cumulative time encoding outputs, us", mv
        )
        self.triton_phase_us = {
            "queue": self.triton_queue_us,
            "compute_input": self.triton_compute_input_us,
            "compute_infer": self.triton_compute_infer_us,
            "compute_output": self.triton_compute_output_us,
        }
        self.redis_attached = False
        self.shared = False
        if _multiprocess():
            self.share()

    def triton(self) -> list[Counter]:
        return [
            self.triton_success,
            self.triton_failure,
            self.triton_count,
            self.triton_exec_count,
            self.triton_request_us,
            *self.triton_phase_us.values(),
        ]

    def forget_model(self, key: tuple[str, str]) -> None:
        """Drop the Triton series of a model version (unloaded, or a program id evicted from
        the statistics): label sets stay bounded."""
        for counter in self.triton():
            counter.remove(*key)

    def all(self) -> list[_Metric]:
        return [v for v in vars(self).values() if isinstance(v, _Metric)]

    def share(self) -> None:
        """Multiprocess mode (see the module docstring); called once per worker process."""
        self.shared = True
        for m in self.all():
            m.share()

    def refresh(self) -> None:
        """After a request: the read-at-scrape gauges, for the other workers' scrapes."""
        if self.shared:
            for m in self.all():
                if isinstance(m, Gauge):
                    m.refresh()

    def render(self) -> str:
        if self.shared:
            import prometheus_client as pc
            from prometheus_client.multiprocess import MultiProcessCollector

            self.refresh()
            registry = pc.CollectorRegistry()
            MultiProcessCollector(registry)
            return pc.generate_latest(registry).decode()
        lines: list[str] = []
        for m in (
            self.requests,
            self.latency,
            self.fast_path,
            self.compile_time,
            self.cache_hits,
            self.cache_misses,
            self.cache_entries,
            self.cache_bytes,
            self.inflight,
            self.rejected,
            self.compiling,
            self.compile_rejected,
            self.store_hits,
            self.store_corrupt,
            self.store_refused,
            self.store_republished,
            *((self.redis_errors, self.redis_up) if self.redis_attached else ()),
            *self.triton(),
        ):
            lines += m.render()
        return "\n".join(lines) + "\n"
