"""The items of completions that a training run reads, checked before it reads them.

A completion keeps what any tool wrote: Label Studio's regions of this project's
controls and of others (a Label Studio project may have more controls: audio spans in
seconds, HyperText ranges as XPath, text areas, ratings), and results written before the
labeling config changed. Training reads only the regions of the project's own controls:
`labels` spans of its `<Labels>`, boxes of its `<RectangleLabels>`, the choices of its
`<Choices>`, and the relations between regions. This module keeps those items, leaves
every other item out, and refuses the run before any work (422) when a kept item cannot
be read, naming the task and the item, instead of the run failing inside.
"""

from collections.abc import Iterable
from typing import Any

from preannotate.configs.errors import ConfigError
from preannotate.configs.labeling import LabelingConfig

Annotated = tuple[int, dict, list]
"""`(task id, task data, the result of its latest completion)`."""
MAX_PROBLEMS = 20


def readable_gold(labeling: LabelingConfig, annotated: Iterable[Annotated]) -> list[Annotated]:
    """Each row with only the items training reads; ConfigError when one of those cannot
    be read."""
    spans = {c.name: c.to_name for c in labeling.labels if c.kind == "labels"}
    boxes = {c.name for c in labeling.labels if c.kind == "rectanglelabels"}
    choices = {c.name for c in labeling.choices}
    fields = {o.name: o.value for o in labeling.objects}
    rows, problems = [], []
    for task_id, data, result in annotated:
        kept = []
        for number, item in enumerate(result if isinstance(result, list) else [], start=1):
            if not isinstance(item, dict):
                continue
            name, kind, value = item.get("from_name"), item.get("type"), item.get("value")
            if kind == "relation":
                if not labeling.relations:
                    continue
                problem = _relation_problem(item)
            elif not isinstance(name, str):
                continue
            elif kind == "labels" and name in spans:
                if not value:  # a region without a label: nothing to learn
                    continue
                problem = _span_problem(item, data.get(fields.get(spans[name], "")))
            elif kind == "rectanglelabels" and name in boxes:
                problem = _box_problem(value)
            elif name in choices:
                problem = _choices_problem(value)
            else:
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


def _span_problem(item: dict, text: Any) -> str | None:
    value = item["value"]
    if not isinstance(value, dict):
        return "a 'labels' region's value must be an object"
    start, end = value.get("start"), value.get("end")
    if not (_whole(start) and _whole(end) and 0 <= start <= end):
        return "a 'labels' region needs whole numbers 0 <= 'start' <= 'end'"
    if isinstance(text, str) and end > len(text):
        return f"a 'labels' region ends at {end}, beyond the task's {len(text)} characters"
    if not _strings(value.get("labels"), at_least=1):
        return "a 'labels' region needs 'labels', a list of at least one string"
    if not isinstance(item.get("id", ""), str):
        return "a region's 'id' must be a string"
    return None


def _box_problem(value: Any) -> str | None:
    if not isinstance(value, dict):
        return "a 'rectanglelabels' region's value must be an object"
    if not all(type(value.get(key)) in (int, float) for key in ("x", "y", "width", "height")):
        return "a 'rectanglelabels' region needs numbers 'x', 'y', 'width', 'height'"
    if not _strings(value.get("rectanglelabels"), at_least=1):
        return "a 'rectanglelabels' region needs 'rectanglelabels', a list of at least one string"
    return None


def _choices_problem(value: Any) -> str | None:
    if not isinstance(value, dict) or not _strings(value.get("choices", [])):
        return "a 'choices' item needs a value with 'choices', a list of strings"
    return None


def _relation_problem(item: dict) -> str | None:
    if not (isinstance(item.get("from_id"), str) and isinstance(item.get("to_id"), str)):
        return "a relation needs 'from_id' and 'to_id', the ids of two regions"
    if not _strings(item.get("labels", [])):
        return "a relation's 'labels' must be a list of strings"
    return None


def _whole(value: Any) -> bool:
    return type(value) is int


def _strings(value: Any, at_least: int = 0) -> bool:
    return (
        isinstance(value, list)
        and len(value) >= at_least
        and all(isinstance(v, str) for v in value)
    )
