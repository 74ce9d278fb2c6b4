"""Request latency of a server's replicas, per lane, as a Ray metric.

Each replica observes how long its `predict` (interactive) and `annotate` (bulk) calls
take, queueing behind the other lane included, into a `ray.util.metrics` histogram. Ray's
metrics agent on each node sums it per process and serves it in the Prometheus format
(`ray_preannotate_request_latency_seconds`, next to Serve's own `ray_serve_*`); the
router's `/metrics` reads it back from every node (`scheduler/metrics.py`). An observation
is an in-memory update that Ray ships in the background: no call, no store query, per
request.
"""

import time
from collections.abc import Iterator
from contextlib import contextmanager

from ray.util.metrics import Histogram

LATENCY_METRIC = "preannotate_request_latency_seconds"
BOUNDARIES = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0]
"""Seconds: a one-sentence interactive call takes milliseconds, a bulk batch seconds."""
INTERACTIVE = "interactive"
BULK = "bulk"


class LaneLatency:
    """The latency histogram of one server's replica, tagged with the server's id."""

    def __init__(self, server_id: str):
        self._histogram = Histogram(
            LATENCY_METRIC,
            description="Seconds a replica took to answer a call, by server and lane.",
            boundaries=BOUNDARIES,
            tag_keys=("server", "lane"),
        )
        self._histogram.set_default_tags({"server": server_id})

    @contextmanager
    def timed(self, lane: str) -> Iterator[None]:
        """Observe the time the block takes (also when it raises) under `lane`."""
        started = time.perf_counter()
        try:
            yield
        finally:
            self._histogram.observe(time.perf_counter() - started, tags={"lane": lane})
