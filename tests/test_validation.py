"""Every validation rule a configuration must pass, with the message a user reads."""

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from preannotate.client.cli import app
from preannotate.configs.errors import ConfigError
from preannotate.hub.validation import validate_config
from tests.conftest import labels_xml, project

runner = CliRunner()

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


XML = labels_xml(NER).replace('value="PERSON"', 'value="PERSON" hint="Müller"')


@pytest.mark.parametrize(
    "files, at_fault, problem",
    [
        (
            {
                "p.json": json.dumps(
                    {"name": "Müller", "labeling_config": XML}, ensure_ascii=False
                ).encode("latin-1")
            },
            "p.json",
            "is not valid UTF-8 text: byte 0xfc at offset 11",
        ),
        ({"p.xml": XML.encode("utf-8") + b"<!-- \xff -->"}, "p.xml", "byte 0xff"),
        (
            {"p.json": b'{"name": "p", "labeling_config": "c.xml"}', "c.xml": XML.encode("cp1252")},
            "c.xml",
            "is not valid UTF-8 text: byte 0xfc",
        ),
        (
            {"p.xml": b'<?xml version="1.0" encoding="klingon"?>' + XML.encode()},
            "p.xml",
            "declares an unknown encoding 'klingon'",
        ),
    ],
    ids=["latin-1-json", "xml-with-0xff", "latin-1-xml-next-to-a-project", "unknown-encoding"],
)
def test_config_validate_names_a_file_that_is_not_text(
    tmp_path: Path, files: dict[str, bytes], at_fault: str, problem: str
) -> None:
    for name, content in files.items():
        (tmp_path / name).write_bytes(content)
    result = runner.invoke(app, ["config", "validate", str(tmp_path / next(iter(files)))])
    assert result.exit_code == 2
    [line] = result.stderr.strip().splitlines()
    assert line.startswith("error:") and str(tmp_path / at_fault) in line and problem in line


@pytest.mark.parametrize(
    "content",
    [
        b'<?xml version="1.0" encoding="ISO-8859-1"?>' + XML.encode("latin-1"),
        XML.encode("utf-16"),
        b"\xef\xbb\xbf" + XML.encode("utf-8"),
    ],
    ids=["declared-latin-1", "utf-16-with-mark", "utf-8-with-mark"],
)
def test_config_validate_reads_xml_in_the_encoding_it_declares(
    tmp_path: Path, content: bytes
) -> None:
    file = tmp_path / "p.xml"
    file.write_bytes(content)
    result = runner.invoke(app, ["config", "validate", str(file)])
    assert result.exit_code == 0, result.stderr
