"""The cluster's figures in the Prometheus text format, gathered when someone scrapes.

Nothing is counted on the request paths: at scrape time the scheduler reads what already
exists, so one `/metrics` page shows the whole cluster whichever router replica answers.

- jobs, tasks and training epochs: one aggregate query over the jobs table (the store has
  the exact counts, and they survive restarts);
- bulk tasks/s: the running jobs' own throughput (`Throughput`, kept by `BulkJob`);
- replicas and license seats: Serve's state and the deploy controller's seat count, the
  same figures deploys are checked against; license tokens: Ray's `license_token` resource;
- request latency: the replicas' histograms (`deployments/latency.py`), read back from the
  metrics agent of every node and summed per server and lane.

See docs/metrics.md for every name and label.
"""

import time
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.metrics_core import Metric

from preannotate.cluster.capacity import LICENSE_TOKEN, SeatUse
from preannotate.cluster.node_metrics import NodeMetrics, read_node_metrics
from preannotate.cluster.ray_cluster import nodes
from preannotate.cluster.serve_state import ServeSnapshot, serve_snapshot
from preannotate.deployments.latency import LATENCY_METRIC
from preannotate.scheduler.controller import DeployController
from preannotate.store import JobKind
from preannotate.store.models import Server

RAY_PREFIX = "ray_"
"""What Ray puts before the name of every metric its agents export."""
RATE_WINDOW_S = 30.0


class Throughput:
    """Tasks per second over the last RATE_WINDOW_S (or since the start, if shorter)."""

    def __init__(self) -> None:
        self.started = time.monotonic()
        self._events: deque[tuple[float, int]] = deque()

    def _forget_before(self, now: float) -> None:
        while self._events and now - self._events[0][0] > RATE_WINDOW_S:
            self._events.popleft()

    def add(self, tasks: int) -> None:
        now = time.monotonic()
        self._forget_before(now)
        self._events.append((now, tasks))

    def rate(self) -> float:
        now = time.monotonic()
        self._forget_before(now)
        seconds = min(RATE_WINDOW_S, now - self.started)
        return sum(n for _, n in self._events) / seconds if seconds > 0 else 0.0


@dataclass(frozen=True)
class BulkRate:
    job_id: int
    server_id: str
    tasks_per_second: float


JobTotals = Sequence[tuple[str, str, str | None, int, int, int]]


def job_families(totals: JobTotals) -> list[Metric]:
    """Jobs by kind and state; bulk tasks predicted and failed per server; epochs trained."""
    jobs = GaugeMetricFamily(
        "preannotate_jobs", "Jobs by kind and state.", labels=["kind", "state"]
    )
    predicted = CounterMetricFamily(
        "preannotate_tasks_predicted", "Tasks bulk jobs predicted, per server.", labels=["server"]
    )
    failed = CounterMetricFamily(
        "preannotate_tasks_failed",
        "Tasks bulk jobs recorded as failed (after retries), per server.",
        labels=["server"],
    )
    by_state: dict[tuple[str, str], int] = {}
    by_server: dict[str, tuple[int, int]] = {}
    epochs = 0
    for kind, state, server_id, count, done, failures in totals:
        by_state[kind, state] = by_state.get((kind, state), 0) + count
        if kind == JobKind.TRAIN:
            epochs += done
        else:
            before = by_server.get(server_id or "", (0, 0))
            by_server[server_id or ""] = (before[0] + done, before[1] + failures)
    for (kind, state), count in sorted(by_state.items()):
        jobs.add_metric([kind, state], count)
    for server_id, (done, failures) in sorted(by_server.items()):
        predicted.add_metric([server_id], done)
        failed.add_metric([server_id], failures)
    trained = CounterMetricFamily("preannotate_training_epochs", "Training epochs completed.")
    trained.add_metric([], epochs)
    return [jobs, predicted, failed, trained]


def rate_family(rates: Iterable[BulkRate]) -> Metric:
    family = GaugeMetricFamily(
        "preannotate_bulk_tasks_per_second",
        f"Tasks per second of each running bulk job, over the last {RATE_WINDOW_S:.0f} s.",
        labels=["job", "server"],
    )
    for rate in rates:
        family.add_metric([str(rate.job_id), rate.server_id], round(rate.tasks_per_second, 3))
    return family


def server_families(servers: Sequence[Server], snapshot: ServeSnapshot) -> list[Metric]:
    """Replicas per server, by Serve's replica state, and the number each asks for."""
    replicas = GaugeMetricFamily(
        "preannotate_server_replicas",
        "Replicas of each server by Serve replica state (RUNNING serves).",
        labels=["server", "state"],
    )
    target = GaugeMetricFamily(
        "preannotate_server_replicas_target", "Replicas each server asks for.", labels=["server"]
    )
    for server in servers:
        target.add_metric([server.id], server.replicas)
        app = snapshot.app(server.id)
        states: dict[str, int] = {}
        for replica in app.replicas if app else []:
            states[replica.state] = states.get(replica.state, 0) + 1
        for state, count in sorted(states.items()):
            replicas.add_metric([server.id, state], count)
    return [replicas, target]


def license_families(
    seats: SeatUse | None, tokens_total: float, tokens_free: float
) -> list[Metric]:
    """The license's seats (absent without a license) and the nodes' `license_token`s."""
    tokens = GaugeMetricFamily(
        "preannotate_license_tokens",
        "The license_token resource of all nodes: held by replicas and training runs, or free.",
        labels=["state"],
    )
    tokens.add_metric(["held"], tokens_total - tokens_free)
    tokens.add_metric(["free"], tokens_free)
    if seats is None:
        return [tokens]
    held = GaugeMetricFamily(
        "preannotate_license_seats",
        "The license's seats: held by licensed replicas and training runs, or free.",
        labels=["state"],
    )
    held.add_metric(["held"], seats.used)
    held.add_metric(["free"], seats.free)
    return [tokens, held]


def latency_family(found: NodeMetrics, server_ids: set[str]) -> list[Metric]:
    """The replicas' latency histograms, summed over replicas and nodes per server and lane
    (servers deleted since are left out), and how many nodes' agents answered."""
    buckets: dict[tuple[str, str], dict[str, float]] = {}
    sums: dict[tuple[str, str], float] = {}
    for family in found.families:
        if family.name != RAY_PREFIX + LATENCY_METRIC:
            continue
        for sample in family.samples:
            key = (sample.labels.get("server", ""), sample.labels.get("lane", ""))
            if key[0] not in server_ids:
                continue
            if sample.name.endswith("_bucket"):
                per_le = buckets.setdefault(key, {})
                per_le[sample.labels["le"]] = per_le.get(sample.labels["le"], 0.0) + sample.value
            elif sample.name.endswith("_sum"):
                sums[key] = sums.get(key, 0.0) + sample.value
    latency = HistogramMetricFamily(
        LATENCY_METRIC,
        "Seconds a server's replicas took to answer a call, by lane (interactive, bulk).",
        labels=["server", "lane"],
    )
    for key, per_le in sorted(buckets.items()):
        ordered = sorted(per_le.items(), key=lambda item: float(item[0]))
        latency.add_metric(list(key), buckets=ordered, sum_value=sums.get(key, 0.0))
    agents = GaugeMetricFamily(
        "preannotate_metrics_nodes",
        "Nodes whose Ray metrics agent answered this scrape (read) or did not (unreachable).",
        labels=["state"],
    )
    agents.add_metric(["read"], found.nodes_read)
    agents.add_metric(["unreachable"], found.nodes_unreachable)
    return [latency, agents]


class _Families:
    """A collector that yields families gathered beforehand."""

    def __init__(self, families: list[Metric]):
        self._families = families

    def collect(self) -> list[Metric]:
        return self._families


def exposition(families: list[Metric]) -> bytes:
    """The families in the Prometheus text format (version 0.0.4)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Families(families))  # type: ignore[arg-type]
    return generate_latest(registry)


def scrape(controller: DeployController, rates: list[BulkRate]) -> bytes:
    """Every figure, gathered now. Blocks (store, Serve, Ray, the nodes' agents): the
    scheduler runs it in a thread."""
    servers = controller.store.list_servers()
    snapshot = serve_snapshot()
    _, seats = controller.usage(snapshot)
    live = nodes()
    tokens_total = sum(node.total.get(LICENSE_TOKEN, 0.0) for node in live)
    tokens_free = sum(node.available.get(LICENSE_TOKEN, 0.0) for node in live)
    found = read_node_metrics(RAY_PREFIX + LATENCY_METRIC)
    return exposition(
        [
            *job_families(controller.store.job_totals()),
            rate_family(rates),
            *server_families(servers, snapshot),
            *license_families(seats, tokens_total, tokens_free),
            *latency_family(found, {server.id for server in servers}),
        ]
    )
