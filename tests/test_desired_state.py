"""What the scheduler knows about servers is pulled from Serve and the store: replicas that
die, are replaced or scale up change the next capacity answer, and a control plane started
again on the same store brings its servers back and finishes their jobs."""

import asyncio
import time
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
import ray
from ray import serve
from ray.serve._private.common import ReplicaState
from ray.serve.schema import DeploymentDetails, ReplicaDetails
from ray.util.state import get_actor

from preannotate.client.launch import check_store_reach, start_control_plane, stop_control_plane
from preannotate.cluster.deploy_spec import DeploySpec
from preannotate.cluster.local_head import ClusterError
from preannotate.cluster.ray_cluster import other_machines
from preannotate.cluster.serve_state import (
    AppState,
    ServeSnapshot,
    failure,
    readable,
    serve_snapshot,
    starting_fails,
)
from preannotate.deployments.model_server import inline_config, model_server_app
from preannotate.hub.catalog import Hub
from preannotate.hub.validation import validate_config
from preannotate.scheduler.actor import SCHEDULER_NAME
from preannotate.scheduler.controller import DeployController
from preannotate.store import ServerStatus, Store
from tests.conftest import RayCluster, labels_xml, project
from tests.test_jobs import (
    _replica_actor,
    make_project,
    prediction_counts,
    run_job,
    wait_job,
    wait_progress,
)
from tests.test_serving import deploy, new_project, predict, wait_ready


def _options(api: httpx.Client, project: int) -> dict:
    response = api.get(f"/projects/{project}/preannotate/options")
    assert response.status_code == 200, response.text
    return response.json()


def _replica_names(server_id: str) -> set[str]:
    names = ray.util.list_named_actors(all_namespaces=True)
    return {a["name"] for a in names if a["name"].startswith(f"SERVE_REPLICA::{server_id}#")}


def _wait_running(api: httpx.Client, server_id: str, replicas: int, timeout: float = 90) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        server = api.get(f"/servers/{server_id}").json()
        if server["status"] == "ready" and server["replicas"]["running"] == replicas:
            return server
        time.sleep(0.3)
    raise AssertionError(f"{server_id} has not {replicas} running replicas: {server}")


def test_scaled_and_killed_replicas_change_the_next_capacity_answer(
    api: httpx.Client, ray_cluster: RayCluster
) -> None:
    scaling = {"min_replicas": 0, "max_replicas": 1}
    licensed = {"num_cpus": 0.5, "autoscaling": scaling}
    idle = new_project(api, "PERSON", model="ner_licensed_demo", resources=licensed)
    other = new_project(api, "ORG", model="ner_licensed_demo")
    server = wait_ready(api, deploy(api, idle).json()["id"])
    assert server["replicas"]["running"] == 0
    assert _options(api, other)["can_deploy"] is True  # a scaled-to-zero server holds no token

    assert predict(api, server["id"]).status_code == 200  # scales it up to one replica
    scaled = _wait_running(api, server["id"], 1)
    assert scaled["nodes"] == [ray_cluster.license_node]
    refused = _options(api, other)
    assert refused["can_deploy"] is False
    assert refused["delete_candidates"] == [server["id"]]

    before = _replica_names(server["id"])
    ray.kill(_replica_actor(server["id"]), no_restart=True)
    deadline = time.monotonic() + 90
    while _replica_names(server["id"]) in (before, set()):  # until Serve has replaced it
        assert time.monotonic() < deadline, "the killed replica was not replaced"
        time.sleep(0.3)
    replaced = _wait_running(api, server["id"], 1)
    assert predict(api, server["id"]).status_code == 200
    assert replaced["nodes"] == [ray_cluster.license_node]
    assert _options(api, other)["delete_candidates"] == [server["id"]]

    api.delete(f"/servers/{server['id']}")
    assert _options(api, other)["can_deploy"] is True


def test_a_restarted_control_plane_restores_servers_and_finishes_their_jobs(
    api: httpx.Client, ray_cluster: RayCluster
) -> None:
    project = make_project(api, 1200)
    job = run_job(api, project)
    wait_progress(api, job["id"], 128)

    stop_control_plane()  # what `preannotate down` does before it stops Ray
    assert serve.status().applications == {}
    address = urlsplit(ray_cluster.url)
    start_control_plane(
        address.hostname,
        address.port,
        ray_cluster.database_url,
        str(ray_cluster.hub_root),
        ray_cluster.license,
    )

    restored = wait_ready(api, job["server_id"], timeout=180)
    assert restored["id"] == job["server_id"]
    final = wait_job(api, job["id"])
    assert (final["state"], final["done"], final["failed"]) == ("succeeded", 1200, 0)
    assert prediction_counts(api, project) == [1] * 1200


def test_the_scheduler_and_the_router_ask_ray_for_the_head_node(
    ray_cluster: RayCluster,
) -> None:
    """Where a SQLite store is, and where they stay while workers come and go."""
    for actor in (ray.get_actor(SCHEDULER_NAME), _replica_actor("router")):
        state = get_actor(actor._actor_id.hex())
        assert state.required_resources.get("node:__internal_head__", 0) > 0, state
        assert state.node_id == ray_cluster.head_node
    assert other_machines() == []  # the test cluster's worker node is on this machine too


def test_up_refuses_a_sqlite_store_on_a_cluster_with_other_machines() -> None:
    with pytest.raises(ClusterError) as refused:
        check_store_reach("sqlite:////data/preannotate.sqlite", ["gpu-1", "worker-2"])
    assert "nodes on 2 other machine(s) (gpu-1, worker-2)" in str(refused.value)
    assert "PREANNOTATE_DATABASE_URL" in str(refused.value)
    check_store_reach("sqlite:////data/preannotate.sqlite", [])
    check_store_reach("postgresql+psycopg://u:p@db/preannotate", ["gpu-1"])


def test_a_replica_on_a_machine_without_the_sqlite_store_fails_saying_what_to_set(
    ray_cluster: RayCluster, tmp_path: Path
) -> None:
    """What a node that joined later, on another machine, does with a SQLite store: its
    replica finds no file at the store's path and fails with the advice, where it would
    otherwise open an empty store of its own and refuse every caller's token."""
    xml = labels_xml('value="GPE" model="ner_general_en_sm"')
    config = validate_config(project(xml), Hub(tmp_path))
    missing = f"sqlite:///{tmp_path / 'elsewhere' / 'preannotate.sqlite'}"
    app = model_server_app(
        "elsewhere", DeploySpec.from_config(config), inline_config(config), str(tmp_path), missing
    )
    try:
        with pytest.raises(RuntimeError, match="Deploying application elsewhere failed"):
            serve.run(app, name="elsewhere", route_prefix=None)
        message = serve.status().applications["elsewhere"].deployments["model_server"].message
        assert "is not on this machine" in message and "PREANNOTATE_DATABASE_URL" in message
        assert not (tmp_path / "elsewhere" / "preannotate.sqlite").exists()
    finally:
        serve.delete("elsewhere")


def test_a_replicas_traceback_in_serves_message_is_cut_to_its_exception() -> None:
    """What the server's message shows while Serve retries a replica that did not start;
    Serve's notes on slow starts are no failure, and stay out of it."""
    retrying = (
        "A replica failed to start with exception. Retrying. Error:\n"
        "\x1b[36mray::ServeReplica:server-1:model_server.initialize_and_get_metadata()\x1b[39m\n"
        '  File "replica.py", line 1867, in initialize\n'
        "RuntimeError: Traceback (most recent call last):\n"
        '  File "db.py", line 160, in __init__\n'
        "pydantic_core._pydantic_core.ValidationError: 1 validation error for Config\n"
        "name\n  Field required [type=missing]\n\n"
    )
    assert failure(retrying)
    assert readable(retrying) == (
        "A replica failed to start with exception. Retrying. pydantic_core._pydantic_core."
        "ValidationError: 1 validation error for Config name Field required [type=missing]"
    )
    slow = "Deployment 'model_server' has 1 replicas that have taken more than 30s to initialize."
    assert not failure(slow) and readable(slow) == slow


def test_serves_failure_message_counts_only_while_fewer_replicas_run_than_the_target() -> None:
    said = "A replica failed to start with exception. Retrying. Error:\nRuntimeError: no model"

    def deployment(running: int, target: int, message: str = said) -> DeploymentDetails:
        return DeploymentDetails(
            name="model_server",
            status="HEALTHY",
            status_trigger="CONFIG_UPDATE_COMPLETED",
            message=message,
            deployment_config={"name": "model_server"},
            target_num_replicas=target,
            required_resources={},
            replicas=[replica(f"r{n}") for n in range(running)],
        )

    assert starting_fails(deployment(running=1, target=2))
    assert not starting_fails(deployment(running=2, target=2))  # over, not yet cleared
    assert not starting_fails(deployment(running=0, target=0))  # scaled to zero
    assert not starting_fails(deployment(running=1, target=2, message="slow to start"))


def replica(replica_id: str) -> ReplicaDetails:
    return ReplicaDetails(
        replica_id=replica_id,
        state=ReplicaState.RUNNING,
        pid=1,
        actor_name=f"SERVE_REPLICA::{replica_id}",
        actor_id="0" * 32,
        node_id="node",
        node_ip="127.0.0.1",
        start_time_s=0.0,
        log_file_path=None,
        worker_id="worker",
    )


SCALE_UP_AT_ONCE = {
    "min_replicas": 1,
    "max_replicas": 2,
    "target_ongoing_requests": 1,
    "upscale_delay_s": 0,
    "look_back_period_s": 1,
    "metrics_interval_s": 0.5,
}


@serve.deployment(ray_actor_options={"num_cpus": 0}, autoscaling_config=SCALE_UP_AT_ONCE)
class Flaky:
    """Starts unless its flag file exists: a replica autoscaling adds then does not start."""

    def __init__(self, flag: str):
        if Path(flag).exists():
            raise RuntimeError(f"flag {Path(flag).name} is set")

    async def __call__(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


def test_a_running_server_says_why_a_replica_it_adds_does_not_start(
    ray_cluster: RayCluster, tmp_path: Path
) -> None:
    """The application stays running (the server `ready`) while Serve retries a replica
    autoscaling adds; the server's message says why that replica does not start, and says
    nothing once it does."""
    servers = DeployController(Store(ray_cluster.database_url), Hub(ray_cluster.hub_root), None)
    flag = tmp_path / "broken"
    handle = serve.run(Flaky.bind(str(flag)), name="flaky", route_prefix=None)
    try:
        flag.touch()
        calls = [handle.remote(60) for _ in range(4)]  # four ongoing requests: scale up
        app = flaky_app_once(lambda a: a.failure)
        status, message = servers.state("flaky", ServeSnapshot({"flaky": app}))
        assert status == ServerStatus.READY and "RuntimeError: flag broken is set" in message
        flag.unlink()
        app = flaky_app_once(lambda a: [r.state for r in a.replicas].count("RUNNING") == 2)
        assert app.failure == ""
        for call in calls:
            call.cancel()
    finally:
        serve.delete("flaky")


def flaky_app_once(done: Callable[[AppState], object], within_s: float = 120) -> AppState:
    """The "flaky" application as Serve shows it, once `done` says so of it."""
    deadline = time.monotonic() + within_s
    while not done(app := serve_snapshot().apps["flaky"]):
        assert time.monotonic() < deadline, app
        time.sleep(0.5)
    return app
