"""Pre-annotation servers on a real two-node Ray cluster, driven over HTTP."""

import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import httpx
import ray

from tests.conftest import RayCluster, labels_xml

NEWS_TEXT = "Barack Obama met Angela Merkel in New York City on Monday."


def new_project(api: httpx.Client, *labels: str, model: str = "ner_general_en_sm", **fields) -> int:
    labels = labels or ("PERSON", "GPE")
    config = {
        "name": f"p-{uuid.uuid4().hex[:8]}",
        "labeling_config": labels_xml(*(f'value="{lab}" model="{model}"' for lab in labels)),
        "resources": {"num_cpus": 0.5},
        **fields,
    }
    response = api.post("/projects", json=config)
    assert response.status_code == 201, response.text
    return response.json()["id"]


def deploy(api: httpx.Client, project_id: int) -> httpx.Response:
    return api.post(f"/projects/{project_id}/deploy")


def wait_ready(api: httpx.Client, server_id: str, timeout: float = 90) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        server = api.get(f"/servers/{server_id}").json()
        assert server["status"] in {"deploying", "loading", "ready"}, server
        if server["status"] == "ready":
            return server
        time.sleep(0.3)
    raise AssertionError(f"{server_id} not ready after {timeout} s: {server}")


def predict(api: httpx.Client, server_id: str, text: str = NEWS_TEXT) -> httpx.Response:
    return api.post(
        f"/servers/{server_id}/predict", json={"tasks": [{"id": 1, "data": {"text": text}}]}
    )


def test_two_projects_get_two_servers_that_answer_over_http(api: httpx.Client) -> None:
    first = new_project(api, "PERSON", "GPE")
    second = new_project(api, "PERSON", "ORG", "GPE", "DATE")
    with ThreadPoolExecutor(2) as pool:
        responses = list(pool.map(lambda p: deploy(api, p), [first, second]))
    assert [r.status_code for r in responses] == [202, 202], [r.text for r in responses]
    servers = [wait_ready(api, r.json()["id"]) for r in responses]
    assert servers[0]["id"] != servers[1]["id"]
    for server in servers:
        [prediction] = predict(api, server["id"]).json()["predictions"]
        spans = {(i["value"]["text"], i["value"]["labels"][0]) for i in prediction["result"]}
        assert ("New York City", "GPE") in spans and ("Barack Obama", "PERSON") in spans
        for item in prediction["result"]:
            assert NEWS_TEXT[item["value"]["start"] : item["value"]["end"]] == item["value"]["text"]
    assert {"DATE"} & {
        i["value"]["labels"][0]
        for i in predict(api, servers[1]["id"]).json()["predictions"][0]["result"]
    }
    listed = {s["id"]: s for s in api.get("/servers").json()}
    assert listed[servers[0]["id"]]["models"][0]["labels"][:3] == ["CARDINAL", "DATE", "EVENT"]
    assert listed[servers[0]["id"]]["projects"] == [first]


def test_same_configuration_shares_one_server(api: httpx.Client) -> None:
    first = new_project(api, "ORG")
    second = new_project(api, "ORG")
    server = deploy(api, first).json()
    shared = deploy(api, second).json()
    assert shared["id"] == server["id"] and shared["projects"] == [first, second]
    options = api.get(f"/projects/{second}/preannotate/options").json()
    assert [s["id"] for s in options["servers"]] == [server["id"]]


def test_license_token_is_refused_then_freed_by_delete(
    api: httpx.Client, ray_cluster: RayCluster
) -> None:
    first = new_project(api, "PERSON", model="ner_licensed_demo")
    second = new_project(api, "ORG", model="ner_licensed_demo")
    server = deploy(api, first).json()
    ready = wait_ready(api, server["id"])
    assert ready["nodes"] == [ray_cluster.license_node]
    started = time.monotonic()
    refused = deploy(api, second)
    assert time.monotonic() - started < 10
    assert refused.status_code == 409
    assert "license_token" in refused.json()["detail"] and server["id"] in refused.json()["detail"]
    assert refused.json()["delete_candidates"] == [server["id"]]
    options = api.get(f"/projects/{second}/preannotate/options").json()
    assert not options["can_deploy"] and server["id"] in options["reason"]
    assert api.delete(f"/servers/{server['id']}").status_code == 200
    assert ray.available_resources().get("license_token") == 1
    replacement = deploy(api, second)
    assert replacement.status_code == 202, replacement.text
    assert wait_ready(api, replacement.json()["id"])["nodes"] == [ray_cluster.license_node]


def test_servers_that_cannot_fit_are_refused_at_once(api: httpx.Client) -> None:
    gpu = new_project(api, resources={"num_cpus": 0.5, "num_gpus": 1000})  # on any machine
    huge = new_project(api, resources={"num_cpus": 8})
    for project, word in ((gpu, "GPU"), (huge, "CPU")):
        started = time.monotonic()
        response = deploy(api, project)
        assert time.monotonic() - started < 10
        assert response.status_code == 409 and word in response.json()["detail"]
        assert response.json()["delete_candidates"] == []
    assert api.get("/servers").json() == []


def test_delete_returns_resources_and_unknown_servers_are_404(api: httpx.Client) -> None:
    before = ray.available_resources()["CPU"]
    server = deploy(api, new_project(api, resources={"num_cpus": 0.5, "replicas": 2})).json()
    wait_ready(api, server["id"])
    assert ray.available_resources()["CPU"] == before - 1.0
    assert api.delete(f"/servers/{server['id']}").json()["status"] == "deleted"
    assert ray.available_resources()["CPU"] == before
    assert predict(api, server["id"]).status_code == 404
    assert api.delete(f"/servers/{server['id']}").status_code == 404
    assert predict(api, "server-999").status_code == 404
    assert api.get("/servers/server-999").status_code == 404


def test_bad_requests_get_4xx_and_the_cluster_keeps_serving(api: httpx.Client) -> None:
    bad = api.post(
        "/projects", json={"name": "bad", "labeling_config": labels_xml('value="X" model="nope"')}
    )
    assert bad.status_code == 422 and "unknown model 'nope'" in bad.json()["problems"][0]
    hostile = api.post(
        "/projects",
        json={"name": "evil", "labeling_config": '<!DOCTYPE v [<!ENTITY a "b">]><View>&a;</View>'},
    )
    assert hostile.status_code == 422 and "DTD" in hostile.json()["detail"]
    assert api.post("/projects", json={"labeling_config": "<View/>"}).status_code == 422
    project = new_project(api)
    assert (
        api.put(f"/projects/{project}/config", json={"labeling_config": "<View><Text"}).status_code
        == 422
    )
    assert (
        api.put("/projects/999999/config", json={"labeling_config": "<View/>"}).status_code == 404
    )
    assert api.post("/projects/999999/deploy").status_code == 404
    server = deploy(api, project).json()
    wait_ready(api, server["id"])
    assert api.post(f"/servers/{server['id']}/predict", json={"tasks": []}).status_code == 422
    assert api.post(f"/servers/{server['id']}/predict", content=b"{not json").status_code == 422
    long_number = b'{"tasks": [{"data": {"text": "a", "n": ' + b"9" * 5000 + b"}}]}"
    refused = api.post(f"/servers/{server['id']}/predict", content=long_number)
    assert refused.status_code == 422
    assert refused.json()["detail"] == "request body: a number longer than 4300 digits"
    partial = api.post(
        f"/servers/{server['id']}/predict",
        json={"tasks": [{"data": {"body": "no text"}}, {"data": {"text": NEWS_TEXT}}]},
    )
    assert partial.status_code == 200
    first, second = partial.json()["predictions"]
    assert "no text" in first["error"] and second["result"]
    assert api.get("/health").json()["status"] == "UP"
    assert api.get("/openapi.json").json()["info"]["title"] == "preannotate"


def test_scale_to_zero_server_holds_no_license_until_called(api: httpx.Client) -> None:
    scaling = {"min_replicas": 0, "max_replicas": 1}
    project = new_project(
        api,
        "PERSON",
        model="ner_licensed_demo",
        resources={"num_cpus": 0.5, "autoscaling": scaling},
    )
    server = deploy(api, project)
    assert server.status_code == 202, server.text
    ready = wait_ready(api, server.json()["id"])
    assert ready["replicas"]["running"] == 0
    assert ray.available_resources().get("license_token") == 1
    response = predict(api, ready["id"])
    assert response.status_code == 200
    assert ("Barack Obama", "PERSON") in {
        (i["value"]["text"], i["value"]["labels"][0])
        for i in response.json()["predictions"][0]["result"]
    }
    assert "license_token" not in ray.available_resources()


def test_a_server_answers_predictions_itself_while_the_router_is_down(
    api: httpx.Client, ray_cluster: RayCluster
) -> None:
    """Predictions reach the server's own replicas (one hop, `server_ingress.py`): killing
    the router's replica stops the other routes until Serve replaces it, not predictions."""
    server = deploy(api, new_project(api)).json()["id"]
    wait_ready(api, server)
    [router] = [
        a["name"]
        for a in ray.util.list_named_actors(all_namespaces=True)
        if a["name"].startswith("SERVE_REPLICA::router#")
    ]
    ray.kill(ray.get_actor(router, namespace="serve"))
    assert router_comes_to(api, up=False, within_s=10), "the router still answers"
    with httpx.Client(base_url=ray_cluster.url, timeout=10) as anonymous:
        assert anonymous.post(f"/servers/{server}/predict", json={}).status_code == 401
    answered = predict(api, server)
    assert answered.status_code == 200, answered.text
    assert answered.json()["predictions"][0]["result"]
    assert router_comes_to(api, up=True, within_s=120), "Serve did not bring the router back"


DOWN_AFTER_S = 0.5
"""Far less than a new router replica takes to start (a process, then the app's imports)."""


def router_comes_to(api: httpx.Client, up: bool, within_s: float) -> bool:
    """Whether the router's `/health` comes to answering (`up`) or to failing within
    `within_s`. Down, Serve's proxy holds a request until a new replica is up, so a
    `/health` that takes longer than `DOWN_AFTER_S` counts as not answering: a check
    with a long timeout could see only the replacement answer."""
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        try:
            answers = api.get("/health", timeout=5 if up else DOWN_AFTER_S).status_code == 200
        except httpx.HTTPError:
            answers = False
        if answers == up:
            return True
        time.sleep(0.2)
    return False
