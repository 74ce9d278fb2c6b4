"""A pre-annotation server as Label Studio's ML backend, spoken to as Label Studio speaks.

The request bodies are the ones Label Studio 1.2x sends (`label_studio/ml/api_connector.py`:
`/health`, `/setup`, `/predict` with `params.context`; its webhook payloads), and the
answers are read as it reads them (`label-studio-ml-backend`'s `api.py`: `results`, one per
task). One news server on the session's real cluster serves the whole module; an annotator
of its project and a user without a role call it with HTTP basic auth, as Label Studio's
model connection does.
"""

import io
import json
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from preannotate.configs.label_studio import match
from preannotate.configs.labeling import parse_labeling_config
from preannotate.configs.project import load_project_config
from preannotate.deployments.routes.label_studio import MAX_TASKS
from preannotate.deployments.server_ingress import MAX_INTERACTIVE_TASKS
from preannotate.store import InvalidInput, Store
from tests.conftest import EXAMPLES, ROOT, RayCluster
from tests.test_store import db_path, postgres_database, store, store_url  # noqa: F401

NEWS = EXAMPLES / "news"
LS_PROJECT = 12
LS_PROJECT_UID = "12.1712586036"
"""Label Studio's `<project id>.<created_at timestamp>`, as `/setup` and `/predict` carry it."""
TEXT = "Barack Obama met Angela Merkel in New York City on Monday."
LS_CONFIG = """<View>
  <Labels name="ner" toName="body">
    <Label value="PERSON" background="red"/>
    <Label value="ORG" background="darkorange"/>
    <Label value="GPE" background="orange"/>
    <Label value="DATE" background="green"/>
    <Label value="MONEY" background="blue"/>
    <Label value="TICKER" background="purple"/>
    <Label value="PRODUCT" background="pink"/>
  </Labels>
  <Text name="body" value="$review"/>
  <Choices name="sentiment" toName="body">
    <Choice value="Positive"/>
    <Choice value="Negative"/>
  </Choices>
</View>"""
"""Label Studio's own names (`ner` on `body`, reading `$review`) and more than the server
predicts: a PRODUCT label and a sentiment choice its annotators fill in."""


@dataclass
class Caller:
    name: str
    token: str
    http: httpx.Client
    """Sends HTTP basic auth (user name, API token), as Label Studio does."""


@dataclass
class Backend:
    project: int
    server: str
    config_hash: str
    admin: httpx.Client
    annotator: Caller
    outsider: Caller

    @property
    def url(self) -> str:
        return f"/ml/{self.server}"


@pytest.fixture(scope="module")
def backend(ray_cluster: RayCluster) -> Iterator[Backend]:
    """The news example deployed once, its project with an annotator, and a user with no
    role anywhere."""
    bearer = {"Authorization": f"Bearer {ray_cluster.admin_token}"}
    with httpx.Client(base_url=ray_cluster.url, timeout=120, headers=bearer) as admin:
        config = load_project_config(NEWS / "project.json").model_dump()
        config["name"] = f"news ls {uuid.uuid4().hex[:6]}"
        project = admin.post("/projects", json=config)
        assert project.status_code == 201, project.text
        project_id = project.json()["id"]
        server = admin.post(f"/projects/{project_id}/deploy").json()
        callers = []
        for role in ("annotator", None):
            user = admin.post("/users", json={"name": f"ls-{uuid.uuid4().hex[:6]}"}).json()
            if role:
                member = {"user_id": user["id"], "role": role}
                assert admin.put(f"/projects/{project_id}/members", json=member).status_code == 200
            http = httpx.Client(
                base_url=ray_cluster.url, timeout=120, auth=(user["name"], user["token"])
            )
            callers.append(Caller(user["name"], user["token"], http))
        try:
            deadline = time.monotonic() + 120
            while (state := admin.get(f"/servers/{server['id']}").json())["status"] != "ready":
                assert state["status"] in {"deploying", "loading"} and time.monotonic() < deadline
                time.sleep(0.3)
            yield Backend(project_id, server["id"], server["config_hash"], admin, *callers)
        finally:
            for caller in callers:
                caller.http.close()
            admin.delete(f"/servers/{server['id']}")


def ls_task(task_id: int, data: dict[str, Any]) -> dict[str, Any]:
    """A task as Label Studio serializes it for its ML backend."""
    return {
        "id": task_id,
        "annotations": [],
        "file_upload": "f3331b20-news.json",
        "drafts": [],
        "predictions": [],
        "agreement": None,
        "data": data,
        "meta": {},
        "created_at": "2024-04-08T14:21:29.542516Z",
        "updated_at": "2024-04-08T14:21:29.542520Z",
        "inner_id": task_id,
        "total_annotations": 0,
        "cancelled_annotations": 0,
        "total_predictions": 0,
        "comment_count": 0,
        "unresolved_comment_count": 0,
        "last_comment_updated_at": None,
        "project": LS_PROJECT,
        "updated_by": None,
        "comment_authors": [],
    }


def predict_body(tasks: list[dict[str, Any]], context: dict | None = None) -> dict[str, Any]:
    return {
        "tasks": tasks,
        "model_version": None,
        "project": LS_PROJECT_UID,
        "label_config": LS_CONFIG,
        "params": {"login": None, "password": None, "context": context},
    }


def setup_body(schema: str) -> dict[str, Any]:
    return {
        "project": LS_PROJECT_UID,
        "schema": schema,
        "hostname": "http://localhost:8080",
        "access_token": "c5d3a4b0f1e2",
        "extra_params": None,
    }


def webhook_body(action: str, task_id: int, data: dict, result: list[dict]) -> dict[str, Any]:
    """A Label Studio webhook for an annotation event, with its payload."""
    task = ls_task(task_id, data) | {"is_labeled": True, "total_annotations": 1}
    return {
        "action": action,
        "annotation": {
            "id": 1000 + task_id,
            "result": result,
            "created_username": " annotator@example.com, 3",
            "created_ago": "0\xa0minutes",
            "completed_by": 3,
            "was_cancelled": False,
            "ground_truth": False,
            "created_at": "2024-04-08T14:30:00.000000Z",
            "updated_at": "2024-04-08T14:30:00.000000Z",
            "lead_time": 12.5,
            "task": task_id,
            "project": LS_PROJECT,
            "parent_prediction": None,
            "parent_annotation": None,
        },
        "task": task,
        "project": {"id": LS_PROJECT, "title": "News", "label_config": LS_CONFIG},
    }


def span(text: str, piece: str, label: str) -> dict[str, Any]:
    """A span as Label Studio's editor writes it, under Label Studio's names."""
    start = text.index(piece)
    return {
        "value": {"start": start, "end": start + len(piece), "text": piece, "labels": [label]},
        "id": uuid.uuid4().hex[:10],
        "from_name": "ner",
        "to_name": "body",
        "type": "labels",
        "origin": "manual",
    }


def test_health_and_setup_answer_as_the_ml_backend_does(backend: Backend) -> None:
    ann = backend.annotator.http
    for path in (
        f"{backend.url}/health",
        f"{backend.url}/",
        f"/ml/projects/{backend.project}/health",
    ):
        answer = ann.get(path)
        assert answer.status_code == 200, answer.text
        assert answer.json() == {"status": "UP", "model_class": f"preannotate {backend.server}"}
    # Label Studio gives /health about a second before it calls the backend unreachable.
    assert ann.get(f"{backend.url}/health").elapsed.total_seconds() < 1.0
    setup = ann.post(f"{backend.url}/setup", json=setup_body(LS_CONFIG))
    assert setup.status_code == 200, setup.text
    assert setup.json() == {"model_version": backend.config_hash}


def test_setup_names_what_the_labeling_config_lacks(backend: Backend) -> None:
    fewer = LS_CONFIG.replace('<Label value="MONEY" background="blue"/>', "").replace(
        '<Label value="TICKER" background="purple"/>', ""
    )
    answer = backend.annotator.http.post(f"{backend.url}/setup", json=setup_body(fewer))
    assert answer.status_code == 422
    assert answer.json()["problems"] == [
        '<Labels name="ner"> lacks the labels MONEY, TICKER, which the server predicts for its '
        '<Labels name="label">'
    ]
    choices_only = (
        '<View><Text name="body" value="$review"/><Choices name="c" toName="body">'
        '<Choice value="A"/></Choices></View>'
    )
    answer = backend.annotator.http.post(f"{backend.url}/setup", json=setup_body(choices_only))
    assert answer.status_code == 422
    assert (
        'has no <Labels> on a <Text> for the server\'s <Labels name="label">'
        in (answer.json()["detail"])
    )
    predicted = backend.annotator.http.post(
        f"{backend.url}/predict",
        json=predict_body([ls_task(1, {"review": TEXT})]) | {"label_config": fewer},
    )
    assert predicted.status_code == 422 and "MONEY, TICKER" in predicted.json()["detail"]


def test_predict_answers_in_label_studio_names_one_result_per_task(backend: Backend) -> None:
    tasks = [
        ls_task(101, {"review": TEXT}),
        ls_task(102, {"title": "no review in this task"}),
        ls_task(103, {"review": "Shares of Microsoft (NASDAQ: MSFT) rose 3% on $62 billion."}),
    ]
    context = {"annotation_id": None, "draft_id": 0, "user_id": 3, "result": []}
    answer = backend.annotator.http.post(
        f"{backend.url}/predict", json=predict_body(tasks, context)
    )
    assert answer.status_code == 200, answer.text
    first, missing, third = answer.json()["results"]
    spans = {(i["value"]["text"], i["value"]["labels"][0]) for i in first["result"]}
    assert {("Barack Obama", "PERSON"), ("New York City", "GPE")} <= spans
    assert {(i["from_name"], i["to_name"], i["type"]) for i in first["result"]} == {
        ("ner", "body", "labels")
    }
    assert first["model_version"] == backend.config_hash and "score" in first
    assert missing == {
        "result": [],
        "score": None,
        "model_version": backend.config_hash,
        "error": "the task has no text in data.review",
    }
    assert ("MSFT", "TICKER") in {
        (i["value"]["text"], i["value"]["labels"][0]) for i in third["result"]
    }


def test_a_hundred_tasks_in_one_call_come_back_in_order(backend: Backend) -> None:
    names = ["Angela Merkel", "Barack Obama", "Emmanuel Macron", "Tim Cook"]
    texts = [f"{names[i % 4]} visited Paris on day {i}." for i in range(150)]
    tasks = [ls_task(i, {"review": text}) for i, text in enumerate(texts)]
    answer = backend.annotator.http.post(f"{backend.url}/predict", json=predict_body(tasks))
    assert answer.status_code == 200, answer.text
    results = answer.json()["results"]
    assert len(results) == 150
    for text, result in zip(texts, results, strict=True):
        assert result["result"], text
        for item in result["result"]:
            assert text[item["value"]["start"] : item["value"]["end"]] == item["value"]["text"]


def test_annotations_become_completions_of_the_matching_task(backend: Backend) -> None:
    text = f"Tim Cook visited Berlin in May ({uuid.uuid4().hex[:6]})."
    result = [span(text, "Tim Cook", "PERSON"), span(text, "Berlin", "GPE")]
    result.append(
        {
            "value": {"choices": ["Positive"]},
            "id": "s1",
            "from_name": "sentiment",
            "to_name": "body",
            "type": "choices",
            "origin": "manual",
        }
    )
    created = backend.annotator.http.post(
        f"{backend.url}/webhook",
        json=webhook_body("ANNOTATION_CREATED", 7, {"review": text}, result),
    )
    assert created.status_code == 201, created.text
    stored = created.json()["result"]
    assert created.json()["status"] == "ok" and stored["task_created"] is True
    assert stored["project_id"] == backend.project
    task = backend.admin.get(f"/tasks/{stored['task_id']}/completions")
    [completion] = task.json()
    assert [(i["from_name"], i["to_name"]) for i in completion["result"]] == [
        ("label", "text"),
        ("label", "text"),
        ("sentiment", "text"),
    ]
    page = backend.admin.get(f"/projects/{backend.project}/tasks", params={"limit": 1000}).json()
    [row] = [t for t in page["tasks"] if t["id"] == stored["task_id"]]
    assert row["data"] == {"review": text, "text": text}

    result[1] = span(text, "May", "DATE")
    updated = backend.annotator.http.post(
        f"/ml/projects/{backend.project}/webhook",
        json=webhook_body("ANNOTATION_UPDATED", 7, {"review": text}, result),
    )
    assert updated.status_code == 201, updated.text
    assert updated.json()["result"]["task_id"] == stored["task_id"]
    assert updated.json()["result"]["task_created"] is False
    latest = backend.admin.get(f"/tasks/{stored['task_id']}/completions").json()[-1]
    assert latest["result"][1]["value"]["labels"] == ["DATE"]

    other = backend.annotator.http.post(
        f"{backend.url}/webhook", json={"action": "PROJECT_UPDATED", "project": {"id": LS_PROJECT}}
    )
    assert other.status_code == 200 and other.json() == {"status": "Unknown event"}


def test_start_training_trains_on_the_completions(backend: Backend) -> None:
    people = ["Angela Merkel", "Barack Obama", "Emmanuel Macron", "Tim Cook", "Olaf Scholz"]
    for i in range(12):
        text = f"{people[i % 5]} spoke in Paris ({uuid.uuid4().hex[:6]})."
        body = webhook_body(
            "ANNOTATION_CREATED", 200 + i, {"review": text}, [span(text, people[i % 5], "PERSON")]
        )
        assert backend.annotator.http.post(f"{backend.url}/webhook", json=body).status_code == 201
    start = {"action": "START_TRAINING", "project": {"id": LS_PROJECT, "label_config": LS_CONFIG}}
    refused = backend.annotator.http.post(f"{backend.url}/webhook", json=start)
    assert refused.status_code == 403 and "manager or owner" in refused.json()["detail"]
    admin = backend.admin.post(f"{backend.url}/webhook", json=start)
    assert admin.status_code == 201, admin.text
    job = admin.json()["result"]
    assert (job["kind"], job["project_id"], job["params"]["kind"]) == (
        "train",
        backend.project,
        "ner",
    )
    assert job["params"]["model_name"].startswith("news_ls_")
    assert backend.admin.delete(f"/jobs/{job['id']}").status_code == 200


def test_credentials_and_roles(backend: Backend, ray_cluster: RayCluster) -> None:
    url = ray_cluster.url
    body = predict_body([ls_task(1, {"review": TEXT})])
    wrong = [
        None,
        (backend.annotator.name, "not-a-token"),
        ("someone-else", backend.annotator.token),
        (backend.outsider.name, backend.annotator.token),
    ]
    for auth in wrong:
        answer = httpx.get(f"{url}{backend.url}/health", auth=auth)
        assert answer.status_code == 401, auth
        assert answer.headers["www-authenticate"].startswith("Basic ")
        assert "API token" in answer.json()["detail"]
    bearer = {"Authorization": f"Bearer {backend.annotator.token}"}
    assert httpx.get(f"{url}{backend.url}/health", headers=bearer).status_code == 200
    out = backend.outsider.http
    for answer in (
        out.get(f"{backend.url}/health"),
        out.post(f"{backend.url}/setup", json=setup_body(LS_CONFIG)),
        out.post(f"{backend.url}/predict", json=body),
        out.post(f"{backend.url}/webhook", json={"action": "START_TRAINING"}),
        out.get(f"/ml/projects/{backend.project}/health"),
    ):
        assert answer.status_code == 403, answer.text
        assert backend.outsider.name in answer.json()["detail"]
    assert backend.annotator.http.get("/ml/server-999999/health").status_code == 404


def test_bad_input_is_a_4xx_that_says_why(backend: Backend) -> None:
    ann = backend.annotator.http
    cases = [
        (f"{backend.url}/predict", {"tasks": {"id": 1}, "label_config": LS_CONFIG}, 422, "tasks"),
        (f"{backend.url}/predict", predict_body([]) | {"label_config": "<View"}, 422, "XML"),
        (
            f"{backend.url}/predict",
            predict_body([ls_task(i, {"review": "x"}) for i in range(MAX_TASKS + 1)]),
            422,
            "tasks",
        ),
        (f"{backend.url}/setup", {"project": LS_PROJECT_UID}, 422, "schema"),
        (f"{backend.url}/webhook", {"project": {"id": LS_PROJECT}}, 422, "action"),
        (
            f"{backend.url}/webhook",
            {"action": "ANNOTATION_CREATED", "annotation": {"result": []}},
            400,
            "Send payload",
        ),
        (
            f"{backend.url}/webhook",
            webhook_body("ANNOTATION_CREATED", 9, {"title": "no text"}, []),
            400,
            "the annotated task: the task has no text in data.review",  # Label Studio's name
        ),
    ]
    for path, body, status, says in cases:
        answer = ann.post(path, json=body)
        assert answer.status_code == status, (path, answer.text)
        assert says in answer.json()["detail"], answer.text
    raw = ann.post(f"{backend.url}/predict", content=b'{"tasks": [NaN]}')
    assert raw.status_code == 422
    assert ann.post(f"{backend.url}/predict", json=predict_body([])).json() == {"results": []}


def test_the_routes_document_their_errors(backend: Backend) -> None:
    paths = backend.admin.get("/openapi.json").json()["paths"]
    for base in ("/ml/{server_id}", "/ml/projects/{project_id}"):
        predict = paths[f"{base}/predict"]["post"]["responses"]
        assert {"200", "401", "403", "404", "422", "503"} <= set(predict)
        assert {"201", "200", "400", "401", "403", "404", "409"} <= set(
            paths[f"{base}/webhook"]["post"]["responses"]
        )


def test_pairing_renames_both_ways_and_reads_label_studio_fields() -> None:
    ours = parse_labeling_config((NEWS / "config.xml").read_text())
    pairing = match(ours, parse_labeling_config(LS_CONFIG), {"TICKER"})
    assert (pairing.controls, pairing.objects, pairing.read) == (
        {"label": "ner"},
        {"text": "body"},
        {"text": "review"},
    )
    assert pairing.problems == []
    item = {"from_name": "label", "to_name": "text", "type": "labels", "value": {}}
    assert pairing.to_project(pairing.to_label_studio(item)) == item
    assert pairing.project_data({"review": "x", "id": 3}) == {"review": "x", "id": 3, "text": "x"}


def test_controls_a_prompt_fills_are_paired_and_checked_like_a_models() -> None:
    """A `<Choices>` or a label that a prompt fills predicts as a model's does: Label
    Studio's config must offer it, and predictions carry Label Studio's names."""
    ours = parse_labeling_config(
        '<View><Labels name="ents" toName="review"><Label value="FEATURE" prompt="feat"/>'
        '</Labels><Choices name="mood" toName="review" prompt="mood_p"><Choice value="good"/>'
        '<Choice value="bad"/></Choices><Text name="review" value="$review"/></View>'
    )
    theirs = parse_labeling_config(
        '<View><Labels name="spans" toName="body"><Label value="FEATURE"/></Labels>'
        '<Choices name="sentiment" toName="body"><Choice value="good"/></Choices>'
        '<Text name="body" value="$content"/></View>'
    )
    pairing = match(ours, theirs)
    assert pairing.controls == {"ents": "spans", "mood": "sentiment"}
    assert pairing.read == {"review": "content"}
    assert pairing.problems == [
        '<Choices name="sentiment"> lacks the choices bad, which the server predicts for its '
        '<Choices name="mood">'
    ]
    without = parse_labeling_config('<View><Text name="body" value="$content"/></View>')
    assert len(match(ours, without).problems) == 2
    with pytest.raises(ValueError, match="no text in data.content"):
        pairing.server_data({"content": "   "})


def test_a_visual_pairing_sends_the_document_reference() -> None:
    """The visual pipeline reads the `<Image>` a `<RectangleLabels>` is on: `/predict`
    sends its reference (a file, or a list of pages) under the server's field name."""
    ours = parse_labeling_config((EXAMPLES / "visual" / "config.xml").read_text())
    theirs = parse_labeling_config(
        (EXAMPLES / "visual" / "config.xml").read_text().replace('"$image"', '"$scan"')
    )
    pairing = match(ours, theirs)
    assert pairing.read == {"image": "scan"}
    assert pairing.server_data({"scan": "invoice.pdf"}) == {"image": "invoice.pdf"}
    assert pairing.server_data({"scan": ["p1.png", "p2.png"]}) == {"image": ["p1.png", "p2.png"]}
    with pytest.raises(ValueError, match="no image or PDF reference in data.scan"):
        pairing.server_data({"scan": " "})


def test_an_annotation_finds_the_task_with_its_document(store: Store) -> None:  # noqa: F811
    news, other = store.create_project("news").id, store.create_project("other").id
    text = "Zoë Müller flew to Zürich on 3 May."
    lines = [{"data": {"text": "first"}}, {"data": {"text": text, "source": "wire"}}]
    added = store.import_tasks(news, io.StringIO("\n".join(map(json.dumps, lines))), "jsonl")
    span = {"start": 0, "end": 3, "text": "Zoë", "labels": ["PERSON"]}
    item = [{"from_name": "label", "to_name": "text", "type": "labels", "value": span}]

    found, created = store.complete_document(news, {"text": text, "review": text}, ["text"], item)
    assert (found.task_id, created, found.result) == (added.last_id, False, item)
    new, created = store.complete_document(other, {"text": text}, ["text"], [])
    assert created and store.get_task(new.task_id).project_id == other
    again, created = store.complete_document(other, {"text": text}, ["text"], item)
    assert (again.task_id, created) == (new.task_id, False)
    assert len(store.completions_for_task(new.task_id)) == 2
    with pytest.raises(InvalidInput, match="task has no text"):
        store.complete_document(news, {"title": "x"}, ["text"], item)
    assert store.count_tasks(news) == 2


def test_the_docs_state_the_limits_the_code_uses() -> None:
    readme = " ".join((ROOT / "README.md").read_text().split())
    page = " ".join((ROOT / "docs" / "label-studio.md").read_text().split())
    assert f"up to {MAX_TASKS:,} tasks per call" in readme
    assert f"Up to {MAX_TASKS:,} tasks per call" in page
    assert f"in slices of {MAX_INTERACTIVE_TASKS}, all slices at once" in page
