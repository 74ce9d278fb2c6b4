"""`GET /metrics`: the cluster's figures in the Prometheus text format.

The figures from the store and the merging of the nodes' latency histograms are checked on
a real SQLite file and real Prometheus pages; the rest scrapes the session's two-node
cluster while a bulk job runs: counters move, histograms fill, only admins may read it.
"""

import re
import time
import uuid
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from preannotate.cluster.node_metrics import NodeMetrics
from preannotate.scheduler.bulk import IN_FLIGHT
from preannotate.scheduler.metrics import exposition, job_families, latency_family
from preannotate.store import Store
from tests.conftest import ROOT, RayCluster
from tests.test_jobs import make_project, run_job, wait_job

DASHBOARD = ROOT / "docs" / "grafana-dashboard.json"
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def samples(page: str | bytes) -> Samples:
    """Every sample of a Prometheus page, by name and labels."""
    text = page.decode() if isinstance(page, bytes) else page
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(found: Samples, name: str, **labels: str) -> float | None:
    return found.get((name, frozenset(labels.items())))


# -- without a cluster ---------------------------------------------------------------------


def test_jobs_tasks_and_epochs_come_from_the_store(tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path / 'metrics.sqlite'}")
    project = store.create_project("metrics").id
    bulk = store.create_job(project, "preannotate", server_id="server-1", total=10)
    store.set_job_state(bulk.id, "running")
    store.record_job_progress(bulk.id, done=7, failed=2)
    other = store.create_job(project, "preannotate", server_id="server-1", total=5)
    store.record_job_progress(other.id, done=5)
    train = store.create_job(project, "train", total=3)
    store.record_job_progress(train.id, done=3)

    found = samples(exposition(job_families(store.job_totals())))

    assert value(found, "preannotate_jobs", kind="preannotate", state="running") == 1
    assert value(found, "preannotate_jobs", kind="preannotate", state="queued") == 1
    assert value(found, "preannotate_jobs", kind="train", state="queued") == 1
    assert value(found, "preannotate_tasks_predicted_total", server="server-1") == 12
    assert value(found, "preannotate_tasks_failed_total", server="server-1") == 2
    assert value(found, "preannotate_training_epochs_total") == 3
    store.close()


def node_page(worker: str, server: str, count: float, sum_: float) -> str:
    """A latency histogram as Ray's metrics agent exports it for one process."""
    labels = f'Component="core_worker",WorkerId="{worker}",lane="bulk",server="{server}"'
    lines = [
        "# HELP ray_preannotate_request_latency_seconds latency",
        "# TYPE ray_preannotate_request_latency_seconds histogram",
    ]
    for le, cumulative in (("0.1", 0.0), ("1.0", count), ("+Inf", count)):
        lines.append(
            f'ray_preannotate_request_latency_seconds_bucket{{{labels},le="{le}"}} {cumulative}'
        )
    lines.append(f"ray_preannotate_request_latency_seconds_count{{{labels}}} {count}")
    lines.append(f"ray_preannotate_request_latency_seconds_sum{{{labels}}} {sum_}")
    return "\n".join(lines) + "\n"


def test_latency_is_summed_over_replicas_and_nodes_per_server_and_lane() -> None:
    pages = [node_page("a", "server-1", 3, 1.5), node_page("b", "server-1", 2, 0.5)]
    pages.append(node_page("c", "server-gone", 9, 9.0))
    nodes = NodeMetrics(
        families=[f for page in pages for f in text_string_to_metric_families(page)],
        nodes_read=2,
        nodes_unreachable=1,
    )

    found = samples(exposition(latency_family(nodes, {"server-1"})))

    key = {"server": "server-1", "lane": "bulk"}
    assert value(found, "preannotate_request_latency_seconds_count", **key) == 5
    assert value(found, "preannotate_request_latency_seconds_sum", **key) == 2.0
    assert value(found, "preannotate_request_latency_seconds_bucket", le="1.0", **key) == 5
    assert value(found, "preannotate_request_latency_seconds_bucket", le="0.1", **key) == 0
    assert not any(dict(labels).get("server") == "server-gone" for _, labels in found)
    assert value(found, "preannotate_metrics_nodes", state="unreachable") == 1


# -- on the cluster ------------------------------------------------------------------------


def scrape(api: httpx.Client) -> tuple[Samples, float]:
    """The page and how long the scrape took, in seconds."""
    started = time.perf_counter()
    answer = api.get("/metrics")
    took = time.perf_counter() - started
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"].startswith("text/plain; version=0.0.4")
    return samples(answer.text), took


def latency_count(found: Samples, server: str, lane: str) -> float:
    count = value(found, "preannotate_request_latency_seconds_count", server=server, lane=lane)
    return count or 0.0


def test_a_scrape_during_a_bulk_job_shows_counters_moving_and_histograms_filling(
    api: httpx.Client, ray_cluster: RayCluster
) -> None:
    tasks = 4000
    project = make_project(api, tasks)
    job = run_job(api, project)
    server = job["server_id"]

    predicted: list[float] = []
    rates: list[float] = []
    durations: list[float] = []
    while api.get(f"/jobs/{job['id']}").json()["state"] in ("queued", "running"):
        found, took = scrape(api)
        durations.append(took)
        predicted.append(value(found, "preannotate_tasks_predicted_total", server=server) or 0)
        rate = value(found, "preannotate_bulk_tasks_per_second", job=str(job["id"]), server=server)
        rates.append(rate or 0.0)
        time.sleep(0.2)
    assert wait_job(api, job["id"])["state"] == "succeeded"

    moving = [n for n in predicted if 0 < n < tasks]
    assert len(set(moving)) >= 2 and moving == sorted(moving), predicted
    assert max(rates) > 0, rates
    found, _ = scrape(api)
    assert value(found, "preannotate_tasks_predicted_total", server=server) == tasks
    assert value(found, "preannotate_jobs", kind="preannotate", state="succeeded") >= 1
    assert value(found, "preannotate_server_replicas", server=server, state="RUNNING") == 1
    assert value(found, "preannotate_server_replicas_target", server=server) == 1
    held = value(found, "preannotate_license_tokens", state="held")
    assert held + value(found, "preannotate_license_tokens", state="free") == 1  # one node has it
    seats = value(found, "preannotate_license_seats", state="held")
    assert seats + value(found, "preannotate_license_seats", state="free") == 1
    assert value(found, "preannotate_training_epochs_total") is not None
    print(f"scrape took {1000 * min(durations):.0f} to {1000 * max(durations):.0f} ms")

    # An interactive call; Ray's agents ship the replicas' histograms every few seconds.
    text = {"id": 1, "data": {"text": "Barack Obama visited Paris."}}
    assert api.post(f"/servers/{server}/predict", json={"tasks": [text]}).status_code == 200
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        found, _ = scrape(api)
        if latency_count(found, server, "interactive") and latency_count(found, server, "bulk"):
            break
        time.sleep(1)
    assert latency_count(found, server, "bulk") >= IN_FLIGHT  # one per batch: 8 of 500 tasks
    assert latency_count(found, server, "interactive") >= 1
    assert value(found, "preannotate_metrics_nodes", state="read") == 2
    page = api.get("/metrics")
    assert value(found, "preannotate_metrics_nodes", state="unreachable") == 0
    names = re.compile(r"\bpreannotate_[a-z_]+")
    charted, served = set(names.findall(DASHBOARD.read_text())), set(names.findall(page.text))
    assert charted <= served, charted - served  # the dashboard charts what the page holds


@pytest.mark.parametrize("who", ["nobody", "ordinary user"])
def test_only_admins_may_read_the_metrics(api: httpx.Client, ray_cluster: RayCluster, who: str):
    headers = {}
    if who == "ordinary user":
        user = api.post("/users", json={"name": f"viewer-{uuid.uuid4().hex[:6]}"}).json()
        headers = {"Authorization": f"Bearer {user['token']}"}
    with httpx.Client(base_url=ray_cluster.url, timeout=30, headers=headers) as client:
        answer = client.get("/metrics")
    assert answer.status_code == (401 if who == "nobody" else 403), answer.text
    assert "preannotate_" not in answer.text and answer.json()["detail"]
