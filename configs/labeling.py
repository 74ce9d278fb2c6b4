"""Typed form of the labeling config XML users already write for Label Studio and
Generative AI Lab, parsed safely.

Only the tags that matter for pre-annotation are modelled; unknown layout tags (`<Header>`,
`<Style>`, nested `<View>`) are walked through so that real-world configs parse unchanged.
"""

from typing import Literal
from xml.etree.ElementTree import Element

from defusedxml import DefusedXmlException
from defusedxml.ElementTree import ParseError, fromstring
from pydantic import BaseModel, Field

from preannotate.configs.errors import ConfigError

MAX_CONFIG_BYTES = 256 * 1024
OBJECT_TAGS = {"Text": "text", "HyperText": "hypertext", "Image": "image"}


class ObjectTag(BaseModel):
    """A document field shown to annotators (`<Text name="text" value="$text"/>`)."""

    name: str
    kind: Literal["text", "hypertext", "image"]
    value: str = Field(description="the task data key, without the leading `$`")
    value_list: bool = Field(
        False, description="`<Image valueList=...>`: the key holds a list, one item per page"
    )

    def missing(self) -> str:
        """Why a task without this object's field cannot be annotated: it names the field
        and what goes in it (text, or for an `<Image>` a document reference)."""
        what = "image or PDF reference" if self.kind == "image" else "text"
        return f"the task has no {what} in data.{self.value}"


def filled(value: object) -> bool:
    """Whether a task field holds text (or a reference): a string that is not blank."""
    return isinstance(value, str) and bool(value.strip())


class Label(BaseModel):
    value: str
    model: str | None = None
    prompt: str | None = Field(None, description="a prompt that proposes this label's spans")
    assertion: bool = False


class LabelsControl(BaseModel):
    """`<Labels>` (spans on text) or `<RectangleLabels>` (boxes on images)."""

    name: str
    to_name: str
    labels: list[Label]
    kind: Literal["labels", "rectanglelabels"] = "labels"


class ChoicesControl(BaseModel):
    name: str
    to_name: str
    choices: list[str]
    model: str | None = None
    prompt: str | None = None
    multiple: bool = False


class Relation(BaseModel):
    value: str
    model: str | None = None
    prompt: str | None = None


class RelationsControl(BaseModel):
    relations: list[Relation]


class LabelingConfig(BaseModel):
    objects: list[ObjectTag] = []
    labels: list[LabelsControl] = []
    choices: list[ChoicesControl] = []
    relations: list[RelationsControl] = []

    def object_named(self, name: str) -> ObjectTag | None:
        return next((o for o in self.objects if o.name == name), None)

    def pre_annotated(self) -> list[ObjectTag]:
        """The objects pre-annotation reads, whose fields a task must hold: those a
        `<Labels>` or `<RectangleLabels>` points to, or a `<Choices>` with a model or prompt
        (as `Pipeline` reads them); every object when no control is pre-annotated."""
        choices = {c.to_name for c in self.choices if c.model or c.prompt}
        targets = {c.to_name for c in self.labels} | choices
        return [o for o in self.objects if o.name in targets] or self.objects

    def entity_labels(self) -> set[str]:
        """The labels a `<Labels>` or `<RectangleLabels>` offers for entity chunks (not
        assertion statuses): what relations may join."""
        return {lab.value for c in self.labels for lab in c.labels if not lab.assertion}

    def models(self) -> list[str]:
        """Every model named anywhere in the config, in order of first appearance."""
        names = [lab.model for c in self.labels for lab in c.labels]
        names += [c.model for c in self.choices]
        names += [r.model for c in self.relations for r in c.relations]
        return list(dict.fromkeys(n for n in names if n))

    def prompts(self) -> list[str]:
        """Every prompt named anywhere in the config, in order of first appearance."""
        names = [lab.prompt for c in self.labels for lab in c.labels]
        names += [c.prompt for c in self.choices]
        names += [r.prompt for c in self.relations for r in c.relations]
        return list(dict.fromkeys(n for n in names if n))


def _attr(el: Element, name: str, where: str) -> str:
    value = el.get(name)
    if not value:
        raise ConfigError([f"{where} is missing the required attribute '{name}'"])
    return value


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in {"true", "1", "yes"}


def _describe(el: Element) -> str:
    name = el.get("name") or el.get("value")
    return f'<{el.tag} name="{name}">' if el.get("name") else f'<{el.tag} value="{name}">'


def _parse_labels(el: Element) -> LabelsControl:
    where = _describe(el)
    labels = [
        Label(
            value=_attr(child, "value", f"a <Label> in {where}"),
            model=child.get("model") or None,
            prompt=child.get("prompt") or None,
            assertion=_truthy(child.get("assertion")),
        )
        for child in el
        if child.tag == "Label"
    ]
    if not labels:
        raise ConfigError([f"{where} has no <Label> children"])
    kind = "rectanglelabels" if el.tag == "RectangleLabels" else "labels"
    return LabelsControl(
        name=_attr(el, "name", where), to_name=_attr(el, "toName", where), labels=labels, kind=kind
    )


def _parse_choices(el: Element) -> ChoicesControl:
    where = _describe(el)
    choices = [_attr(c, "value", f"a <Choice> in {where}") for c in el if c.tag == "Choice"]
    if not choices:
        raise ConfigError([f"{where} has no <Choice> children"])
    mode = (el.get("choice") or "single").lower()
    if mode not in {"single", "multiple"}:
        raise ConfigError([f'{where} has choice="{mode}"; use "single" or "multiple"'])
    return ChoicesControl(
        name=_attr(el, "name", where),
        to_name=_attr(el, "toName", where),
        choices=choices,
        model=el.get("model") or None,
        prompt=el.get("prompt") or None,
        multiple=mode == "multiple",
    )


def _parse_relations(el: Element) -> RelationsControl:
    relations = [
        Relation(
            value=_attr(c, "value", "a <Relation>"),
            model=c.get("model") or None,
            prompt=c.get("prompt") or None,
        )
        for c in el
        if c.tag == "Relation"
    ]
    return RelationsControl(relations=relations)


def parse_labeling_config(xml: str) -> LabelingConfig:
    """Parse labeling config XML; hostile or broken XML raises `ConfigError`, never expands."""
    if len(xml.encode()) > MAX_CONFIG_BYTES:
        raise ConfigError([f"the labeling config is larger than {MAX_CONFIG_BYTES // 1024} KiB"])
    try:
        root = fromstring(xml, forbid_dtd=True)
    except DefusedXmlException as exc:
        raise ConfigError(
            [f"the labeling config was refused: it declares a DTD or entities ({exc})"]
        ) from None
    except ParseError as exc:
        raise ConfigError([f"the labeling config is not well-formed XML: {exc}"]) from None
    if root.tag != "View":
        raise ConfigError([f"the labeling config must start with <View>, not <{root.tag}>"])

    config = LabelingConfig()
    for el in root.iter():
        if el.tag in OBJECT_TAGS:
            where = _describe(el)
            value_list = el.tag == "Image" and el.get("valueList") is not None
            value = _attr(el, "valueList" if value_list else "value", where)
            if not value.startswith("$"):
                raise ConfigError(
                    [f'{where} has value="{value}"; it must name a task field: "$text"']
                )
            config.objects.append(
                ObjectTag(
                    name=_attr(el, "name", where),
                    kind=OBJECT_TAGS[el.tag],
                    value=value[1:],
                    value_list=value_list,
                )
            )
        elif el.tag in {"Labels", "RectangleLabels"}:
            config.labels.append(_parse_labels(el))
        elif el.tag == "Choices":
            config.choices.append(_parse_choices(el))
        elif el.tag == "Relations":
            config.relations.append(_parse_relations(el))
    return config
