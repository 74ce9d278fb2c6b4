"""GPUs on a real cluster: a server that asks for one runs its zero-shot model there, in
its replica and in the bulk process that runs its jobs, and pre-annotates as the same
server on CPU does; a server that asks for none leaves the node's GPU alone, also where
Ray would let it see the GPU. Ray gives each node of the test cluster the machine's GPUs,
so these tests run on a machine with an NVIDIA GPU and its driver, whose GPU memory nothing
else changes while they run (they read it with `nvidia-smi`)."""

import json
import shutil
import subprocess
import uuid
from typing import Any

import httpx
import pytest

from tests.conftest import EXAMPLES
from tests.test_jobs import run_job, wait_job
from tests.test_prompts import wait_ready


def gpus() -> int:
    """How many NVIDIA GPUs this machine's driver lists."""
    if shutil.which("nvidia-smi") is None:
        return 0
    listed = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, check=False)
    lines = listed.stdout.splitlines() if listed.returncode == 0 else []
    return sum(line.startswith("GPU ") for line in lines)


pytestmark = pytest.mark.skipif(gpus() == 0, reason="no NVIDIA GPU here (nvidia-smi lists none)")

EXAMPLE = EXAMPLES / "prompts"
MODEL_MIB = 80
"""Less than what a replica adds to the GPU's memory once its model is there: the
weights (all-MiniLM-L6-v2, 87 MiB in float32) besides a CUDA context of its own."""


def gpu_memory_used_mib() -> int:
    """What the machine's GPUs hold, as an operator reads it."""
    query = ["nvidia-smi", "--query-gpu=memory.used", "--format=csv,noheader,nounits"]
    return sum(int(line) for line in subprocess.check_output(query, text=True).split())


def deploy_example(api: httpx.Client, num_gpus: float) -> tuple[int, str]:
    """The news example with entity, classification and relation prompts beside a spaCy
    model, as a project of its own (with its tasks) and a ready server."""
    config = json.loads((EXAMPLE / "project.json").read_text()) | {
        "name": f"gpu-{uuid.uuid4().hex[:8]}",
        "labeling_config": (EXAMPLE / "config.xml").read_text(),
        "resources": {"num_cpus": 0.5, "num_gpus": num_gpus},
    }
    created = api.post("/projects", json=config)
    assert created.status_code == 201, created.text
    project = created.json()["id"]
    tasks = (EXAMPLE / "tasks.jsonl").read_bytes()
    imported = api.post(f"/projects/{project}/tasks?format=jsonl", content=tasks)
    assert imported.status_code == 201, imported.text
    deployed = api.post(f"/projects/{project}/deploy")
    assert deployed.status_code == 202, deployed.text
    server = deployed.json()["id"]
    wait_ready(api, server)
    return project, server


def comparable(result: list[dict[str, Any]]) -> list[Any]:
    """A prediction's items without what differs from run to run (item ids) or in the last
    digits of a float, relations named by the texts they link."""
    texts = {i["id"]: i["value"]["text"] for i in result if "text" in i.get("value", {})}
    items = []
    for item in result:
        item = {k: v for k, v in item.items() if k not in {"id", "score"}}
        if "value" in item:
            item["value"] = {k: v for k, v in item["value"].items() if k != "confidence"}
        if item["type"] == "relation":
            item["from_id"], item["to_id"] = texts[item["from_id"]], texts[item["to_id"]]
        items.append(item)
    return sorted(items, key=lambda item: json.dumps(item, sort_keys=True))


def scores(result: list[dict[str, Any]]) -> list[float]:
    return sorted(item["score"] for item in result if item.get("score") is not None)


def test_a_gpu_server_runs_its_model_and_jobs_on_the_gpu_and_predicts_as_on_cpu(
    api: httpx.Client,
) -> None:
    texts = [json.loads(line) for line in (EXAMPLE / "tasks.jsonl").read_text().splitlines()]
    tasks = [{"data": row["data"]} for row in texts]

    before = gpu_memory_used_mib()
    _, on_cpu = deploy_example(api, num_gpus=0)
    cpu = api.post(f"/servers/{on_cpu}/predict", json={"tasks": tasks})
    assert cpu.status_code == 200, cpu.text
    after_cpu = gpu_memory_used_mib()
    assert after_cpu - before < MODEL_MIB, f"a server with no GPU took {after_cpu - before} MiB"

    project, on_gpu = deploy_example(api, num_gpus=1)
    gpu = api.post(f"/servers/{on_gpu}/predict", json={"tasks": tasks})
    assert gpu.status_code == 200, gpu.text
    after_gpu = gpu_memory_used_mib()
    assert after_gpu - after_cpu >= MODEL_MIB, f"the GPU server took {after_gpu - after_cpu} MiB"
    cpu_results = [p["result"] for p in cpu.json()["predictions"]]
    gpu_results = [p["result"] for p in gpu.json()["predictions"]]
    assert [comparable(r) for r in gpu_results] == [comparable(r) for r in cpu_results]
    for on_gpu_scores, on_cpu_scores in zip(gpu_results, cpu_results, strict=True):
        assert scores(on_gpu_scores) == pytest.approx(scores(on_cpu_scores), abs=2e-3)

    job = wait_job(api, run_job(api, project)["id"])
    assert job["server_id"] == on_gpu
    assert (job["state"], job["done"], job["failed"]) == ("succeeded", len(tasks), 0), job
    after_job = gpu_memory_used_mib()  # the bulk process stays loaded a while after a job
    assert after_job - after_gpu >= MODEL_MIB, f"the job took {after_job - after_gpu} MiB"
    listed = api.get(f"/projects/{project}/tasks", params={"limit": len(tasks)}).json()["tasks"]
    stored = [api.get(f"/tasks/{t['id']}/predictions").json()[-1]["result"] for t in listed]
    assert [comparable(r) for r in stored] == [comparable(r) for r in cpu_results]
    print(  # the figures, with -rP
        f"GPU memory: {before} MiB at first, +{after_cpu - before} with the CPU server, "
        f"+{after_gpu - after_cpu} with the GPU server, +{after_job - after_gpu} with its job"
    )
