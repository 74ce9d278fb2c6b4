"""What a completion's result must hold where the project reads it.

A result is Label Studio's list of region items. Items are kept as any tool wrote them,
but where training, the pages and the comparison read them they must have the shape they
read: every item an object, its `value` (when it has one) an object; a `labels` region a
span of whole numbers `0 <= start <= end` and at least one label; a `rectanglelabels`
region numbers `x`, `y`, `width`, `height` and at least one label; a `choices` item a list
of choices. Checked where a result arrives (a completion, an annotation from Label Studio,
an imported task's completions), so a stored completion cannot fail a training run later.
"""

from typing import Any

_LABEL_LISTS = {"labels": "labels", "rectanglelabels": "rectanglelabels"}
_BOX = ("x", "y", "width", "height")


def result_problem(result: Any) -> str | None:
    """Why `result` cannot be a completion's result, naming the item; None when it can."""
    if not isinstance(result, list):
        return "a result must be a list of region objects"
    for number, item in enumerate(result, start=1):
        if (problem := _item_problem(item)) is not None:
            return f"result item {number}: {problem}"
    return None


def _item_problem(item: Any) -> str | None:
    if not isinstance(item, dict):
        return "must be an object"
    if "value" not in item:
        return None  # a relation, say: `from_id`, `to_id`
    value, kind = item["value"], item.get("type")
    if not isinstance(value, dict):
        return "its 'value' must be an object"
    if kind == "labels":
        start, end = value.get("start"), value.get("end")
        if not (_whole(start) and _whole(end) and 0 <= start <= end):
            return "a 'labels' region needs whole numbers 0 <= 'start' <= 'end' in its value"
    if kind == "rectanglelabels" and not all(_number(value.get(key)) for key in _BOX):
        return "a 'rectanglelabels' region needs numbers 'x', 'y', 'width', 'height'"
    if kind in _LABEL_LISTS and not _strings(value.get(_LABEL_LISTS[kind]), at_least=1):
        return f"a '{kind}' region needs '{_LABEL_LISTS[kind]}', a list of at least one string"
    if kind == "choices" and not _strings(value.get("choices")):
        return "a 'choices' item needs 'choices', a list of strings"
    return None


def _whole(value: Any) -> bool:
    return type(value) is int


def _number(value: Any) -> bool:
    return type(value) in (int, float)


def _strings(value: Any, at_least: int = 0) -> bool:
    return (
        isinstance(value, list)
        and len(value) >= at_least
        and all(isinstance(v, str) for v in value)
    )
