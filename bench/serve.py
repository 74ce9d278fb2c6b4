"""HTTP latency and throughput of a pre-annotation server vs the pipeline in one process.

Run: `.venv/bin/python bench/serve.py [--docs 2000] [--clients 8] [--replicas 1]
[--import-tasks 100000]`. Starts a local Ray with the API, deploys the news example, then
measures in one run: single-document latency over HTTP (p50/p99) next to
`Pipeline.annotate([doc])` in this process, the same latency while a large task import
runs on the API (the interactive lane must not wait for the import's transaction), and
the same latency during a bulk job on the same server, and documents/s with concurrent
HTTP clients next to the pipeline in batches.
"""

import argparse
import itertools
import os
import statistics
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("PREANNOTATE_HOME", tempfile.mkdtemp(prefix="preannotate-bench-"))
os.environ.setdefault("RAY_AUTH_MODE", "disabled")

import httpx  # noqa: E402
import ray  # noqa: E402

from bench.workload import (  # noqa: E402
    EXAMPLES,
    example_tasks,
    import_body,
    in_process_rate,
    local_api,
)
from preannotate.annotators.pipeline import Pipeline  # noqa: E402
from preannotate.client.api import Client  # noqa: E402
from preannotate.cluster.http_ingress import INGRESSES, default_ingress  # noqa: E402
from preannotate.configs.project import load_project_config  # noqa: E402
from preannotate.hub.validation import validate_config  # noqa: E402


def percentile(samples: list[float], fraction: float) -> float:
    """The sample that `fraction` of the samples do not exceed (nearest rank)."""
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(len(ordered) * fraction))]


def percentiles(samples: list[float]) -> str:
    p50, p99 = statistics.median(samples) * 1000, percentile(samples, 0.99) * 1000
    return f"p50 {p50:6.1f} ms  p99 {p99:6.1f} ms"


def single_task_latency(http: httpx.Client, path: str, task: dict) -> float:
    start = time.perf_counter()
    http.post(path, json={"tasks": [task]}).raise_for_status()
    return time.perf_counter() - start


def latency_during_import(
    http: httpx.Client, path: str, tasks: list[dict], project_id: int, body: bytes
) -> tuple[list[float], float]:
    """Single-task latencies, back to back, for as long as an import of `body` into the
    project takes; returns them and the import's seconds. The import has a client of its
    own, as the predictions' client is not shared between threads."""

    def run_import() -> float:
        start = time.perf_counter()
        with httpx.Client(base_url=http.base_url, headers=http.headers, timeout=1800) as own:
            own.post(
                f"/projects/{project_id}/tasks",
                content=body,
                headers={"Content-Type": "application/x-ndjson"},
            ).raise_for_status()
        return time.perf_counter() - start

    samples: list[float] = []
    with ThreadPoolExecutor(1) as pool:
        imported = pool.submit(run_import)
        for task in itertools.cycle(tasks):
            samples.append(single_task_latency(http, path, task))
            if imported.done():
                return samples, imported.result()


def latency_during_job(
    http: httpx.Client, client: Client, project_id: int, server: str, tasks: list[dict], count: int
) -> tuple[list[float], float]:
    """`count` single-task latencies, back to back, while a bulk job pre-annotates the
    project's tasks on the same server (it is cancelled after them); returns them and the
    tasks/s the job kept meanwhile."""
    path = f"/servers/{server}/predict"
    job = client.preannotate(project_id, server_id=server)
    while not client.job(job["id"])["done"]:  # the bulk process is loaded and working
        time.sleep(0.05)
    started, done_before = time.perf_counter(), client.job(job["id"])["done"]
    samples = [single_task_latency(http, path, task) for task in tasks[:count]]
    done = client.job(job["id"])["done"] - done_before
    rate = done / (time.perf_counter() - started)
    client.cancel_job(job["id"])
    client.wait_for_job(job["id"])
    return samples, rate


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--docs", type=int, default=2000)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--per-request", type=int, default=1)
    parser.add_argument("--replicas", type=int, default=1)
    parser.add_argument("--latency-samples", type=int, default=300)
    parser.add_argument("--import-tasks", type=int, default=100_000)
    parser.add_argument(
        "--ingress", choices=INGRESSES, help="HAProxy or Serve's proxy (default: as `up`)"
    )
    args = parser.parse_args()

    project = load_project_config(EXAMPLES / "news" / "project.json")
    project.resources.replicas = args.replicas
    config = validate_config(project)
    tasks = example_tasks("news", args.docs)

    pipeline = Pipeline(config)
    pipeline.annotate(tasks[:64])
    direct_latency = []
    for task in tasks[: args.latency_samples]:
        start = time.perf_counter()
        pipeline.annotate([task])
        direct_latency.append(time.perf_counter() - start)
    direct_rate = in_process_rate(pipeline, tasks)
    del pipeline

    url, token = local_api(args.ingress)
    auth = {"Authorization": f"Bearer {token}"}
    with Client(url, token) as client:
        created = client.create_project(project.model_dump())
        server = client.deploy(created["id"])["id"]
        client.wait_until_ready(server)

    path = f"/servers/{server}/predict"
    body = import_body("news", args.import_tasks)
    with httpx.Client(base_url=url, timeout=60, headers=auth) as http:
        for task in tasks[:20]:
            single_task_latency(http, path, task)
        http_latency = [single_task_latency(http, path, t) for t in tasks[: args.latency_samples]]
        import_latency, import_s = latency_during_import(http, path, tasks, created["id"], body)
        with Client(url, token) as client:
            job_latency, job_rate = latency_during_job(
                http, client, created["id"], server, tasks, args.latency_samples
            )

    chunks = [tasks[i : i + args.per_request] for i in range(0, len(tasks), args.per_request)]

    local = threading.local()

    def send(chunk: list[dict]) -> None:
        if not hasattr(local, "http"):
            local.http = httpx.Client(base_url=url, timeout=60, headers=auth)
        local.http.post(path, json={"tasks": chunk}).raise_for_status()

    start = time.perf_counter()
    with ThreadPoolExecutor(args.clients) as pool:
        list(pool.map(send, chunks))
    http_rate = len(tasks) / (time.perf_counter() - start)

    ray.shutdown()  # Serve with it; serve.shutdown() first only prints retry noise
    print(
        f"documents: {len(tasks)}, news example, {args.replicas} replica(s) on 2 CPUs,"
        f" {args.ingress or default_ingress()} ingress"
    )
    print(f"single-document latency, pipeline in process: {percentiles(direct_latency)}")
    print(f"single-document latency, HTTP -> server:      {percentiles(http_latency)}")
    print(
        f"single-document latency, HTTP during import:  {percentiles(import_latency)}"
        f"  ({len(import_latency)} calls while {args.import_tasks} tasks imported in "
        f"{import_s:.1f} s, {args.import_tasks / import_s:.0f} tasks/s)"
    )
    slowdown = percentile(import_latency, 0.99) / percentile(http_latency, 0.99)
    print(f"ratio HTTP p99 during import / idle: {slowdown:.2f}")
    print(
        f"single-document latency, HTTP during a bulk job: {percentiles(job_latency)}"
        f"  (the job meanwhile: {job_rate:.0f} tasks/s)"
    )
    gap = statistics.median(http_latency) - statistics.median(direct_latency)
    print(f"p50 above the pipeline in process: {gap * 1000:.1f} ms")
    print(f"throughput, pipeline in process (batches of 64):       {direct_rate:7.1f} docs/s")
    print(
        f"throughput, HTTP, {args.clients} clients x {args.per_request} doc(s)/request: "
        f"{http_rate:7.1f} docs/s"
    )
    print(f"ratio HTTP / in-process throughput: {http_rate / direct_rate:.2f}")


if __name__ == "__main__":
    main()
