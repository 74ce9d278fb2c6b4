"""Parsing the labeling config XML users write, and refusing hostile or broken XML."""

import pytest

from preannotate.configs.errors import ConfigError
from preannotate.configs.labeling import parse_labeling_config

FULL = """<View>
  <Header value="Clinical note"/>
  <Text name="text" value="$text"/>
  <Labels name="label" toName="text">
    <Label value="PERSON" model="ner_general_en_sm"/>
    <Label value="Absent" assertion="true" model="assertion_dl"/>
  </Labels>
  <Choices name="sentiment" toName="text" choice="multiple" model="clf">
    <Choice value="positive"/><Choice value="negative"/>
  </Choices>
  <Relations><Relation value="treats" model="re_model"/></Relations>
  <Image name="page" value="$image"/>
</View>"""


def test_full_config_becomes_typed_models() -> None:
    config = parse_labeling_config(FULL)
    assert [(o.name, o.kind, o.value) for o in config.objects] == [
        ("text", "text", "text"),
        ("page", "image", "image"),
    ]
    labels = config.labels[0].labels
    assert labels[1].assertion and labels[1].model == "assertion_dl"
    assert config.choices[0].multiple and config.choices[0].choices == ["positive", "negative"]
    assert config.relations[0].relations[0].value == "treats"
    assert config.models() == ["ner_general_en_sm", "assertion_dl", "clf", "re_model"]


@pytest.mark.parametrize(
    "xml, message",
    [
        (
            '<?xml version="1.0"?><!DOCTYPE v [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;">]>'
            "<View>&b;</View>",
            "DTD or entities",
        ),
        (
            '<!DOCTYPE v [<!ENTITY x SYSTEM "file:///etc/passwd">]><View><Text name="t" '
            'value="&x;"/></View>',
            "DTD or entities",
        ),
        ('<View><Text name="text" value="$text">', "not well-formed"),
        ("<Labels/>", "must start with <View>"),
        ('<View><Text name="text" value="text"/></View>', "must name a task field"),
        ('<View><Labels name="l"><Label value="A"/></Labels></View>', "'toName'"),
        ('<View><Labels name="l" toName="t"></Labels></View>', "has no <Label>"),
        (
            '<View><Choices name="c" toName="t" choice="some"><Choice value="a"/></Choices></View>',
            'use "single" or "multiple"',
        ),
    ],
)
def test_bad_xml_is_refused_with_a_message(xml: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_labeling_config(xml)


def test_billion_laughs_does_not_expand() -> None:
    entities = '<!ENTITY l0 "ha">' + "".join(
        f'<!ENTITY l{i} "{("&l" + str(i - 1) + ";") * 10}">' for i in range(1, 10)
    )
    with pytest.raises(ConfigError, match="DTD or entities"):
        parse_labeling_config(f"<!DOCTYPE v [{entities}]><View>&l9;</View>")


def test_oversized_config_is_refused() -> None:
    with pytest.raises(ConfigError, match="larger than"):
        parse_labeling_config("<View>" + " " * 300_000 + "</View>")
