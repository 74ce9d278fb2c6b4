"""Relations: the built-in rule relation model, relation items that refer to span ids,
validation, the bound on pairs, and a bulk job whose predictions carry entities, statuses
and relations with consistent ids."""

import json
import time
import uuid
from pathlib import Path

import httpx
import pytest

from preannotate.annotators.evaluation import per_label
from preannotate.annotators.pipeline import Pipeline
from preannotate.annotators.relations import RuleRelations
from preannotate.annotators.sentences import Sentences
from preannotate.annotators.spans import Source, Span
from preannotate.configs.errors import ConfigError
from preannotate.configs.project import load_project_config
from preannotate.configs.relations import RelationRule
from preannotate.hub.catalog import Hub
from preannotate.hub.validation import validate_config
from tests.conftest import labels_xml, project
from tests.test_jobs import run_job, wait_job

POSOLOGY = Path(__file__).parent.parent / "configs" / "examples" / "posology"
RULES = "relation_rules_en"


@pytest.fixture(scope="module")
def posology() -> Pipeline:
    return Pipeline(validate_config(load_project_config(POSOLOGY / "project.json")))


def check_ids(result: list[dict]) -> tuple[dict[str, dict], list[dict], list[dict]]:
    """(entity items by id, status items, relation items), after checking that every
    status and relation refers to an entity item of the same result."""
    relations = [i for i in result if i["type"] == "relation"]
    statuses = [i for i in result if "assertion_of" in i.get("provenance", {})]
    entities = {i["id"]: i for i in result if i not in relations and i not in statuses}
    assert len(entities) + len(statuses) + len(relations) == len(result)
    assert all(s["provenance"]["assertion_of"] in entities for s in statuses)
    assert all(r["from_id"] in entities and r["to_id"] in entities for r in relations)
    return entities, statuses, relations


def named(entities: dict[str, dict], relations: list[dict]) -> set[tuple[str, str, str]]:
    return {
        (
            entities[r["from_id"]]["value"]["text"],
            r["labels"][0],
            entities[r["to_id"]]["value"]["text"],
        )
        for r in relations
    }


def test_relation_items_join_the_span_items_of_the_prediction(posology: Pipeline) -> None:
    text = "Mother has type 2 diabetes. Start metformin 500 mg PO twice daily for diabetes."
    [prediction] = posology.annotate([{"id": 9, "data": {"text": text}}])
    entities, statuses, relations = check_ids(prediction.as_json()["result"])
    assert named(entities, relations) == {
        ("metformin", "dosage_of", "500 mg"),
        ("metformin", "route_of", "PO"),
        ("metformin", "frequency_of", "twice daily"),
        ("metformin", "indication_of", "diabetes"),  # a project rule; not the family history
    }
    for relation in relations:
        assert relation["direction"] == "right" and relation["provenance"] == {
            "type": "model",
            "name": RULES,
            "version": "1",
        }
    family = {
        (entities[s["provenance"]["assertion_of"]]["value"]["start"], s["value"]["labels"][0])
        for s in statuses
    }
    assert (11, "Family") in family


def test_each_attribute_joins_the_drug_it_follows(posology: Pipeline) -> None:
    text = "Continue Lipitor 20 mg at bedtime; lisinopril 10 mg once daily. Give 5 mg."
    [prediction] = posology.annotate([{"data": {"text": text}}])
    entities, _, relations = check_ids(prediction.as_json()["result"])
    assert named(entities, relations) == {
        ("Lipitor", "dosage_of", "20 mg"),
        ("Lipitor", "frequency_of", "at bedtime"),
        ("lisinopril", "dosage_of", "10 mg"),
        ("lisinopril", "frequency_of", "once daily"),
    }  # "5 mg" is in the next sentence: no relation


def test_trigger_words_must_lie_between(posology: Pipeline) -> None:
    [prediction] = posology.annotate([{"data": {"text": "Ibuprofen and headache were noted."}}])
    _, _, relations = check_ids(prediction.as_json()["result"])
    assert relations == []


def gold_relations(row: dict) -> tuple[list[Span], set[tuple[int, int, str]]]:
    result = row["completions"][0]["result"]
    source = Source("rule", "gold", "1")
    spans = [i for i in result if i["type"] == "labels" and not i["id"].endswith("-status")]
    index = {item["id"]: n for n, item in enumerate(spans)}
    chunks = [
        Span(i["value"]["start"], i["value"]["end"], i["value"]["labels"][0], source) for i in spans
    ]
    gold = {
        (index[r["from_id"]], index[r["to_id"]], r["labels"][0])
        for r in result
        if r["type"] == "relation"
    }
    return chunks, gold


def relation_scores(rules: RuleRelations) -> dict[str, dict]:
    """Per-relation precision, recall and F1 of rule relations on the gold chunks of the
    annotated posology tasks."""
    gold, found = set(), set()
    for n, line in enumerate((POSOLOGY / "annotated.jsonl").read_text().splitlines()):
        row = json.loads(line)
        chunks, expected = gold_relations(row)
        gold |= {((n, a, b), label) for a, b, label in expected}
        predicted = rules.find(Sentences(row["data"]["text"]), chunks)
        found |= {((n, a, b), label) for a, b, label in predicted}
    return per_label(gold, found)


def builtin_rules() -> RuleRelations:
    rules = json.loads((Hub().get(RULES).folder / "rules.json").read_text())
    return RuleRelations([RelationRule.model_validate(r) for r in rules])


def test_rule_model_scores_the_annotated_posology_relations() -> None:
    scores = relation_scores(builtin_rules())
    assert sum(s["support"] for s in scores.values()) > 800
    assert all(s["precision"] >= 0.95 and s["recall"] >= 0.95 for s in scores.values()), scores


def test_five_thousand_entities_in_one_sentence_stay_linear() -> None:
    """2,500 drugs and 2,500 doses in one sentence: all pairs would be 6.25 million checks;
    the distance bound looks at a few neighbours per chunk."""
    text = "aspirin 5 mg, " * 2_500
    source = Source("rule", "t", "1")
    chunks = []
    for n in range(2_500):
        base = n * 14
        chunks += [
            Span(base, base + 7, "DRUG", source),
            Span(base + 8, base + 12, "DOSAGE", source),
        ]
    rules = RuleRelations(
        [RelationRule(from_label="DRUG", to_label="DOSAGE", relation="dosage_of", max_tokens=50)]
    )
    start = time.perf_counter()
    found = rules.find(Sentences(text), chunks)
    assert time.perf_counter() - start < 5
    assert sorted(found) == [(2 * n, 2 * n + 1, "dosage_of") for n in range(2_500)]


RELATION_XML = labels_xml(
    'value="DRUG"',
    'value="DOSAGE"',
    extra=f'<Relations><Relation value="dosage_of" model="{RULES}"/></Relations>',
)


@pytest.mark.parametrize(
    ("rules", "xml", "message"),
    [
        (
            [{"from_label": "DRUG", "to_label": "PROBLEM", "relation": "dosage_of"}],
            RELATION_XML,
            "relation rule DRUG -> PROBLEM 'dosage_of' joins 'PROBLEM', which no <Labels> or "
            "<RectangleLabels> in the labeling config offers",
        ),
        (
            [{"from_label": "DRUG", "to_label": "DOSAGE", "relation": "treats"}],
            RELATION_XML,
            "relation rule DRUG -> DOSAGE 'treats' gives 'treats', which no <Relation> in the "
            'labeling config offers; add <Relation value="treats" model="..."/>',
        ),
        (
            [],
            RELATION_XML.replace('"dosage_of"', '"treats"'),
            "<Relation value=\"treats\">: model 'relation_rules_en' does not predict 'treats'",
        ),
        (
            [],
            labels_xml(f'value="DRUG" model="{RULES}"'),
            "names 'relation_rules_en', a relation model, where ner models are expected",
        ),
        (
            [],
            '<View><Text name="text" value="$text"/><Relations>'
            f'<Relation value="dosage_of" model="{RULES}"/></Relations></View>',
            "<Relations> needs a <Labels> or <RectangleLabels> control whose chunks it joins",
        ),
    ],
)
def test_relations_nothing_offers_are_refused(rules: list, xml: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        validate_config(project(xml, relation_rules=rules))
    assert any(message in p for p in info.value.problems), info.value.problems


def test_a_project_rule_adds_a_relation_the_model_does_not_list() -> None:
    xml = labels_xml(
        'value="DRUG"',
        'value="PROBLEM"',
        extra=f'<Relations><Relation value="treats" model="{RULES}"/></Relations>',
    )
    rules = [
        {"name": "d", "label": "DRUG", "kind": "dictionary", "dictionary": {"aspirin": []}},
        {"name": "p", "label": "PROBLEM", "kind": "dictionary", "dictionary": {"pain": []}},
    ]
    relation_rules = [{"from_label": "DRUG", "to_label": "PROBLEM", "relation": "treats"}]
    config = validate_config(project(xml, rules=rules, relation_rules=relation_rules))
    [prediction] = Pipeline(config).annotate([{"data": {"text": "Aspirin helps the pain."}}])
    entities, _, relations = check_ids(prediction.as_json()["result"])
    assert named(entities, relations) == {("Aspirin", "treats", "pain")}


def test_bulk_job_predictions_carry_entities_statuses_and_relations(api: httpx.Client) -> None:
    config = load_project_config(POSOLOGY / "project.json").model_dump()
    project_id = api.post(
        "/projects", json=config | {"name": f"clinical-{uuid.uuid4().hex[:6]}"}
    ).json()["id"]
    body = (POSOLOGY / "tasks.jsonl").read_bytes()
    imported = api.post(f"/projects/{project_id}/tasks?format=jsonl", content=body)
    assert imported.status_code == 201, imported.text
    job = wait_job(api, run_job(api, project_id)["id"])
    assert (job["state"], job["failed"]) == ("succeeded", 0), job
    exported = api.get(f"/projects/{project_id}/export").json()
    by_text = {}
    for task in exported:
        [prediction] = task["predictions"]
        entities, statuses, relations = check_ids(prediction["result"])
        by_text[task["data"]["text"]] = (entities, statuses, relations)
    negated = next(v for k, v in by_text.items() if k.startswith("No aspirin"))
    assert ("aspirin", "Absent") in {
        (negated[0][s["provenance"]["assertion_of"]]["value"]["text"], s["value"]["labels"][0])
        for s in negated[1]
    }
    assert ("clopidogrel", "dosage_of", "75 mg") in named(negated[0], negated[2])
    assert ("clopidogrel", "frequency_of", "daily") in named(negated[0], negated[2])
    studio = api.get(f"/projects/{project_id}/export", params={"format": "label-studio"}).json()
    kept = [
        i for t in studio for p in t["predictions"] for i in p["result"] if i["type"] == "relation"
    ]
    assert len(kept) == sum(len(v[2]) for v in by_text.values()) > 0
