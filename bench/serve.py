"""HTTP latency and throughput of a pre-annotation server vs the pipeline in one process.

Run: `.venv/bin/python bench/serve.py [--docs 2000] [--clients 8] [--replicas 1]`.
Starts a local Ray with the API, deploys the news example, then measures in one run:
single-document latency over HTTP (p50/p99) next to `Pipeline.annotate([doc])` in this
process, and documents/s with concurrent HTTP clients next to the pipeline in batches.
"""

import argparse
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
from ray import serve  # noqa: E402

from bench.workload import EXAMPLES, example_tasks, in_process_rate, local_api  # noqa: E402
from preannotate.annotators.pipeline import Pipeline  # noqa: E402
from preannotate.client.api import Client  # noqa: E402
from preannotate.configs.project import load_project_config  # noqa: E402
from preannotate.hub.validation import validate_config  # noqa: E402


def percentiles(samples: list[float]) -> str:
    ordered = sorted(samples)
    p50 = statistics.median(ordered) * 1000
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1000
    return f"p50 {p50:6.1f} ms  p99 {p99:6.1f} ms"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--docs", type=int, default=2000)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--per-request", type=int, default=1)
    parser.add_argument("--replicas", type=int, default=1)
    parser.add_argument("--latency-samples", type=int, default=300)
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

    url, token = local_api()
    auth = {"Authorization": f"Bearer {token}"}
    with Client(url, token) as client:
        created = client.create_project(project.model_dump())
        server = client.deploy(created["id"])["id"]
        client.wait_until_ready(server)

    path = f"/servers/{server}/predict"
    with httpx.Client(base_url=url, timeout=60, headers=auth) as http:
        for task in tasks[:20]:
            http.post(path, json={"tasks": [task]}).raise_for_status()
        http_latency = []
        for task in tasks[: args.latency_samples]:
            start = time.perf_counter()
            http.post(path, json={"tasks": [task]}).raise_for_status()
            http_latency.append(time.perf_counter() - start)

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

    serve.shutdown()
    ray.shutdown()
    print(f"documents: {len(tasks)}, news example, {args.replicas} replica(s) on 2 CPUs")
    print(f"single-document latency, pipeline in process: {percentiles(direct_latency)}")
    print(f"single-document latency, HTTP -> server:      {percentiles(http_latency)}")
    print(f"throughput, pipeline in process (batches of 64):       {direct_rate:7.1f} docs/s")
    print(
        f"throughput, HTTP, {args.clients} clients x {args.per_request} doc(s)/request: "
        f"{http_rate:7.1f} docs/s"
    )
    print(f"ratio HTTP / in-process throughput: {http_rate / direct_rate:.2f}")


if __name__ == "__main__":
    main()
