"""Every validation rule a configuration must pass, with the message a user reads."""

import pytest

from preannotate.configs.errors import ConfigError
from preannotate.hub.validation import validate_config
from tests.conftest import labels_xml, project

NER = 'value="PERSON" model="ner_general_en_sm"'


def problems(xml: str, **fields) -> str:
    with pytest.raises(ConfigError) as info:
        validate_config(project(xml, **fields))
    return "\n".join(info.value.problems)


def test_builtin_model_config_is_valid() -> None:
    config = validate_config(project(labels_xml(NER, 'value="ORG" model="ner_general_en_sm"')))
    assert list(config.models) == ["ner_general_en_sm"]
    assert config.replica_resources()["license_tokens"] == 0


def test_more_than_five_models_is_rejected(make_model) -> None:
    for i in range(6):
        make_model(f"m{i}", labels=[f"L{i}"])
    xml = labels_xml(*(f'value="L{i}" model="m{i}"' for i in range(6)))
    assert "uses 6 models (m0, m1, m2, m3, m4, m5); a configuration may use at most 5" in problems(
        xml
    )


def test_five_models_are_allowed(make_model) -> None:
    for i in range(5):
        make_model(f"m{i}", labels=[f"L{i}"])
    assert (
        len(
            validate_config(
                project(labels_xml(*(f'value="L{i}" model="m{i}"' for i in range(5))))
            ).models
        )
        == 5
    )


def test_unknown_model_is_named_with_a_suggestion() -> None:
    text = problems(labels_xml('value="PERSON" model="ner_general_en"'))
    assert "unknown model 'ner_general_en'" in text and "did you mean 'ner_general_en_sm'" in text


def test_label_the_model_does_not_predict() -> None:
    text = problems(labels_xml('value="DISEASE" model="ner_general_en_sm"'))
    assert '<Label value="DISEASE"> in <Labels name="label">' in text
    assert "does not predict 'DISEASE'" in text and "PERSON" in text


def test_mixed_embeddings_need_opt_in(make_model) -> None:
    make_model("clinical_ner", labels=["PROBLEM"], embeddings="embeddings_clinical")
    xml = labels_xml(NER, 'value="PROBLEM" model="clinical_ner"')
    text = problems(xml)
    assert "different embeddings" in text and "clinical_ner (embeddings_clinical)" in text
    assert "allow_mixed_embeddings" in text
    assert validate_config(project(xml, allow_mixed_embeddings=True)).models.keys() == {
        "ner_general_en_sm",
        "clinical_ner",
    }


def test_assertion_label_must_name_an_assertion_model(make_model) -> None:
    make_model(
        "assert_a",
        kind="assertion",
        labels=["Absent", "Present"],
        embeddings="spacy_tok2vec_en_core_web_sm",
    )
    assert 'assertion="true" but names no assertion model' in problems(
        labels_xml(NER, 'value="Absent" assertion="true"')
    )
    text = problems(labels_xml(NER, 'value="PERSON" assertion="true" model="ner_general_en_sm"'))
    assert "a ner model, where assertion models are expected" in text
    ok = validate_config(
        project(labels_xml(NER, 'value="Absent" assertion="true" model="assert_a"'))
    )
    assert "assert_a" in ok.models


def test_only_one_assertion_model(make_model) -> None:
    for name in ("assert_a", "assert_b"):
        make_model(name, kind="assertion", labels=["Absent", "Hypothetical"])
    xml = labels_xml(
        'value="Absent" assertion="true" model="assert_a"',
        'value="Hypothetical" assertion="true" model="assert_b"',
    )
    assert "only one assertion model per configuration; found assert_a, assert_b" in problems(xml)


def test_choices_need_a_classifier_with_those_classes(make_model) -> None:
    make_model("sentiment", kind="classification", labels=["pos", "neg"])
    extra = (
        '<Choices name="s" toName="text" model="sentiment">'
        '<Choice value="pos"/><Choice value="meh"/></Choices>'
    )
    assert "model 'sentiment' does not predict meh" in problems(labels_xml(NER, extra=extra))
    wrong = (
        '<Choices name="s" toName="text" model="ner_general_en_sm"><Choice value="pos"/></Choices>'
    )
    assert "a ner model, where classification models are expected" in problems(
        labels_xml(NER, extra=wrong)
    )


def test_control_pointing_at_missing_object() -> None:
    xml = (
        '<View><Text name="text" value="$text"/>'
        '<Labels name="l" toName="body"><Label value="A"/></Labels></View>'
    )
    assert 'toName="body", but no object tag has that name (objects: text)' in problems(xml)


def test_rules_must_exist_and_their_label_must_be_offered(library) -> None:
    text = problems(labels_xml(NER), rules=["no_such_rule"])
    assert "unknown rule 'no_such_rule'" in text
    rule = {"name": "ids", "label": "ID", "kind": "regex", "regex": "[0-9]+"}
    assert "proposes the label 'ID', which no <Labels>" in problems(labels_xml(NER), rules=[rule])
    broken = {"name": "bad", "label": "PERSON", "kind": "regex", "regex": "(a)\\1"}
    assert "linear-time regex engine" in problems(labels_xml(NER), rules=[broken])


def test_all_problems_are_reported_together() -> None:
    text = problems(
        labels_xml('value="X" model="nope"', 'value="DISEASE" model="ner_general_en_sm"')
    )
    assert "unknown model 'nope'" in text and "does not predict 'DISEASE'" in text


def test_hash_is_stable_across_layout_and_changes_with_meaning() -> None:
    a = labels_xml(NER, 'value="ORG" model="ner_general_en_sm"')
    b = (
        '<View>\n  <!-- reordered, reformatted -->\n  <Labels toName="text" name="label">\n'
        '    <Label model="ner_general_en_sm" value="ORG"/>\n    <Label value="PERSON" '
        'model="ner_general_en_sm"/>\n  </Labels>\n  <Text value="$text" name="text"/>\n</View>'
    )
    assert validate_config(project(a)).hash == validate_config(project(b, name="other")).hash
    c = labels_xml(NER, 'value="GPE" model="ner_general_en_sm"')
    assert validate_config(project(a)).hash != validate_config(project(c)).hash
    rule = {"name": "ids", "label": "PERSON", "kind": "regex", "regex": "[0-9]+"}
    assert validate_config(project(a)).hash != validate_config(project(a, rules=[rule])).hash


def test_example_projects_are_valid() -> None:
    from preannotate.configs.project import load_project_config
    from tests.conftest import EXAMPLES

    for file in EXAMPLES.glob("*/project.json"):
        assert validate_config(load_project_config(file)).rules
