"""Training next to pre-annotation: training time and held-out F1 for the posology
example, and the bulk throughput of another project with and without a concurrent
training job, all in one run.

Run: `.venv/bin/python bench/train.py [--tasks 5000] [--epochs 10]`.
"""

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("PREANNOTATE_HOME", tempfile.mkdtemp(prefix="preannotate-bench-"))
os.environ.setdefault("RAY_AUTH_MODE", "disabled")

import ray  # noqa: E402

from bench.bulk import new_project  # noqa: E402
from bench.workload import EXAMPLES, local_api  # noqa: E402
from preannotate.client.api import Client  # noqa: E402
from preannotate.configs.project import load_project_config  # noqa: E402


def training_project(client: Client) -> int:
    config = load_project_config(EXAMPLES / "posology" / "project.json").model_dump()
    project = client.create_project(config | {"name": "posology-training"})["id"]
    client.import_tasks(project, EXAMPLES / "posology" / "annotated.jsonl")
    return project


def bulk_rate(client: Client, project: int) -> float:
    job = client.wait_for_job(client.preannotate(project)["id"], poll_s=0.2)
    assert job["state"] == "succeeded", job
    return job["rate"]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tasks", type=int, default=5000)
    parser.add_argument("--epochs", type=int, default=10)
    args = parser.parse_args()

    url, token = local_api()
    spec = {"kind": "ner", "model_name": "posology_ner", "epochs": args.epochs}
    with Client(url, token, timeout=600) as client:
        project_a = training_project(client)
        start = time.perf_counter()
        alone = client.wait_for_job(client.train(project_a, spec)["id"], poll_s=0.2)
        train_seconds = time.perf_counter() - start
        metrics = alone["details"]["metrics"]

        project_b = new_project(client, "bulk-b", 1, args.tasks)
        client.wait_until_ready(client.deploy(project_b)["id"])
        rate_alone = bulk_rate(client, project_b)
        concurrent = client.train(project_a, spec)
        rate_with_training = bulk_rate(client, project_b)
        trained = client.wait_for_job(concurrent["id"], poll_s=0.2)
    ray.shutdown()  # Serve with it; serve.shutdown() first only prints retry noise

    print(f"training: posology example, {alone['details']['log'][-1]}")
    print(
        f"training time ({args.epochs} epochs, 400 completions, 20% held out): "
        f"{train_seconds:.1f} s"
    )
    print(
        f"held-out F1: {metrics['f1']:.3f} (precision {metrics['precision']:.3f}, "
        f"recall {metrics['recall']:.3f}); untrained baseline {metrics['baseline_f1']:.3f}"
    )
    print(f"bulk job of project B ({args.tasks} tasks, 1 replica): {rate_alone:7.1f} tasks/s alone")
    print(
        f"bulk job of project B with a concurrent training job: {rate_with_training:7.1f} tasks/s "
        f"({rate_with_training / rate_alone:.2f} of alone; training {trained['state']})"
    )


if __name__ == "__main__":
    main()
