"""Bulk pre-annotation jobs on a real cluster and SQLite file: exactly once, versioned,
surviving SIGKILLed replicas and a SIGKILLed scheduler, cancelled by server deletion, and roles."""

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
import psutil
import ray
from ray.util.state import get_actor

from preannotate.scheduler.actor import SCHEDULER_NAME
from preannotate.store import InvalidState, Store
from tests.conftest import RayCluster, labels_xml

WORDS = ["Barack Obama", "Angela Merkel", "Paris", "Google", "the United Nations", "Tokyo"]


def make_project(
    api: httpx.Client,
    tasks: int,
    labels: tuple[str, ...] = ("PERSON", "GPE"),
    extra: list[dict] | None = None,
) -> int:
    config = {
        "name": f"jobs-{uuid.uuid4().hex[:8]}",
        "labeling_config": labels_xml(
            *(f'value="{lab}" model="ner_general_en_sm"' for lab in labels)
        ),
        "resources": {"num_cpus": 0.5},
    }
    project = api.post("/projects", json=config).json()["id"]
    rows = [
        {"data": {"text": f"{WORDS[i % 6]} visited {WORDS[(i + 2) % 6]} on day {i}."}}
        for i in range(tasks)
    ] + (extra or [])
    body = "\n".join(json.dumps(r) for r in rows).encode()
    imported = api.post(f"/projects/{project}/tasks?format=jsonl", content=body)
    assert imported.status_code == 201 and imported.json()["count"] == len(rows), imported.text
    return project


def run_job(api: httpx.Client, project: int, **body) -> dict:
    response = api.post(f"/projects/{project}/preannotate", json=body or {"all": True})
    assert response.status_code == 202, response.text
    return response.json()


def wait_job(api: httpx.Client, job_id: int, timeout: float = 300) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = api.get(f"/jobs/{job_id}").json()
        if job["state"] in ("succeeded", "failed", "cancelled"):
            return job
        time.sleep(0.3)
    raise AssertionError(f"job {job_id} still {job['state']} after {timeout} s: {job}")


def wait_progress(api: httpx.Client, job_id: int, done: int) -> None:
    deadline = time.monotonic() + 300
    while api.get(f"/jobs/{job_id}").json()["done"] < done:
        assert time.monotonic() < deadline
        time.sleep(0.1)


def prediction_counts(api: httpx.Client, project: int) -> list[int]:
    counts, after = [], 0
    while after is not None:
        page = api.get(
            f"/projects/{project}/tasks", params={"after_id": after, "limit": 1000}
        ).json()
        counts += [t["predictions"] for t in page["tasks"]]
        after = page["next_after_id"]
    return counts


def test_job_predicts_every_task_once_and_reruns_add_versions(api: httpx.Client) -> None:
    project = make_project(api, 1500)  # two pages of task ids
    job = wait_job(api, run_job(api, project)["id"])
    assert (job["state"], job["done"], job["failed"], job["total"]) == ("succeeded", 1500, 0, 1500)
    assert job["rate"] > 0
    assert prediction_counts(api, project) == [1] * 1500
    again = wait_job(api, run_job(api, project)["id"])
    assert again["state"] == "succeeded" and prediction_counts(api, project) == [2] * 1500
    first_task = api.get(f"/projects/{project}/tasks", params={"limit": 1}).json()["tasks"][0]["id"]
    v1, v2 = api.get(f"/tasks/{first_task}/predictions").json()
    assert (v1["version"], v2["version"]) == (1, 2)
    assert (
        api.get("/predictions/compare", params={"a": v1["id"], "b": v2["id"]}).json()["added"] == []
    )

    config = {
        "labeling_config": labels_xml(
            *(
                f'value="{lab}" model="ner_general_en_sm"'
                for lab in ("PERSON", "GPE", "ORG", "DATE")
            )
        )
    }
    assert api.put(f"/projects/{project}/config", json=config).status_code == 200
    third = wait_job(api, run_job(api, project, task_ids=[first_task])["id"])
    assert third["state"] == "succeeded" and third["server_id"] != job["server_id"]
    v3 = api.get(f"/tasks/{first_task}/predictions").json()[2]
    diff = api.get("/predictions/compare", params={"a": v2["id"], "b": v3["id"]}).json()
    assert {i["value"]["labels"][0] for i in diff["added"]} == {"DATE"} and not diff["removed"]
    completion = api.post(f"/tasks/{first_task}/completions", json={"from_prediction": v3["id"]})
    assert (
        completion.status_code == 201 and completion.json()["copied_from_prediction_id"] == v3["id"]
    )
    exported = api.get(f"/projects/{project}/export").json()
    assert len(exported) == 1500 and len(exported[0]["predictions"]) == 3
    assert exported[0]["completions"][0]["copied_from"] == f"prediction: {v3['id']}"


def _replica_actor(server_id: str):
    names = ray.util.list_named_actors(all_namespaces=True)
    name = next(a for a in names if a["name"].startswith(f"SERVE_REPLICA::{server_id}#"))
    return ray.get_actor(name["name"], namespace=name["namespace"])


def _sigkill(actor) -> None:
    """Kill an actor's process as the kernel's OOM killer would: no goodbye to Ray."""
    os.kill(get_actor(actor._actor_id.hex()).pid, signal.SIGKILL)


def _bulk_processes(server_id: str) -> list[psutil.Process]:
    """The child processes that run the bulk batches of the server's replica."""
    replica = psutil.Process(get_actor(_replica_actor(server_id)._actor_id.hex()).pid)
    return [
        child
        for child in replica.children()
        if "preannotate.deployments.bulk_process" in child.cmdline()
    ]


FAULT_JOB_TASKS = 5_000


def test_sigkilled_replica_and_sigkilled_scheduler_lose_nothing(api: httpx.Client) -> None:
    project = make_project(api, FAULT_JOB_TASKS)
    job = run_job(api, project)
    wait_progress(api, job["id"], 500)
    [bulk] = _bulk_processes(job["server_id"])
    assert bulk.environ()["CUDA_VISIBLE_DEVICES"] == ""  # no GPU asked, none seen (test_gpu)
    _sigkill(_replica_actor(job["server_id"]))
    _, left = psutil.wait_procs([bulk], timeout=30)
    assert left == []  # the replica's bulk process did not outlive it
    wait_progress(api, job["id"], 1500)
    _sigkill(ray.get_actor(SCHEDULER_NAME))
    final = wait_job(api, job["id"])
    assert (final["state"], final["done"], final["failed"]) == ("succeeded", FAULT_JOB_TASKS, 0)
    assert prediction_counts(api, project) == [1] * FAULT_JOB_TASKS


def test_deleting_the_server_cancels_its_job_and_keeps_predictions(api: httpx.Client) -> None:
    project = make_project(api, FAULT_JOB_TASKS)
    job = run_job(api, project)
    wait_progress(api, job["id"], 500)
    bulk = _bulk_processes(job["server_id"])
    assert api.delete(f"/servers/{job['server_id']}").status_code == 200
    final = wait_job(api, job["id"])
    assert (
        final["state"] == "cancelled"
        and final["reason"] == f"server {job['server_id']} was deleted"
    )
    counts = prediction_counts(api, project)
    assert sum(counts) == final["done"] >= 500 and set(counts) == {0, 1}
    _, left = psutil.wait_procs(bulk, timeout=30)
    assert len(bulk) == 1 and left == []  # the delete ended the replica's bulk process


def test_jobs_sent_as_their_server_is_deleted_or_cancelled_at_once_end_cancelled(
    api: httpx.Client,
) -> None:
    """A job cancelled the moment it was sent, while its runner is still starting, ends
    cancelled; jobs sent to a server while it is deleted are refused, or are cancelled by
    the delete: none is left queued or running, or finds its server gone."""
    project = make_project(api, 2000)
    server = api.post(f"/projects/{project}/deploy").json()["id"]
    while api.get(f"/servers/{server}").json()["status"] != "ready":
        time.sleep(0.3)
    scheduler = ray.get_actor(SCHEDULER_NAME)
    for _ in range(3):
        job_id = ray.get(scheduler.submit_preannotate.remote(project, None, server, False))
        ray.get(scheduler.cancel_job.remote(job_id, "cancelled at once"))
        assert wait_job(api, job_id, timeout=30)["reason"] == "cancelled at once"
    sent = [scheduler.submit_preannotate.remote(project, None, server, False) for _ in range(3)]
    deleted = scheduler.delete_server.remote(server)
    sent += [scheduler.submit_preannotate.remote(project, None, server, False) for _ in range(3)]
    ray.get(deleted)
    for reply in sent:
        try:
            job = wait_job(api, ray.get(reply), timeout=60)
        except InvalidState as refused:
            assert f"server {server} was deleted" in str(refused)
        else:
            assert (job["state"], job["reason"]) == ("cancelled", f"server {server} was deleted")


def test_two_projects_run_jobs_at_the_same_time(api: httpx.Client) -> None:
    first = make_project(api, 1500, ("PERSON",))
    second = make_project(api, 1500, ("GPE",))
    for project in (first, second):
        server = api.post(f"/projects/{project}/deploy").json()["id"]
        while api.get(f"/servers/{server}").json()["status"] != "ready":
            time.sleep(0.3)
    jobs = [run_job(api, first), run_job(api, second)]
    done = [wait_job(api, j["id"]) for j in jobs]
    assert [j["state"] for j in done] == ["succeeded", "succeeded"]
    assert done[0]["server_id"] != done[1]["server_id"]
    assert (
        done[0]["started_at"] < done[1]["finished_at"]
        and done[1]["started_at"] < done[0]["finished_at"]
    )


def test_a_failing_task_is_recorded_while_the_others_succeed(api: httpx.Client) -> None:
    huge = {"data": {"text": "Paris " * 200_000}}
    project = make_project(api, 50, extra=[huge])
    job = wait_job(api, run_job(api, project)["id"])
    assert (job["state"], job["done"], job["failed"]) == ("succeeded", 50, 1)
    assert "the limit is 1,000,000" in job["errors"][0]["error"]


def test_cancel_stops_the_job_and_keeps_what_was_written(api: httpx.Client) -> None:
    project = make_project(api, 3000)
    job = run_job(api, project)
    wait_progress(api, job["id"], 100)
    cancelled = api.delete(f"/jobs/{job['id']}").json()
    assert cancelled["state"] == "cancelled" and cancelled["reason"] == "cancelled by admin"
    time.sleep(1)
    assert (
        sum(prediction_counts(api, project)) == api.get(f"/jobs/{job['id']}").json()["done"] < 3000
    )
    assert api.delete(f"/jobs/{job['id']}").status_code == 409


def test_roles_are_enforced(api: httpx.Client, ray_cluster: RayCluster) -> None:
    project = make_project(api, 5)
    annotator = api.post("/users", json={"name": f"ann-{uuid.uuid4().hex[:6]}"}).json()
    api.put(f"/projects/{project}/members", json={"user_id": annotator["id"], "role": "annotator"})
    server = api.post(f"/projects/{project}/deploy").json()
    with httpx.Client(
        base_url=ray_cluster.url,
        timeout=60,
        headers={"Authorization": f"Bearer {annotator['token']}"},
    ) as ann:
        assert ann.post(f"/projects/{project}/deploy").status_code == 403
        assert ann.post(f"/projects/{project}/preannotate", json={"all": True}).status_code == 403
        assert ann.delete(f"/servers/{server['id']}").status_code == 403
        assert "annotator" in ann.post(f"/projects/{project}/deploy").json()["detail"]
        tasks = ann.get(f"/projects/{project}/tasks").json()["tasks"]
        assert len(tasks) == 5
        completion = ann.post(f"/tasks/{tasks[0]['id']}/completions", json={"result": []})
        assert completion.status_code == 201
        assert ann.post("/users", json={"name": "x"}).status_code == 403
    with httpx.Client(base_url=ray_cluster.url) as anonymous:
        assert anonymous.get("/projects").status_code == 401
        assert anonymous.post(f"/projects/{project}/deploy").status_code == 401
    with httpx.Client(base_url=ray_cluster.url, headers={"Authorization": "Bearer wrong"}) as bad:
        assert bad.get(f"/servers/{server['id']}").status_code == 401


def test_bad_job_requests_are_refused(api: httpx.Client) -> None:
    project = make_project(api, 3)
    assert api.post(f"/projects/{project}/preannotate", json={}).status_code == 422
    missing = api.post(f"/projects/{project}/preannotate", json={"task_ids": [999_999]})
    assert missing.status_code == 400 and "999999" in missing.json()["detail"]
    bad_import = api.post(
        f"/projects/{project}/tasks?format=jsonl", content=b'{"data": {"text": "a"}}\n{oops'
    )
    assert bad_import.status_code == 400 and "line 2" in bad_import.json()["detail"]
    assert api.get(f"/projects/{project}/tasks").json()["tasks"].__len__() == 3
    assert api.get("/jobs/999999").status_code == 404


def test_store_is_the_single_source_of_truth(ray_cluster: RayCluster, api: httpx.Client) -> None:
    project = make_project(api, 20)
    job = wait_job(api, run_job(api, project)["id"])
    store = Store(ray_cluster.database_url)
    assert store.get_job(job["id"]).done == 20
    assert all(len(store.predictions_for_task(t.id)) == 1 for t in store.task_documents(project))


def test_bulk_job_as_a_ray_job(api: httpx.Client, ray_cluster: RayCluster) -> None:
    from ray.job_submission import JobStatus, JobSubmissionClient

    project = make_project(api, 30)
    name = api.get(f"/projects/{project}").json()["name"]
    cli = Path(sys.executable).parent / "preannotate"
    client = JobSubmissionClient(ray_cluster.ray_address)
    job = client.submit_job(
        entrypoint=f"{cli} run {name} --url {ray_cluster.url} --token {ray_cluster.admin_token}"
    )
    deadline = time.monotonic() + 300
    while client.get_job_status(job) not in {
        JobStatus.SUCCEEDED,
        JobStatus.FAILED,
        JobStatus.STOPPED,
    }:
        assert time.monotonic() < deadline
        time.sleep(1)
    assert client.get_job_status(job) == JobStatus.SUCCEEDED, client.get_job_logs(job)
    assert prediction_counts(api, project) == [1] * 30
    assert subprocess.run([str(cli), "--help"], capture_output=True).returncode == 0
