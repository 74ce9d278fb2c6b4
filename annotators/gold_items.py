"""The items of completions that a training run reads, checked before it reads them.

A completion keeps what any tool wrote: Label Studio's regions of this project's
controls and of others (a Label Studio project may have more controls: audio spans in
seconds, HyperText ranges as XPath, text areas, ratings), and results written before the
labeling config changed. A run reads only what its kind learns from, of the project's
own controls: the `labels` spans of its `<Labels>` (NER, assertion, relation, which also
reads the relations between them), the choices of its `<Choices>` (classification), the
boxes of its `<RectangleLabels>` (visual NER). This module keeps those items and leaves
every other item out, as the readers always did with a region that holds no label or a
span beyond the text (Label Studio's offsets can overshoot). It refuses the run before
any work (422) when a kept item cannot be read at all, naming the task and the item,
instead of the run failing inside.
"""

from collections.abc import Iterable
from typing import Any

from preannotate.configs.errors import ConfigError
from preannotate.configs.labeling import LabelingConfig

GoldRow = tuple[int, dict, list]
"""`(task id, task data, the result of its latest completion)`."""
MAX_PROBLEMS = 20
MAX_COORDINATE = 1e6
"""Box coordinates are percentages of the page; anything far beyond is no box."""


def readable_gold(
    kind: str, labeling: LabelingConfig, annotated: Iterable[GoldRow]
) -> list[GoldRow]:
    """Each row with only the items a `kind` run reads; ConfigError when one of those
    cannot be read."""
    if kind == "classification":
        controls = {c.name for c in labeling.choices}
    else:
        wanted = "rectanglelabels" if kind == "visual_ner" else "labels"
        controls = {c.name for c in labeling.labels if c.kind == wanted}
    fields = {o.name: o.value for o in labeling.objects}
    spans = [c for c in labeling.labels if c.kind == "labels"]
    relations = kind == "relation"
    rows, problems = [], []
    for task_id, data, result in annotated:
        text = data.get(fields.get(spans[0].to_name, "")) if spans else None
        kept = []
        for number, item in enumerate(result if isinstance(result, list) else [], start=1):
            if not isinstance(item, dict):
                continue
            name = item.get("from_name")
            if item.get("type") == "relation":
                if not relations:
                    continue
                problem = _relation_problem(item)
            elif not isinstance(name, str) or name not in controls:
                continue
            else:
                problem = _problem(kind, item, text)
                if problem == SKIP:
                    continue
            if problem:
                problems.append(
                    f"the completion of task {task_id}: result item {number}: {problem}"
                )
            else:
                kept.append(item)
        rows.append((task_id, data, kept))
    if problems:
        raise ConfigError(problems[:MAX_PROBLEMS])
    return rows


SKIP = "skip"
"""What `_problem` says of an item its reader passes over."""


def _problem(kind: str, item: dict, text: Any) -> str | None:
    value = item.get("value")
    if kind == "classification":
        if value is None:
            return SKIP
        if not isinstance(value, dict) or not _strings(value.get("choices", [])):
            return "a 'choices' item needs a value with 'choices', a list of strings"
        return None
    wanted = "rectanglelabels" if kind == "visual_ner" else "labels"
    if item.get("type") != wanted or not value:
        return SKIP
    if not isinstance(value, dict):
        return f"a '{wanted}' region's value must be an object"
    if not _strings(value.get(wanted)):
        return f"a '{wanted}' region's '{wanted}' must be a list of strings"
    if not value[wanted]:
        return SKIP  # a region without a label: nothing to learn
    return _box_problem(item) if kind == "visual_ner" else _span_problem(kind, item, text)


def _span_problem(kind: str, item: dict, text: Any) -> str | None:
    start, end = item["value"].get("start"), item["value"].get("end")
    if not (type(start) is int and type(end) is int and 0 <= start <= end):
        return "a 'labels' region needs whole numbers 0 <= 'start' <= 'end'"
    if isinstance(text, str) and end > len(text):
        return SKIP
    if kind == "relation" and not isinstance(item.get("id", ""), str):
        return "a region's 'id' must be a string"
    return None


def _box_problem(item: dict) -> str | None:
    value = item["value"]
    if not all(_coordinate(value.get(key)) for key in ("x", "y", "width", "height")):
        return "a 'rectanglelabels' region needs numbers 'x', 'y', 'width', 'height'"
    chunk = item.get("chunk") or {}
    if not isinstance(chunk, dict) or not isinstance(chunk.get("id"), str | int | None):
        return "a region's 'chunk' must be an object with a string 'id'"
    return None


def _relation_problem(item: dict) -> str | None:
    if not (isinstance(item.get("from_id"), str) and isinstance(item.get("to_id"), str)):
        return "a relation needs 'from_id' and 'to_id', the ids of two regions"
    if not _strings(item.get("labels", [])):
        return "a relation's 'labels' must be a list of strings"
    return None


def _coordinate(value: Any) -> bool:
    """A number a float holds, not far off the page (NaN compares false; a huge int is
    compared exactly, never turned into a float)."""
    return type(value) in (int, float) and -MAX_COORDINATE <= value <= MAX_COORDINATE


def _strings(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(v, str) for v in value)


def not_offered(task_id: int, what: str, label: str) -> str:
    """Why a completion stops a training run: it uses a label (or relation) the project's
    configuration does not offer, e.g. one Label Studio's config has besides."""
    return (
        f"the completion of task {task_id} uses the {what} '{label}', which the project's "
        "configuration does not offer; add it to that configuration's labeling config to "
        "train on it, or take it out of that completion"
    )
