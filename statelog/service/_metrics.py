"""Prometheus text metrics without a dependency: counters, gauges, histograms.

Exposed at ``/metrics`` (text format 0.0.4). Names start with ``statelog_``.
"""

from __future__ import annotations

import bisect
from collections import defaultdict

__all__ = ["Metrics"]

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
_RUN_BUCKETS = (0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 1800.0)


class _Histogram:
    __slots__ = ("buckets", "counts", "sum", "total")

    def __init__(self, buckets: tuple[float, ...]) -> None:
        self.buckets = buckets
        self.counts = [0] * (len(buckets) + 1)
        self.sum = 0.0
        self.total = 0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.buckets, value)] += 1
        self.sum += value
        self.total += 1

    def lines(self, name: str, labels: str) -> list[str]:
        out = []
        running = 0
        sep = "," if labels else ""
        for bound, count in zip(self.buckets, self.counts, strict=False):
            running += count
            out.append(f'{name}_bucket{{{labels}{sep}le="{bound}"}} {running}')
        out.append(f'{name}_bucket{{{labels}{sep}le="+Inf"}} {self.total}')
        braces = f"{{{labels}}}" if labels else ""
        out.append(f"{name}_sum{braces} {self.sum:.6f}")
        out.append(f"{name}_count{braces} {self.total}")
        return out


class Metrics:
    """The service's counters and gauges; all updates happen on the event loop."""

    def __init__(self) -> None:
        self.steps = 0
        self.appends = 0
        self.runs_started = 0
        self.runs_resumed = 0
        self.runs_finished: dict[str, int] = defaultdict(int)
        self.queue_depth = 0
        self.running = 0
        self.running_max = 0
        self.sse_clients = 0
        self.run_seconds = _Histogram(_RUN_BUCKETS)
        self.http: dict[tuple[str, str, int], _Histogram] = {}

    def run_started(self) -> None:
        self.running += 1
        self.runs_started += 1
        self.running_max = max(self.running_max, self.running)

    def run_stopped(self) -> None:
        self.running -= 1

    def observe_http(self, method: str, route: str, status: int, seconds: float) -> None:
        key = (method, route, status)
        histogram = self.http.get(key)
        if histogram is None:
            histogram = self.http[key] = _Histogram(_LATENCY_BUCKETS)
        histogram.observe(seconds)

    def render(self) -> str:
        lines = [
            "# HELP statelog_steps_total Action steps run by the service.",
            "# TYPE statelog_steps_total counter",
            f"statelog_steps_total {self.steps}",
            "# HELP statelog_appends_total Step and fork events the service appended to the log.",
            "# TYPE statelog_appends_total counter",
            f"statelog_appends_total {self.appends}",
            "# HELP statelog_runs_started_total Run attempts started (resumes included).",
            "# TYPE statelog_runs_started_total counter",
            f"statelog_runs_started_total {self.runs_started}",
            "# HELP statelog_runs_resumed_total Runs resumed after a restart.",
            "# TYPE statelog_runs_resumed_total counter",
            f"statelog_runs_resumed_total {self.runs_resumed}",
            "# HELP statelog_runs_finished_total Operations ended, by status.",
            "# TYPE statelog_runs_finished_total counter",
        ]
        for status, count in sorted(self.runs_finished.items()):
            lines.append(f'statelog_runs_finished_total{{status="{status}"}} {count}')
        http = self.http
        lines += [
            "# HELP statelog_queue_depth Operations waiting for a run slot.",
            "# TYPE statelog_queue_depth gauge",
            f"statelog_queue_depth {self.queue_depth}",
            "# HELP statelog_runs_running Runs executing now.",
            "# TYPE statelog_runs_running gauge",
            f"statelog_runs_running {self.running}",
            "# HELP statelog_runs_running_max Most runs executing at once since start.",
            "# TYPE statelog_runs_running_max gauge",
            f"statelog_runs_running_max {self.running_max}",
            "# HELP statelog_sse_clients Open event streams.",
            "# TYPE statelog_sse_clients gauge",
            f"statelog_sse_clients {self.sse_clients}",
            "# HELP statelog_run_duration_seconds Wall time of run attempts.",
            "# TYPE statelog_run_duration_seconds histogram",
            *self.run_seconds.lines("statelog_run_duration_seconds", ""),
            "# HELP statelog_http_request_duration_seconds HTTP request latency.",
            "# TYPE statelog_http_request_duration_seconds histogram",
        ]
        for (method, route, code), histogram in sorted(http.items()):
            labels = f'method="{method}",route="{route}",status="{code}"'
            lines += histogram.lines("statelog_http_request_duration_seconds", labels)
        return "\n".join(lines) + "\n"
