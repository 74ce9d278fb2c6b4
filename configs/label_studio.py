"""How a Label Studio project's labeling config lines up with a server's configuration.

Label Studio sends its project's labeling config with every call. Its controls and objects
may have other names (`<Labels name="ner" toName="body">` for the server's `label` on
`text`), read other task fields (`$review` for `$text`) and offer more labels or controls
than the server predicts. `match` pairs each control of the server's configuration with
one of Label Studio's (same tag, on the same kind of object: the same name first, else the
one sharing most values), so predictions can be renamed for Label Studio and its
annotations back for the project. Its problems are what Label Studio's config lacks that
the server predicts (a control, or labels or choices in one), every one at once.
"""

from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import Any

from preannotate.configs.labeling import LabelingConfig, filled

TAGS = {
    "labels": "Labels",
    "rectanglelabels": "RectangleLabels",
    "choices": "Choices",
    "text": "Text",
    "hypertext": "HyperText",
    "image": "Image",
}


@dataclass(frozen=True)
class _Control:
    """A `<Labels>`, `<RectangleLabels>` or `<Choices>` control, seen the same way."""

    name: str
    to_name: str
    kind: str
    values: tuple[str, ...]
    predicted: tuple[str, ...]
    """The values the server's pipeline can put in a prediction."""
    read: bool
    """Whether the pipeline reads the control's object (it then needs the task field)."""


def _controls(config: LabelingConfig, rule_labels: Collection[str]) -> list[_Control]:
    """The controls as the pipeline sees them: a `<Labels>` control's labels that a model,
    a prompt or a rule proposes (assertion labels qualify spans, they are not spans), a
    `<Choices>` control's choices when a model or a prompt chooses among them."""
    controls = [
        _Control(
            c.name,
            c.to_name,
            c.kind,
            tuple(lab.value for lab in c.labels),
            tuple(
                lab.value
                for lab in c.labels
                if not lab.assertion and (lab.model or lab.prompt or lab.value in rule_labels)
            ),
            True,  # the text pipeline reads every `<Labels>`' text, the visual every image
        )
        for c in config.labels
    ]
    controls += [
        _Control(
            c.name,
            c.to_name,
            "choices",
            tuple(c.choices),
            tuple(c.choices) if c.model or c.prompt else (),
            bool(c.model or c.prompt),
        )
        for c in config.choices
    ]
    return controls


def _describe(kind: str, name: str) -> str:
    return f'<{TAGS[kind]} name="{name}">'


@dataclass(frozen=True)
class SchemaMatch:
    """The server's names and task fields paired with Label Studio's."""

    controls: dict[str, str] = field(default_factory=dict)
    """Server control name -> Label Studio control name."""
    objects: dict[str, str] = field(default_factory=dict)
    """Server object name -> Label Studio object name."""
    fields: dict[str, str] = field(default_factory=dict)
    """Server task field -> Label Studio task field, for every object a control is on."""
    read: dict[str, str] = field(default_factory=dict)
    """The part of `fields` the server's pipeline reads: what a task must have."""
    documents: set[str] = field(default_factory=set)
    """The server fields of `read` that hold a scan or PDF (a reference, or a list of
    pages), not text."""
    problems: list[str] = field(default_factory=list)

    def to_label_studio(self, item: dict[str, Any]) -> dict[str, Any]:
        """A prediction item with Label Studio's control and object names."""
        return _renamed(item, self.controls, self.objects)

    def to_project(self, item: dict[str, Any]) -> dict[str, Any]:
        """An annotation item with the server's names; items of controls it lacks keep
        theirs."""
        controls = {theirs: ours for ours, theirs in self.controls.items()}
        objects = {theirs: ours for ours, theirs in self.objects.items()}
        return _renamed(item, controls, objects)

    def server_data(self, data: Mapping[str, Any]) -> dict[str, Any]:
        """The fields the server reads, under its names; ValueError names a missing one."""
        out = {}
        for ours, theirs in self.read.items():
            value = data.get(theirs)
            if ours in self.documents:
                if not (isinstance(value, list) and value) and not filled(value):
                    raise ValueError(f"the task has no image or PDF reference in data.{theirs}")
            elif not filled(value):
                raise ValueError(f"the task has no text in data.{theirs}")
            out[ours] = value
        return out

    def project_data(self, data: Mapping[str, Any]) -> dict[str, Any]:
        """A Label Studio task's data with the fields the configuration reads added under
        the configuration's names, so the project's tasks stay readable by it."""
        return dict(data) | {
            ours: data[theirs] for ours, theirs in self.fields.items() if theirs in data
        }


def _renamed(
    item: dict[str, Any], controls: dict[str, str], objects: dict[str, str]
) -> dict[str, Any]:
    out = dict(item)
    if out.get("from_name") in controls:
        out["from_name"] = controls[out["from_name"]]
    if out.get("to_name") in objects:
        out["to_name"] = objects[out["to_name"]]
    return out


def match(
    ours: LabelingConfig, theirs: LabelingConfig, rule_labels: Collection[str] = ()
) -> SchemaMatch:
    """Pair the server's configuration (`ours`, whose rules propose `rule_labels`) with
    Label Studio's labeling config (`theirs`)."""
    result = SchemaMatch()
    their_controls = _controls(theirs, ())
    taken: set[str] = set()
    for control in _controls(ours, rule_labels):
        paired = result.objects.get(control.to_name)
        candidates = [
            c
            for c in their_controls
            if c.kind == control.kind
            and c.name not in taken
            and _object_kind(theirs, c.to_name) == _object_kind(ours, control.to_name)
            and (paired is None or c.to_name == paired)
        ]
        if not candidates:
            if control.predicted:
                result.problems.append(
                    f"the labeling config has no <{TAGS[control.kind]}> on a "
                    f"<{TAGS[_object_kind(ours, control.to_name)]}> for the server's "
                    f"{_describe(control.kind, control.name)}, which predicts "
                    + ", ".join(control.predicted)
                )
            continue
        chosen = max(
            candidates,
            key=lambda c: (c.name == control.name, len(set(c.values) & set(control.values))),
        )
        taken.add(chosen.name)
        result.controls[control.name] = chosen.name
        result.objects[control.to_name] = chosen.to_name
        missing = [v for v in control.predicted if v not in chosen.values]
        if missing:
            what = "choices" if control.kind == "choices" else "labels"
            result.problems.append(
                f"{_describe(chosen.kind, chosen.name)} lacks the {what} {', '.join(missing)}, "
                f"which the server predicts for its {_describe(control.kind, control.name)}"
            )
    for control in _controls(ours, rule_labels):
        obj = ours.object_named(control.to_name)
        their_object = theirs.object_named(result.objects.get(control.to_name, ""))
        if obj is None:
            continue
        key = their_object.value if their_object is not None else obj.value
        result.fields[obj.value] = key
        if control.read:
            result.read[obj.value] = key
            if obj.kind == "image":
                result.documents.add(obj.value)
    return result


def _object_kind(config: LabelingConfig, name: str) -> str:
    obj = config.object_named(name)
    return obj.kind if obj is not None else "text"
