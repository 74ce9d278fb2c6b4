"""Bulk pre-annotation through the whole path vs the pipeline in one process, and the
job's peak memory for a small and a large job.

Run: `.venv/bin/python bench/bulk.py [--tasks 10000] [--small 1000] [--large 100000]`.
In one run it measures: tasks/s of the annotators pipeline called directly (batches of
64); tasks/s of a bulk job (store -> scheduler -> server -> store) with one replica and
with two replicas, `--rounds` times each, every job right after a run of the pipeline in
this process, so that each ratio compares two figures taken within seconds (this
machine's speed drifts by a tenth from minute to minute); and the peak memory (RSS) of
the scheduler process, where jobs run, during a job over `--small` and over `--large`
tasks.

For reading the two-replica figure it also measures what the machine allows: two bare
pipeline processes started together (no Ray, no store), the CPU that Ray, Serve and
the API use while the servers sit idle, which two replicas on the same cores cannot have,
and where the CPU of each two-replica job went, per 1,000 tasks: the bulk processes that
run the pipeline, the scheduler, the server's replicas, and everything else.
"""

import argparse
import collections
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("PREANNOTATE_HOME", tempfile.mkdtemp(prefix="preannotate-bench-"))
os.environ.setdefault("RAY_AUTH_MODE", "disabled")

import psutil  # noqa: E402
import ray  # noqa: E402

from bench.workload import (  # noqa: E402
    EXAMPLES,
    example_tasks,
    in_process_rate,
    local_api,
    news_config,
    parallel_rate,
)
from preannotate.annotators.pipeline import Pipeline  # noqa: E402
from preannotate.client.api import Client  # noqa: E402
from preannotate.cluster.http_ingress import INGRESSES, default_ingress  # noqa: E402
from preannotate.configs.project import load_project_config  # noqa: E402


def scheduler_process() -> psutil.Process:
    for process in psutil.process_iter(["cmdline"]):
        if any("ray::Scheduler" in part for part in process.info["cmdline"] or []):
            return process
    raise RuntimeError("the scheduler process was not found")


class PeakRss:
    """Samples a process's resident memory every 20 ms while a job runs."""

    def __init__(self, process: psutil.Process):
        self.process, self.peak, self.running = process, 0, True
        self.thread = threading.Thread(target=self._sample, daemon=True)
        self.thread.start()

    def _sample(self) -> None:
        while self.running:
            self.peak = max(self.peak, self.process.memory_info().rss)
            time.sleep(0.02)

    def stop(self) -> int:
        self.running = False
        self.thread.join()
        return self.peak


CPU_KINDS = {
    "preannotate.deployments.bulk_process": "bulk processes",
    "ray::Scheduler": "scheduler",
    "ServeReplica:server": "server replicas",
}


def cpu_snapshot() -> dict[int, tuple[str, float]]:
    """Every process on the machine: its kind (`CPU_KINDS`, or "the rest": Ray, Serve, the
    API, this benchmark and the machine's own) and the CPU seconds it has used so far."""
    snapshot = {}
    for process in psutil.process_iter(["cmdline", "cpu_times"]):
        times, command = process.info["cpu_times"], " ".join(process.info["cmdline"] or [])
        if times is not None:
            kind = next((k for part, k in CPU_KINDS.items() if part in command), "the rest")
            snapshot[process.pid] = (kind, times.user + times.system)
    return snapshot


def cpu_used(before: dict[int, tuple[str, float]]) -> collections.Counter[str]:
    """CPU seconds used since `before`, by kind, per process: one that ended meanwhile
    takes nothing away from its kind, one that started counts from zero."""
    used: collections.Counter[str] = collections.Counter()
    for pid, (kind, cpu) in cpu_snapshot().items():
        used[kind] += cpu - before.get(pid, (kind, 0.0))[1]
    return used


def idle_cores(seconds: float = 5.0) -> float:
    """CPU used by every process on the machine over `seconds` of quiet, in cores."""
    before = cpu_snapshot()
    time.sleep(seconds)
    return sum(cpu_used(before).values()) / seconds


def new_project(client: Client, name: str, replicas: int, count: int) -> int:
    project = load_project_config(EXAMPLES / "news" / "project.json")
    body = project.model_dump() | {
        "name": name,
        "resources": {"num_cpus": 0.5, "replicas": replicas},
    }
    project_id = client.create_project(body)["id"]
    with tempfile.NamedTemporaryFile("w", suffix=".jsonl", delete=False) as file:
        for task in example_tasks("news", count):
            file.write(json.dumps({"data": task["data"]}) + "\n")
    client.import_tasks(project_id, Path(file.name))
    os.unlink(file.name)
    return project_id


PROBE_PAUSE_S = 0.1


class InteractiveProbe:
    """Pre-annotates one document at a time over HTTP, recording each call's latency."""

    def __init__(self, url: str, token: str, server: str):
        self.client = Client(url, token)
        self.server, self.latencies, self.running = server, [], True
        self.task = [{"id": 0, "data": {"text": "Angela Merkel met Tim Cook in Paris."}}]

    def call(self) -> None:
        start = time.perf_counter()
        self.client.predict(self.server, self.task)
        self.latencies.append(time.perf_counter() - start)

    def during(self, pause_s: float) -> threading.Thread:
        """Keep calling, `pause_s` apart (an annotator clicking), until stopped."""

        def loop() -> None:
            while self.running:
                self.call()
                time.sleep(pause_s)

        thread = threading.Thread(target=loop, daemon=True)
        thread.start()
        return thread


def percentiles(samples: list[float]) -> str:
    ordered = sorted(samples)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    return f"p50 {statistics.median(ordered) * 1000:6.1f} ms, p99 {p99 * 1000:6.1f} ms"


def timed_job(
    client: Client,
    project_id: int,
    watch: psutil.Process | None = None,
    probe: InteractiveProbe | None = None,
) -> tuple[dict, int]:
    peak = PeakRss(watch) if watch else None
    thread = probe.during(PROBE_PAUSE_S) if probe else None
    job = client.wait_for_job(client.preannotate(project_id)["id"], poll_s=1.0)
    if probe and thread:
        probe.running = False
        thread.join()
    assert job["state"] == "succeeded" and job["failed"] == 0, job
    return job, peak.stop() if peak else 0


def paired_rounds(
    client: Client,
    project_id: int,
    pipeline: Pipeline,
    tasks: list[dict],
    rounds: int,
    cpu: list[dict[str, float]] | None = None,
) -> list[tuple[float, float]]:
    """(the job's tasks/s, the pipeline's in this process just before it) per round; with
    `cpu`, each job's CPU milliseconds per 1,000 tasks by process kind are added to it."""
    pairs = []
    for _ in range(rounds):
        direct = in_process_rate(pipeline, tasks)
        before = cpu_snapshot()
        job = timed_job(client, project_id)[0]
        if cpu is not None:
            used = cpu_used(before)
            cpu.append({kind: used[kind] * 1e6 / job["total"] for kind in used})
        pairs.append((job["rate"], direct))
    return pairs


def deployed(client: Client, project_id: int) -> str:
    """A ready server that has run one small job, so its replicas' bulk processes are
    loaded: the measured jobs then compare the path, not the model's load, which a
    server's first job pays once (`deployments/bulk_process.py`). Its 1,000 tasks are
    eight batches in flight at once, which Serve spreads over the replicas."""
    server = client.deploy(project_id)["id"]
    client.wait_until_ready(server)
    first = [task["id"] for task in client.tasks(project_id, limit=1000)["tasks"]]
    job = client.wait_for_job(client.preannotate(project_id, task_ids=first)["id"], poll_s=0.2)
    assert job["state"] == "succeeded", job
    return server


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tasks", type=int, default=10_000)
    parser.add_argument("--small", type=int, default=1_000)
    parser.add_argument("--large", type=int, default=100_000)
    parser.add_argument(
        "--rounds", type=int, default=3, help="throughputs are the best of this many runs"
    )
    parser.add_argument(
        "--ingress", choices=INGRESSES, help="HAProxy or Serve's proxy (default: as `up`)"
    )
    args = parser.parse_args()

    config = news_config()
    tasks = example_tasks("news", args.tasks)
    pipeline = Pipeline(config)
    direct = max(in_process_rate(pipeline, tasks) for _ in range(args.rounds))
    bare_two = max(parallel_rate(2, args.tasks) for _ in range(args.rounds))

    url, token = local_api(args.ingress)
    rates, cpu = {}, []
    with Client(url, token, timeout=600) as client:
        for replicas in (1, 2):
            project = new_project(client, f"bulk-{replicas}", replicas, args.tasks)
            server = deployed(client, project)
            if replicas == 2:
                quiet = idle_cores()
            shares = cpu if replicas == 2 else None
            rates[replicas] = paired_rounds(client, project, pipeline, tasks, args.rounds, shares)
            if replicas == 1:
                idle = InteractiveProbe(url, token, server)
                for _ in range(50):
                    idle.call()
                busy = InteractiveProbe(url, token, server)
                rate_with_probe = timed_job(client, project, probe=busy)[0]["rate"]
            client.delete_server(server)
        peaks = {}
        for size in (args.small, args.large):
            project = new_project(client, f"memory-{size}", 2, size)
            server = deployed(client, project)
            job, peaks[size] = timed_job(client, project, scheduler_process())
            client.delete_server(server)
    ray.shutdown()  # Serve with it; serve.shutdown() first only prints retry noise

    mib = 2**20
    ingress = args.ingress or default_ingress()
    print(f"tasks: {args.tasks} (news example), 2 CPUs, {ingress} ingress")
    print(f"pipeline in one process:         {direct:7.1f} tasks/s")
    for replicas, pairs in rates.items():
        ratios = ", ".join(f"{job / alone:.2f} ({job:.1f} / {alone:.1f})" for job, alone in pairs)
        best = max(job / alone for job, alone in pairs)
        print(f"bulk job, {replicas} replica(s): {best:.2f} of direct; rounds: {ratios}")
    print(
        f"two bare pipeline processes:     {bare_two:7.1f} tasks/s "
        f"({bare_two / direct:.2f} of direct: the machine's ceiling)"
    )
    print(
        f"Ray, Serve and the API, idle:    {quiet * 100:7.1f}% of one core; "
        f"two replicas can reach at most {bare_two / direct * (1 - quiet / 2):.2f} of direct"
    )
    kinds = ("bulk processes", "scheduler", "server replicas", "the rest")
    breakdown = "; ".join(
        f"{kind} " + ", ".join(f"{job.get(kind, 0.0):.0f}" for job in cpu) for kind in kinds
    )
    print(f"CPU per 1,000 tasks of each two-replica job, ms: {breakdown}")
    cores = min(2, psutil.cpu_count() - quiet)  # a replica's bulk process uses one core at most
    alone = [direct_rate for _, direct_rate in rates[2]]
    free_path = max(
        cores * 1e6 / job["bulk processes"] / rate for job, rate in zip(cpu, alone, strict=True)
    )
    print(
        f"two replicas, were the bulk processes and the idle cost all the CPU used: "
        f"at most {free_path:.2f} of direct"
    )
    print(f"interactive single-document latency, server idle:       {percentiles(idle.latencies)}")
    print(f"interactive single-document latency, during a bulk job: {percentiles(busy.latencies)}")
    print(
        f"bulk job, 1 replica, with those {len(busy.latencies)} interactive calls: "
        f"{rate_with_probe:7.1f} tasks/s"
    )
    print(
        f"scheduler peak RSS during a {args.small:,}-task job:  {peaks[args.small] / mib:7.1f} MiB"
    )
    print(
        f"scheduler peak RSS during a {args.large:,}-task job: {peaks[args.large] / mib:7.1f} MiB "
        f"({peaks[args.large] / peaks[args.small]:.2f}x)"
    )


if __name__ == "__main__":
    main()
