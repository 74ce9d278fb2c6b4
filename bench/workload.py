"""The benchmark workload: example-project documents, repeated with variations."""

import json
import multiprocessing
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from preannotate.annotators.pipeline import Pipeline
    from preannotate.hub.validation import ValidatedConfig

EXAMPLES = Path(__file__).resolve().parent.parent / "configs" / "examples"


def example_texts(project: str = "news", count: int = 10_000) -> list[str]:
    """`count` documents cycling the example tasks; each gets a distinct sentence appended."""
    lines = (EXAMPLES / project / "tasks.jsonl").read_text().splitlines()
    base = [json.loads(line)["data"]["text"] for line in lines if line.strip()]
    return [f"{base[i % len(base)]} Report number {i} was filed." for i in range(count)]


def news_config() -> "ValidatedConfig":
    """The news example project, validated: the configuration every benchmark serves."""
    from preannotate.configs.project import load_project_config
    from preannotate.hub.validation import validate_config

    return validate_config(load_project_config(EXAMPLES / "news" / "project.json"))


def example_tasks(project: str = "news", count: int = 10_000) -> list[dict]:
    return [{"id": i, "data": {"text": t}} for i, t in enumerate(example_texts(project, count))]


def import_body(project: str = "news", count: int = 100_000) -> bytes:
    """`count` tasks as the JSONL body of `POST /projects/{id}/tasks` (what `preannotate
    tasks import FILE.jsonl` uploads)."""
    lines = (json.dumps({"data": {"text": text}}) + "\n" for text in example_texts(project, count))
    return "".join(lines).encode()


def in_process_rate(pipeline: "Pipeline", tasks: list[dict], batch_size: int = 64) -> float:
    """Tasks/s of the annotators pipeline called directly, in batches: the baseline."""
    pipeline.annotate(tasks[:batch_size])
    start = time.perf_counter()
    for i in range(0, len(tasks), batch_size):
        pipeline.annotate(tasks[i : i + batch_size])
    return len(tasks) / (time.perf_counter() - start)


def _pipeline_process(
    count: int, ready: "multiprocessing.synchronize.Barrier", rates: "multiprocessing.Queue[float]"
) -> None:
    from preannotate.annotators.pipeline import Pipeline

    pipeline, tasks = Pipeline(news_config()), example_tasks("news", count)
    pipeline.annotate(tasks[:64])
    ready.wait()
    rates.put(in_process_rate(pipeline, tasks))


def parallel_rate(processes: int, count: int) -> float:
    """Tasks/s of `processes` bare pipeline processes started together, nothing else
    running: what the machine's cores can do at most, without Ray, scheduler or store."""
    return processes_rate(processes, _pipeline_process, count)


def processes_rate(processes: int, target: Callable[..., None], *args: object) -> float:
    """The summed rates of `processes` processes running `target(*args, ready, rates)`,
    started together (`ready` is their barrier) and each putting its rate on `rates`."""
    context = multiprocessing.get_context("spawn")
    ready, rates = context.Barrier(processes), context.Queue()
    workers = [context.Process(target=target, args=(*args, ready, rates)) for _ in range(processes)]
    for worker in workers:
        worker.start()
    total = sum(rates.get() for _ in workers)
    for worker in workers:
        worker.join()
    return total


def local_api(ingress: str | None = None) -> tuple[str, str]:
    """A fresh local Ray (2 CPUs) with the API on it, behind `ingress` (default: what
    `preannotate up` picks); returns its URL and an admin token."""
    import ray

    from preannotate.client.launch import start_control_plane
    from preannotate.cluster.http_ingress import default_ingress, ingress_env
    from preannotate.cluster.local_head import free_port
    from preannotate.cluster.ray_cluster import NAMESPACE
    from preannotate.configs.paths import database_url, hub_dir

    os.environ.update(ingress_env(ingress or default_ingress()))
    ray.init(
        address="local",
        num_cpus=2,
        namespace=NAMESPACE,
        log_to_driver=False,
        logging_level="WARNING",
    )
    return start_control_plane("127.0.0.1", free_port(), database_url(), str(hub_dir()), None)
