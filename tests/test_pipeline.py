"""The annotators pipeline on real spaCy models: whole entities, policies, per-task errors."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import spacy
from spacy.training import Example
from spacy.util import fix_random_seed

from preannotate.annotators.pipeline import MAX_DOCUMENT_CHARS, Pipeline
from preannotate.hub.catalog import Hub
from preannotate.hub.validation import validate_config
from tests.conftest import EXAMPLES, labels_xml, project

NER = [f'value="{label}" model="ner_general_en_sm"' for label in ("PERSON", "ORG", "GPE")]


@pytest.fixture(scope="module")
def ner_pipeline() -> Pipeline:
    return Pipeline(
        validate_config(
            project(
                labels_xml(*NER, 'value="CITY_CODE"'),
                rules=[
                    {
                        "name": "codes",
                        "label": "CITY_CODE",
                        "kind": "regex",
                        "regex": "NYC|New York",
                    },
                ],
            )
        )
    )


def test_multi_token_entity_is_one_span_with_exact_offsets(ner_pipeline: Pipeline) -> None:
    text = "Barack Obama visited New York City with officials from the World Health Organization."
    [prediction] = ner_pipeline.annotate([{"id": 7, "data": {"text": text}}])
    spans = {(i["value"]["text"], i["value"]["labels"][0]) for i in prediction.result}
    assert ("Barack Obama", "PERSON") in spans and ("New York City", "GPE") in spans
    for item in prediction.result:
        value = item["value"]
        assert text[value["start"] : value["end"]] == value["text"]
    assert prediction.task_id == 7


def test_result_items_follow_label_studio_json_with_provenance(ner_pipeline: Pipeline) -> None:
    [prediction] = ner_pipeline.annotate([{"data": {"text": "Angela Merkel spoke."}}])
    item = prediction.as_json()["result"][0]
    assert item["from_name"] == "label" and item["to_name"] == "text" and item["type"] == "labels"
    assert item["value"]["labels"] == ["PERSON"] and len(item["id"]) == 10
    assert item["provenance"] == {"type": "model", "name": "ner_general_en_sm", "version": "3.8.0"}
    assert prediction.as_json()["model_version"] == ner_pipeline.config.hash


def test_a_bulk_answer_carries_the_same_result_as_json_text(ner_pipeline: Pipeline) -> None:
    """What a bulk batch answers with: the result encoded once, as standard JSON (a NaN
    confidence becomes null), the score and an error unchanged."""
    tasks = [
        {"id": 1, "data": {"text": "Angela Merkel met Tim Cook in Paris."}},
        {"id": 2, "data": {"text": "x" * (MAX_DOCUMENT_CHARS + 1)}},
    ]
    found, too_long = ner_pipeline.annotate(tasks)
    encoded = found.as_encoded_json()
    assert json.loads(encoded["result"]) == found.result
    assert encoded | {"result": found.result} == found.as_json()
    assert too_long.as_encoded_json() == too_long.as_json()  # no result, only the error

    found.result[0]["value"]["confidence"] = float("nan")
    assert json.loads(found.as_encoded_json()["result"])[0]["value"]["confidence"] is None
    found.result[0]["value"]["labels"] = {"PERSON"}  # a set is not JSON: this task fails
    assert found.as_encoded_json() == {
        "task_id": 1,
        "error": "the result is not JSON: Type is not JSON serializable: set",
    }


def test_labels_not_in_the_config_are_not_emitted(ner_pipeline: Pipeline) -> None:
    [prediction] = ner_pipeline.annotate([{"data": {"text": "On Monday 5 people paid $3."}}])
    assert {i["value"]["labels"][0] for i in prediction.result} <= {
        "PERSON",
        "ORG",
        "GPE",
        "CITY_CODE",
    }
    assert not any(i["value"]["labels"] == ["DATE"] for i in prediction.result)


def test_overlaps_prefer_longest_then_model(ner_pipeline: Pipeline) -> None:
    [prediction] = ner_pipeline.annotate([{"data": {"text": "She moved to New York City in May."}}])
    texts = [(i["value"]["text"], i["provenance"]["type"]) for i in prediction.result]
    assert ("New York City", "model") in texts and ("New York", "rule") not in texts


def test_rule_wins_ties_when_configured() -> None:
    rule = {
        "name": "people",
        "label": "PERSON",
        "kind": "dictionary",
        "dictionary": {"Angela Merkel": []},
    }
    config = validate_config(project(labels_xml(*NER), rules=[rule], prefer="rule"))
    [prediction] = Pipeline(config).annotate([{"data": {"text": "Angela Merkel spoke."}}])
    assert [i["provenance"]["type"] for i in prediction.result] == ["rule"]


def test_bad_tasks_fail_alone(ner_pipeline: Pipeline) -> None:
    tasks = [
        {"id": 1, "data": {"text": "Tim Cook runs Apple."}},
        {"id": 2, "data": {"body": "no text field"}},
        {"id": 3, "data": {"text": "x" * (MAX_DOCUMENT_CHARS + 1)}},
        "not an object",
        {"id": 5, "data": {"text": "Paris is in France."}},
        {"id": 6, "data": {"text": " \n "}},
    ]
    results = ner_pipeline.annotate(tasks)
    assert [r.error is None for r in results] == [True, False, False, False, True, False]
    assert "no text in data.text" in results[1].error and results[5].error == results[1].error
    assert "the limit is 1,000,000" in results[2].error
    assert results[4].result


TOPICS = [
    ("the team won the match", "sports"),
    ("the striker scored a goal", "sports"),
    ("shares fell on the stock market", "finance"),
    ("the bank raised interest rates", "finance"),
]


def add_classifier(hub: Hub, folder: Path, examples: list[tuple[str, str]]) -> None:
    """Train a small spaCy text classifier on `(text, class)` examples and add it to the
    hub as `folder.name`, a classification model of those classes. The seed is fixed: the
    weights' start would otherwise depend on the tests that ran before in the process."""
    fix_random_seed(0)
    classes = sorted({c for _, c in examples})
    nlp = spacy.blank("en")
    textcat = nlp.add_pipe("textcat")
    for label in classes:
        textcat.add_label(label)
    data = [
        Example.from_dict(nlp.make_doc(t), {"cats": {c: c == cls for c in classes}})
        for t, cls in examples
    ]
    optimizer = nlp.initialize(lambda: data)
    for _ in range(30):
        nlp.update(data, sgd=optimizer)
    folder.mkdir(parents=True)
    nlp.to_disk(folder / "model")
    manifest = {
        "name": folder.name,
        "version": "1",
        "kind": "classification",
        "labels": classes,
        "embeddings": "blank_en",
        "runtime": "spacy",
        "path": "model",
    }
    (folder / "manifest.json").write_text(json.dumps(manifest))
    hub.add(folder)


def test_choices_come_from_a_classifier(hub: Hub, tmp_path: Path) -> None:
    add_classifier(hub, tmp_path / "topic_clf", TOPICS)
    xml = (
        '<View><Text name="text" value="$text"/><Choices name="topic" toName="text" '
        'model="topic_clf"><Choice value="sports"/><Choice value="finance"/></Choices></View>'
    )
    pipeline = Pipeline(validate_config(project(xml)))
    results = pipeline.annotate(
        [
            {"data": {"text": "the striker won the match"}},
            {"data": {"text": "the bank shares fell"}},
        ]
    )
    picked = [r.result[0]["value"]["choices"] for r in results]
    assert picked == [["sports"], ["finance"]]
    assert results[0].result[0]["type"] == "choices" and 0.5 < results[0].score <= 1


def test_models_the_pipeline_cannot_run_are_refused(make_model) -> None:
    """An assertion model on the rule relation runtime validates, but that runtime only
    serves relation models."""
    from preannotate.hub.catalog import HubError

    make_model(
        "assert_a", kind="assertion", labels=["Absent"], runtime="relation_rules", embeddings="none"
    )
    config = validate_config(
        project(labels_xml(*NER, 'value="Absent" assertion="true" model="assert_a"'))
    )
    with pytest.raises(
        HubError,
        match=r"cannot run 'assert_a' \(assertion\) models on the relation_rules runtime yet",
    ):
        Pipeline(config)


def test_pipeline_order_chunks_then_assertion_then_relations() -> None:
    """Assertion and relations see the chunks that survived overlap resolution, and one
    prediction holds entities, then statuses, then relations."""
    xml = labels_xml(
        'value="DRUG"',
        'value="DOSAGE"',
        'value="Absent" assertion="true" model="assertion_context_en"',
        'value="Present" assertion="true" model="assertion_context_en"',
        extra='<Relations><Relation value="dosage_of" model="relation_rules_en"/></Relations>',
    )
    rules = [
        {
            "name": "d",
            "label": "DRUG",
            "kind": "dictionary",
            "dictionary": {"insulin": [], "insulin glargine": []},
        },
        {"name": "n", "label": "DOSAGE", "kind": "regex", "regex": "\\d+ units"},
    ]
    pipeline = Pipeline(validate_config(project(xml, rules=rules)))
    [prediction] = pipeline.annotate([{"data": {"text": "No insulin glargine 10 units tonight."}}])
    result = prediction.as_json()["result"]
    assert [i["type"] for i in result] == ["labels"] * 4 + ["relation"]
    drug, dose, drug_status, dose_status, relation = result
    assert (drug["value"]["text"], dose["value"]["text"]) == ("insulin glargine", "10 units")
    assert drug_status["value"]["labels"] == ["Absent"]
    assert drug_status["provenance"]["assertion_of"] == drug["id"]
    assert dose_status["provenance"]["assertion_of"] == dose["id"]
    assert (relation["from_id"], relation["to_id"]) == (drug["id"], dose["id"])


LOAD_A_SERVER = """
import json, sys
from preannotate.annotators.pipeline import Pipeline
from preannotate.configs.project import load_project_config
from preannotate.deployments import model_server
from preannotate.hub.validation import validate_config
pipeline = Pipeline(validate_config(load_project_config(sys.argv[1])))
[prediction] = pipeline.annotate([{"id": 1, "data": {"text": "Angela Merkel met Tim Cook."}}])
print(json.dumps([len(prediction.result), sorted({"torch", "openai"} & set(sys.modules))]))
"""


def test_a_server_process_loads_spacy_without_torch_or_the_llm_client() -> None:
    """Each replica starts a process; torch (which thinc imports when it can) and the
    `openai` client would add about 3 s to every start, for servers that use neither."""
    news = str(EXAMPLES / "news" / "project.json")
    run = subprocess.run(
        [sys.executable, "-c", LOAD_A_SERVER, news], capture_output=True, text=True, check=True
    )
    found, loaded = json.loads(run.stdout)
    assert found >= 2 and loaded == []
