"""Prompts: the library, their place in a configuration, the zero-shot model that runs
them (real all-MiniLM-L6-v2 weights, real spaCy), and the routes."""

import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from preannotate.annotators.pipeline import Pipeline
from preannotate.annotators.sentences import Sentences
from preannotate.client.api import ApiError, Client
from preannotate.configs.errors import ConfigError
from preannotate.configs.project import load_project_config
from preannotate.configs.prompts import PromptLibrary, PromptTaken, parse_prompt, read_prompt_file
from preannotate.configs.rules import RuleLibrary
from preannotate.hub.catalog import Hub
from preannotate.hub.validation import validate_config
from tests.conftest import (
    EXAMPLES,
    ModelMaker,
    RayCluster,
    labels_xml,
    project,
    servers_deleted_after,
)

EXAMPLE = EXAMPLES / "prompts" / "project.json"
PERSON_Q = {"type": "entity", "name": "person_q", "label": "PERSON", "questions": ["Who?"]}
TOPIC = {
    "type": "classification",
    "name": "topic_p",
    "classes": {"sports": "sports and games", "politics": "politics and elections"},
}
EXTERNAL = {
    "type": "external",
    "name": "llm_orgs",
    "provider": "openai-main",
    "model": "gpt-4o-mini",
    "text": "Find the companies.",
    "output": "entity",
    "labels": ["ORG", "PRODUCT"],
}


def write(path: Path, data: object) -> Path:
    path.write_text(json.dumps(data))
    return path


def test_a_changed_prompt_gets_the_next_version_and_a_new_configuration_hash(
    tmp_path: Path, hub: Hub
) -> None:
    library = PromptLibrary()
    file = write(tmp_path / "p.json", [PERSON_Q, TOPIC])
    assert [p.version for p in map(library.add, read_prompt_file(file))] == [1, 1]
    assert library.add(parse_prompt(PERSON_Q, "again")).version == 1  # unchanged: same version
    config = project(labels_xml('value="PERSON" prompt="person_q"'))
    before = validate_config(config, hub)
    assert before.prompts["person_q"].version == 1
    assert before.models.keys() == {"zero_shot_minilm"}

    changed = library.add(parse_prompt({**PERSON_Q, "questions": ["Which person?"]}, "x"))
    assert changed.version == 2
    assert [(p.name, p.version) for p in library.prompts()] == [("person_q", 2), ("topic_p", 1)]
    assert validate_config(config, hub).hash != before.hash

    by_alice = library.add(parse_prompt({**TOPIC, "name": "alices"}, "x"), by=7)
    with pytest.raises(PromptTaken, match="'alices' was added by another user"):
        library.add(parse_prompt({**TOPIC, "name": "alices", "description": "mine"}, "x"), by=8)
    assert library.find("alices") == by_alice  # unchanged; so are the names listed:
    assert [p.name for p in library.prompts()] == ["alices", "person_q", "topic_p"]
    assert library.add(parse_prompt({**TOPIC, "name": "alices"}, "x"), by=8) == by_alice
    with pytest.raises(PromptTaken):  # added with the CLI: only admins change it over HTTP
        library.add(parse_prompt({**TOPIC, "threshold": 0.5}, "x"), by=7)
    assert library.add(parse_prompt({**TOPIC, "threshold": 0.5}, "x")).version == 2
    authors = library.root / ".authors"
    for broken in ("{not json", '["alices"]', '{"alices": "7"}', "[" * 100_000):
        authors.write_text(broken)
        with pytest.raises(ConfigError, match=r"library's \.authors file is not a JSON object"):
            library.add(parse_prompt({**TOPIC, "name": "alices", "threshold": 0.9}, "x"), by=7)
    assert library.add(parse_prompt({**TOPIC, "threshold": 0.6}, "x")).version == 3  # admins

    with pytest.raises(ConfigError) as bad:
        read_prompt_file(write(tmp_path / "bad.json", {**TOPIC, "classes": {}, "type": "x"}))
    assert bad.value.problems[0].startswith("prompt #1 in bad.json: ")


def test_validation_names_every_prompt_that_does_not_fit_its_place(
    hub: Hub, make_model: ModelMaker
) -> None:
    make_model("zero_shot_other", kind="zero_shot", labels=["entity"])
    other = {**TOPIC, "name": "topic_other", "model": "zero_shot_other"}
    wrong_label = {**PERSON_Q, "name": "wrong_label", "label": "DRUG"}
    xml = labels_xml(
        'value="PERSON" prompt="topic_p"',  # a classification prompt on a label
        'value="ORG" prompt="llm_orgs"',  # PRODUCT is not offered
        'value="GPE" prompt="wrong_label"',
        'value="DATE" prompt="nowhere"',
        extra='<Choices name="c" toName="text" prompt="topic_other">'
        '<Choice value="sports"/><Choice value="politics"/></Choices>',
    )
    with pytest.raises(ConfigError) as refused:
        validate_config(project(xml, prompts=[TOPIC, EXTERNAL, wrong_label, other]), hub)
    problems = "\n".join(refused.value.problems)
    assert (
        "names the prompt 'topic_p', a classification prompt, where entity prompts belong"
        in problems
    )
    assert "the external prompt 'llm_orgs', which answers ORG, PRODUCT" in problems
    assert "names the prompt 'wrong_label', which proposes 'DRUG', not 'GPE'" in problems
    assert "names the unknown prompt 'nowhere'" in problems
    assert "one zero-shot model; these prompts name 2: zero_shot_minilm" in problems
    assert len(refused.value.problems) == 5


@pytest.fixture(scope="module")
def example(tmp_path_factory: pytest.TempPathFactory) -> Pipeline:
    """The news example (entity, classification and relation prompts beside a model and
    a rule), loaded once."""
    home = tmp_path_factory.mktemp("prompts-home")
    hub = Hub(home)
    config = validate_config(
        load_project_config(EXAMPLE), hub, RuleLibrary(home), PromptLibrary(home)
    )
    return Pipeline(config, hub)


def annotate(pipeline: Pipeline, *texts: str) -> list[list[dict]]:
    predictions = pipeline.annotate([{"id": i, "data": {"text": t}} for i, t in enumerate(texts)])
    assert all(p.error is None for p in predictions), predictions
    return [p.result for p in predictions]


NADELLA = "Satya Nadella, the chief executive of Microsoft, announced a new data centre in Ireland."


def test_zero_shot_entities_are_whole_chunks_with_the_prompts_provenance(
    example: Pipeline,
) -> None:
    import spacy

    text = NADELLA
    [items] = annotate(example, text)
    spans = [i for i in items if i["type"] == "labels"]
    found = {(i["value"]["text"], i["value"]["labels"][0]): i["provenance"] for i in spans}
    assert found[("Microsoft", "ORG")] == {"type": "prompt", "name": "org_q", "version": "1"}
    assert found[("Ireland", "LOCATION")]["name"] == "location_q"
    assert found[("Satya Nadella", "PERSON")]["type"] == "model"  # the model's beside them
    tokens = spacy.blank("en")(text)
    starts, ends = {t.idx for t in tokens}, {t.idx + len(t) for t in tokens}
    ordered = sorted((i["value"]["start"], i["value"]["end"]) for i in spans)
    assert all(s in starts and e in ends for s, e in ordered)  # never a token piece
    assert all(a[1] <= b[0] for a, b in zip(ordered, ordered[1:], strict=False))


def test_a_classification_prompt_picks_the_class_of_a_clear_text(example: Pipeline) -> None:
    texts = (
        "The goalkeeper saved a penalty and the team won the cup final.",
        "The senate voted on the new tax law before the election.",
        "Quarterly profits rose and the company's shares hit a record on the stock market.",
    )
    results = annotate(example, *texts)
    picked = [[i for i in r if i["type"] == "choices"] for r in results]
    assert [p[0]["value"]["choices"] for p in picked] == [["sports"], ["politics"], ["business"]]
    assert picked[0][0]["provenance"] == {"type": "prompt", "name": "news_topic", "version": "1"}

    both = Sentences("The team won the match. The minister resigned after the election.")
    topic = example.config.prompts["news_topic"]
    runtime = example.runtimes["zero_shot_minilm"]
    assert runtime.prompt_classes([both], topic, multiple=False)[0].keys() == {"politics"}
    assert runtime.prompt_classes([both], topic, multiple=True)[0].keys() == {"politics", "sports"}


def test_a_relation_prompt_links_the_pair_its_predicate_describes(example: Pipeline) -> None:
    linked, unlinked = annotate(example, NADELLA, "Tim Cook praised Microsoft for its service.")
    texts = {i["id"]: i["value"]["text"] for i in linked if i["type"] == "labels"}
    relations = [
        (texts[i["from_id"]], texts[i["to_id"]], i["labels"], i["provenance"]["name"])
        for i in linked
        if i["type"] == "relation"
    ]
    assert relations == [("Satya Nadella", "Microsoft", ["leads"], "leads_p")]
    assert not [i for i in unlinked if i["type"] == "relation"]


# -- the routes, on the cluster ------------------------------------------------------------


@pytest.fixture(scope="module")
def clients(ray_cluster: RayCluster) -> Iterator[dict[str, httpx.Client]]:
    """The admin and two ordinary users with no role anywhere yet."""
    url = ray_cluster.url
    admin = httpx.Client(base_url=url, timeout=120)
    admin.headers["Authorization"] = f"Bearer {ray_cluster.admin_token}"
    users = {"admin": admin}
    for who in ("alice", "bob"):
        made = admin.post("/users", json={"name": f"{who}-{uuid.uuid4().hex[:6]}"})
        assert made.status_code == 201, made.text
        token = made.json()["token"]
        users[who] = httpx.Client(
            base_url=url, timeout=120, headers={"Authorization": f"Bearer {token}"}
        )
    with servers_deleted_after(admin):
        yield users
    for client in users.values():
        client.close()


def wait_ready(client: httpx.Client, server: str, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while (status := client.get(f"/servers/{server}").json()["status"]) != "ready":
        assert status in {"deploying", "loading"} and time.monotonic() < deadline, status
        time.sleep(0.5)


def test_owners_and_managers_add_prompts_everyone_reads_them_and_servers_show_them(
    clients: dict[str, httpx.Client],
) -> None:
    alice, bob = clients["alice"], clients["bob"]
    mine = {**PERSON_Q, "name": f"person-{uuid.uuid4().hex[:6]}"}
    refused = alice.post("/prompts", json=mine)
    assert refused.status_code == 403 and "no Owner or Manager" in refused.json()["detail"]
    xml = labels_xml(f'value="PERSON" prompt="{mine["name"]}"')
    config = {"name": "prompts", "labeling_config": xml, "prompts": [mine]}
    created = alice.post("/projects", json=config | {"resources": {"num_cpus": 0.5}})
    assert created.status_code == 201, created.text  # alice is now an Owner

    added = alice.post("/prompts", json={**mine, "questions": ["Which person is named?"]})
    assert (added.status_code, added.json()["version"]) == (201, 1), added.text
    again = alice.post("/prompts", json={**mine, "questions": ["Who is named?"]})
    assert again.json()["version"] == 2
    bad = alice.post("/prompts", json={**mine, "questions": []})
    assert bad.status_code == 422 and "questions" in bad.json()["detail"]
    assert bob.post("/prompts", json=TOPIC).status_code == 403
    bobs = bob.post("/projects", json={"name": "bobs", "labeling_config": xml, "prompts": [mine]})
    assert bobs.status_code == 201, bobs.text  # bob is an Owner now, but not mine's author
    taken = bob.post("/prompts", json={**mine, "questions": ["Who is bob?"]})
    assert taken.status_code == 403 and "added by another user" in taken.json()["detail"]
    unchanged = bob.post("/prompts", json={**mine, "questions": ["Who is named?"]})
    assert (unchanged.status_code, unchanged.json()["version"]) == (201, 2)
    admin = clients["admin"].post("/prompts", json={**mine, "questions": ["Who, then?"]})
    assert admin.json()["version"] == 3
    assert (
        alice.post("/prompts", json={**mine, "questions": ["Who is named?"]}).json()["version"] == 4
    )
    assert (mine["name"], 4) in [(p["name"], p["version"]) for p in bob.get("/prompts").json()]
    assert httpx.get(f"{bob.base_url}/prompts").status_code == 401

    deployed = alice.post(f"/projects/{created.json()['id']}/deploy")
    assert deployed.status_code == 202, deployed.text
    server = deployed.json()["id"]
    wait_ready(alice, server)
    described = alice.get(f"/servers/{server}").json()
    assert described["prompts"] == [  # the project's inline prompt, not the library's
        {"name": mine["name"], "version": 1, "type": "entity", "labels": ["PERSON"]}
    ]
    assert [m["name"] for m in described["models"]] == ["zero_shot_minilm"]
    text = "Yesterday Angela Merkel spoke in Berlin."
    predicted = alice.post(f"/servers/{server}/predict", json={"tasks": [{"data": {"text": text}}]})
    assert predicted.status_code == 200, predicted.text
    [item] = predicted.json()["predictions"][0]["result"]
    assert item["value"]["text"] == "Angela Merkel"
    assert item["provenance"] == {"type": "prompt", "name": mine["name"], "version": "1"}


def test_the_python_client_adds_and_lists_prompts(ray_cluster: RayCluster) -> None:
    name = f"client-{uuid.uuid4().hex[:6]}"
    with Client(ray_cluster.url, ray_cluster.admin_token) as client:
        assert client.add_prompt({**PERSON_Q, "name": name})["version"] == 1
        assert (name, 1) in [(p["name"], p["version"]) for p in client.prompts()]
        with pytest.raises(ApiError) as bad:
            client.add_prompt({**PERSON_Q, "name": name, "questions": []})
    assert bad.value.status_code == 422 and "questions" in bad.value.detail
