"""Training from completions: checks before work, real spaCy training, versioned hub
models, and training jobs next to bulk pre-annotation on the real cluster."""

import copy
import json
import time
import uuid

import httpx
import pytest
import ray

from preannotate.annotators.gold_items import readable_gold
from preannotate.annotators.training import (
    TrainedModel,
    TrainingData,
    check_base,
    train,
    training_data,
)
from preannotate.configs.errors import ConfigError
from preannotate.configs.labeling import parse_labeling_config
from preannotate.configs.project import load_project_config
from preannotate.configs.training import TrainingSpec
from preannotate.deployments.server_ingress import MAX_INTERACTIVE_TASKS
from preannotate.hub.catalog import Hub, HubModel
from preannotate.hub.versions import next_version
from tests.conftest import EXAMPLES, labels_xml
from tests.test_jobs import make_project, run_job, wait_job

POSOLOGY = EXAMPLES / "posology"
ANNOTATED = [json.loads(line) for line in (POSOLOGY / "annotated.jsonl").open()]
LABELING = parse_labeling_config(load_project_config(POSOLOGY / "project.json").labeling_config)


def annotated(rows: list[dict]) -> list[tuple[int, dict, list]]:
    """Fresh copies, so a test may change them."""
    return [(r["id"], r["data"], copy.deepcopy(r["completions"][0]["result"])) for r in rows]


def run_to_end(
    spec: TrainingSpec, data: TrainingData, base: HubModel | None = None
) -> tuple[list[float], TrainedModel]:
    """Drive a training run (from scratch unless a base is given): each epoch's loss, in
    order, and the model."""
    run = train(spec, data, base)
    losses: list[float] = []
    while True:
        try:
            losses.append(next(run).loss)
        except StopIteration as done:
            return losses, done.value


FOREIGN = [  # other tools' and other controls' items, which training leaves alone
    {"from_name": "speech", "to_name": "audio", "type": "labels", "value": {"start": 0.5}},
    {"from_name": "html", "type": "hypertextlabels", "value": {"start": "/p[1]", "end": "/p[2]"}},
    {"from_name": "notes", "to_name": "text", "type": "textarea", "value": {"text": ["fine"]}},
    {"from_name": "stars", "to_name": "text", "type": "rating", "value": {"rating": 4}},
    {"from_name": "label", "to_name": "text", "type": "labels", "value": {}},
    {"from_name": "label", "type": "labels", "value": {"start": 0, "end": 2, "labels": []}},
    {"from_name": "label", "type": "labels", "value": {"start": 0, "end": 2**40, "labels": ["X"]}},
    {"from_name": ["label"], "type": "labels", "value": {"start": "x"}},
    "not an item",
]
SPAN = {"from_name": "label", "to_name": "text", "type": "labels", "id": "a"}


@pytest.mark.parametrize(
    ("item", "problem"),
    [
        ({**SPAN, "value": "PER"}, "a 'labels' region's value must be an object"),
        ({**SPAN, "value": {"labels": "DRUG"}}, "'labels' must be a list of strings"),
        ({**SPAN, "value": {"labels": ["DRUG"]}}, "whole numbers 0 <= 'start' <= 'end'"),
        ({**SPAN, "value": {"start": 5, "end": 2, "labels": ["DRUG"]}}, "0 <= 'start' <= 'end'"),
        ({**SPAN, "id": ["a"], "value": {"start": 0, "end": 2, "labels": ["DRUG"]}}, "'id'"),
        ({"type": "relation", "from_id": ["a"], "to_id": "b"}, "'from_id' and 'to_id'"),
        ({"type": "relation", "from_id": "a", "to_id": "b", "labels": 5}, "'labels' must be"),
    ],
)
def test_a_region_training_cannot_read_refuses_the_run_naming_the_task_and_item(
    item: dict, problem: str
) -> None:
    """Only the regions of the project's own controls are read; a completion may hold any
    tool's items besides them, but a region of its controls must have the shape training
    reads (`annotators/gold_items.py`), or the run is refused before any work."""
    spec = TrainingSpec(kind="relation", model_name="m")
    rows = annotated(ANNOTATED[:20])
    for _, _, result in rows:
        result.extend(copy.deepcopy(FOREIGN))
    data = training_data(spec, LABELING, rows)  # the foreign items change nothing
    assert data.texts == training_data(spec, LABELING, annotated(ANNOTATED[:20])).texts
    rows[3][2].insert(0, item)
    with pytest.raises(ConfigError) as refused:
        training_data(spec, LABELING, rows)
    assert refused.value.problems[0].startswith("the completion of task 4: result item 1: ")
    assert problem in refused.value.problems[0]


def test_each_kind_of_run_reads_and_checks_only_its_own_items() -> None:
    labeling = parse_labeling_config(
        '<View><Text name="text" value="$text"/><Labels name="label" toName="text">'
        '<Label value="DRUG"/></Labels><Choices name="topic" toName="text"><Choice value="a"/>'
        '</Choices><Image name="page" value="$image"/><RectangleLabels name="box" '
        'toName="page"><Label value="TOTAL"/></RectangleLabels></View>'
    )
    span = {**SPAN, "value": {"start": 0, "end": 3, "labels": ["DRUG"]}}
    choice = {"from_name": "topic", "type": "choices", "value": {"choices": "a"}}
    box = {"x": 10**400, "y": 0, "width": 1, "height": 1, "rectanglelabels": ["TOTAL"]}
    huge = {"from_name": "box", "type": "rectanglelabels", "value": box}
    row = [(1, {"text": "abc"}, [span, choice, huge])]
    assert readable_gold("ner", labeling, row) == [(1, {"text": "abc"}, [span])]
    with pytest.raises(ConfigError, match="task 1: result item 2: a 'choices' item needs"):
        readable_gold("classification", labeling, row)
    with pytest.raises(ConfigError, match="result item 3: a 'rectanglelabels' region needs"):
        readable_gold("visual_ner", labeling, row)
    fine = {**huge, "value": box | {"x": 10.5}, "chunk": "c1"}
    with pytest.raises(ConfigError, match="result item 1: a region's 'chunk' must be an object"):
        readable_gold("visual_ner", labeling, [(1, {}, [fine])])
    with pytest.raises(ConfigError, match="result item 1: a region's 'chunk' must be an object"):
        readable_gold("visual_ner", labeling, [(1, {}, [fine | {"chunk": {"id": ["c"]}}])])
    for chunk in ({"id": "c"}, None):
        assert readable_gold("visual_ner", labeling, [(1, {}, [fine | {"chunk": chunk}])])
    no_value = {"from_name": "topic", "type": "choices"}
    assert readable_gold("classification", labeling, [(1, {}, [no_value])]) == [(1, {}, [])]


def test_too_few_completions_and_unknown_labels_fail_before_any_work() -> None:
    spec = TrainingSpec(kind="ner", model_name="m")
    with pytest.raises(ConfigError, match="at least 10 completions with spans; the project has 4"):
        training_data(spec, LABELING, annotated(ANNOTATED[:4]))
    rows = annotated(ANNOTATED[:20])
    rows[3][2].append(
        {
            "from_name": "label",
            "type": "labels",
            "value": {"start": 0, "end": 3, "labels": ["ALLERGY"]},
        }
    )
    with pytest.raises(
        ConfigError,
        match="task 4 uses the label 'ALLERGY', which the project's configuration does not "
        "offer; add it to that configuration's labeling config to train on it, or take it out "
        "of that completion",
    ):
        training_data(spec, LABELING, rows)
    with pytest.raises(ConfigError, match="exactly one <Choices> control"):
        training_data(TrainingSpec(kind="classification", model_name="m"), LABELING, rows)
    on_image = parse_labeling_config(
        '<View><Image name="image" value="$image"/><Choices name="kind" toName="image">'
        '<Choice value="invoice"/></Choices></View>'
    )
    with pytest.raises(ConfigError, match="classifies an <Image>, whose documents it does not"):
        training_data(TrainingSpec(kind="classification", model_name="m"), on_image, rows)


def test_ner_training_learns_and_beats_the_untrained_baseline() -> None:
    spec = TrainingSpec(kind="ner", model_name="m", epochs=8)
    data = training_data(spec, LABELING, annotated(ANNOTATED[:200]))
    losses, trained = run_to_end(spec, data)
    assert len(losses) == 8 and losses[-1] < losses[0]
    assert trained.metrics["baseline_f1"] == 0.0 and trained.metrics["f1"] > 0.7
    assert set(trained.metrics["per_label"]) >= {"DRUG", "DOSAGE"}
    assert (trained.train_size, trained.eval_size) == (160, 40)


def test_a_seed_repeats_a_training_run() -> None:
    spec = TrainingSpec(kind="ner", model_name="m")
    data = training_data(spec, LABELING, annotated(ANNOTATED[:60]))
    runs = [
        run_to_end(TrainingSpec(kind="ner", model_name="m", epochs=2, seed=seed), data)[0]
        for seed in (7, 7, 8)
    ]
    assert runs[0] == runs[1] and runs[0] != runs[2]


def test_classification_training_and_base_model_rules(hub: Hub) -> None:
    xml = (
        '<View><Text name="text" value="$text"/><Choices name="topic" toName="text">'
        '<Choice value="sports"/><Choice value="finance"/></Choices></View>'
    )
    texts = [
        ("the team won the match", "sports"),
        ("the striker scored twice", "sports"),
        ("shares fell on the market", "finance"),
        ("the bank raised its rates", "finance"),
    ]
    rows = [
        (
            i,
            {"text": f"{t} {i}"},
            [{"from_name": "topic", "type": "choices", "value": {"choices": [c]}}],
        )
        for i, (t, c) in enumerate(texts * 6)
    ]
    spec = TrainingSpec(kind="classification", model_name="topics", epochs=5)
    data = training_data(spec, parse_labeling_config(xml), rows)
    _, trained = run_to_end(spec, data)
    assert trained.nlp.pipe_names == ["textcat"] and 0 <= trained.metrics["f1"] <= 1
    with pytest.raises(ConfigError, match="only spaCy NER models can be a base"):
        check_base(spec.model_copy(update={"base_model": "ner_general_en_sm"}), hub)
    assert next_version(hub, "topics") == ("topics_v1", 1)


def import_annotated(api: httpx.Client, rows: list[dict]) -> int:
    config = load_project_config(POSOLOGY / "project.json").model_dump()
    config["name"] = f"train-{uuid.uuid4().hex[:8]}"
    project = api.post("/projects", json=config).json()["id"]
    body = "\n".join(json.dumps(r) for r in rows).encode()
    assert api.post(f"/projects/{project}/tasks?format=jsonl", content=body).status_code == 201
    return project


def train_job(api: httpx.Client, project: int, **body) -> httpx.Response:
    return api.post(f"/projects/{project}/train", json={"kind": "ner", **body})


def test_a_completion_training_cannot_read_is_a_422_naming_its_task(api: httpx.Client) -> None:
    """Any completion is kept as written; the training run it would break is refused
    before any work, naming the task, and no job starts."""
    project = import_annotated(api, ANNOTATED[:12])
    task = api.get(f"/projects/{project}/tasks").json()["tasks"][0]["id"]
    unreadable = {**SPAN, "value": {"labels": ["DRUG"]}}
    written = api.post(f"/tasks/{task}/completions", json={"result": [unreadable]})
    assert written.status_code == 201, written.text
    refused = api.post(f"/projects/{project}/train", json={"kind": "ner", "model_name": "m"})
    assert refused.status_code == 422, refused.text
    assert refused.json()["detail"] == (
        f"the completion of task {task}: result item 1: a 'labels' region needs whole "
        "numbers 0 <= 'start' <= 'end'"
    )
    assert api.get("/jobs", params={"project_id": project}).json() == []


def test_training_runs_next_to_bulk_work_and_the_model_is_deployed(api: httpx.Client) -> None:
    training_project = import_annotated(api, ANNOTATED[:300])
    bulk_project = make_project(api, 1500)
    server = api.post(f"/projects/{bulk_project}/deploy").json()["id"]
    while api.get(f"/servers/{server}").json()["status"] != "ready":
        time.sleep(0.3)
    name = f"posology_{uuid.uuid4().hex[:6]}"
    started = train_job(api, training_project, model_name=name, epochs=8)
    assert started.status_code == 202, started.text
    bulk = wait_job(api, run_job(api, bulk_project)["id"])
    trained = wait_job(api, started.json()["id"])
    assert (bulk["state"], trained["state"]) == ("succeeded", "succeeded"), trained
    assert (
        trained["started_at"] < bulk["finished_at"] and bulk["started_at"] < trained["finished_at"]
    )
    assert trained["done"] == 8 and trained["details"]["model"] == f"{name}_v1"
    log = trained["details"]["log"]
    assert [line.split(": loss")[0] for line in log[:8]] == [f"epoch {i}/8" for i in range(1, 9)]
    assert log[7] == f"epoch 8/8: loss {trained['details']['loss']:.4f}"

    versions = api.get(f"/models/{name}").json()["versions"]
    assert [v["name"] for v in versions] == [f"{name}_v1"]
    metrics = versions[0]["metrics"]
    assert versions[0]["training"]["source_project"] == training_project
    assert metrics["f1"] > metrics["baseline_f1"]

    labels = ("DRUG", "DOSAGE", "FREQUENCY", "ROUTE")
    deployed = api.post(
        "/projects",
        json={
            "name": f"use-{name}",
            "resources": {"num_cpus": 0.5},
            "labeling_config": labels_xml(*(f'value="{lab}" model="{name}_v1"' for lab in labels)),
        },
    ).json()["id"]
    server = api.post(f"/projects/{deployed}/deploy").json()["id"]
    while api.get(f"/servers/{server}").json()["status"] != "ready":
        time.sleep(0.3)
    held_out = ANNOTATED[300 : 300 + MAX_INTERACTIVE_TASKS]
    predicted = api.post(f"/servers/{server}/predict", json={"tasks": held_out})
    assert predicted.status_code == 200, predicted.text
    predictions = predicted.json()["predictions"]
    gold = {
        (r["id"], v["value"]["start"], v["value"]["end"], v["value"]["labels"][0])
        for r in held_out
        for v in r["completions"][0]["result"]
        if v["type"] == "labels" and v["value"]["labels"][0] in labels
    }
    found = {
        (p["task_id"], i["value"]["start"], i["value"]["end"], i["value"]["labels"][0])
        for p in predictions
        for i in p["result"]
    }
    f1 = 2 * len(gold & found) / (len(gold) + len(found))
    assert f1 > 0.8 > metrics["baseline_f1"]

    again = wait_job(api, train_job(api, training_project, model_name=name, epochs=2).json()["id"])
    assert again["details"]["model"] == f"{name}_v2"
    assert [v["name"] for v in api.get(f"/models/{name}").json()["versions"]] == [
        f"{name}_v1",
        f"{name}_v2",
    ]


def test_cancelling_training_frees_resources_and_registers_nothing(api: httpx.Client) -> None:
    project = import_annotated(api, ANNOTATED[:200])
    free_before = ray.available_resources()["CPU"]
    name = f"cancelled_{uuid.uuid4().hex[:6]}"
    job = train_job(api, project, model_name=name, epochs=200).json()
    deadline = time.monotonic() + 60
    while api.get(f"/jobs/{job['id']}").json()["done"] < 1:
        assert time.monotonic() < deadline
        time.sleep(0.2)
    assert ray.available_resources()["CPU"] <= free_before - 1
    cancelled = api.delete(f"/jobs/{job['id']}").json()
    assert cancelled["state"] == "cancelled"
    deadline = time.monotonic() + 30
    while ray.available_resources()["CPU"] < free_before:
        assert time.monotonic() < deadline
        time.sleep(0.2)
    assert api.get(f"/models/{name}").status_code == 404


def test_a_run_failing_in_the_trainer_ends_the_job_as_failed_with_why(
    api: httpx.Client, ray_cluster, tmp_path
) -> None:
    """The base model passes the checks before work (its manifest fits) but has no weights,
    so the trainer actor fails to load it: the job fails with that error, nothing is kept."""
    base = tmp_path / f"hollow_{uuid.uuid4().hex[:6]}"
    (base / "model").mkdir(parents=True)
    manifest = {"name": base.name, "version": "1", "kind": "ner", "labels": ["DRUG"]}
    manifest |= {"embeddings": "e", "runtime": "spacy", "path": "model"}
    (base / "manifest.json").write_text(json.dumps(manifest))
    Hub(ray_cluster.hub_root).add(base)
    project = import_annotated(api, ANNOTATED[:20])
    name = f"failed_{uuid.uuid4().hex[:6]}"
    started = train_job(api, project, model_name=name, base_model=base.name, epochs=2)
    assert started.status_code == 202, started.text
    failed = wait_job(api, started.json()["id"])
    assert failed["state"] == "failed" and "[E053] Could not read" in failed["reason"], failed
    assert failed["done"] == 0 and api.get(f"/models/{name}").status_code == 404


def test_bad_training_requests(api: httpx.Client, ray_cluster) -> None:
    few = import_annotated(api, ANNOTATED[:5])
    response = train_job(api, few, model_name="few")
    assert response.status_code == 422 and "at least 10 completions" in response.json()["detail"]
    enough = import_annotated(api, ANNOTATED[:20])
    unknown = train_job(api, enough, model_name="x", base_model="no_such_model")
    assert (
        unknown.status_code == 422 and "unknown model 'no_such_model'" in unknown.json()["detail"]
    )
    assert train_job(api, enough, model_name="bad name!").status_code == 422
    huge = train_job(api, enough, model_name="huge", resources={"num_cpus": 64})
    assert huge.status_code == 409 and "Cannot train" in huge.json()["detail"]
    annotator = api.post("/users", json={"name": f"a-{uuid.uuid4().hex[:6]}"}).json()
    api.put(f"/projects/{enough}/members", json={"user_id": annotator["id"], "role": "annotator"})
    with httpx.Client(
        base_url=ray_cluster.url, headers={"Authorization": f"Bearer {annotator['token']}"}
    ) as ann:
        assert (
            ann.post(
                f"/projects/{enough}/train", json={"kind": "ner", "model_name": "z"}
            ).status_code
            == 403
        )


def test_train_and_models_show_from_the_cli(api: httpx.Client, ray_cluster) -> None:
    from typer.testing import CliRunner

    from preannotate.client.cli import app

    project = import_annotated(api, ANNOTATED[:60])
    name = f"cli_{uuid.uuid4().hex[:6]}"
    connection = ["--url", ray_cluster.url, "--token", ray_cluster.admin_token]
    runner = CliRunner()
    trained = runner.invoke(
        app, ["train", str(project), "--model-name", name, "--epochs", "3", *connection]
    )
    assert trained.exit_code == 0, trained.output
    assert f"registered {name}_v1, held-out F1" in trained.stdout
    shown = runner.invoke(app, ["models", "show", name, *connection])
    assert shown.exit_code == 0 and f"{name}_v1" in shown.stdout
    assert "60" in shown.stdout and "completions" in shown.stdout
    missing = runner.invoke(app, ["models", "show", "nothing_here", *connection])
    assert missing.exit_code == 2 and "no model named 'nothing_here'" in missing.stderr
