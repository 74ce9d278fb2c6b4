"""Label Studio / Generative AI Lab result JSON, with the provenance of every item.

Item ids are derived from the item's content, so the same region gets the same id in every
prediction version; that keeps comparisons between versions and relations stable.
"""

import hashlib
from dataclasses import dataclass, field, replace
from typing import Any

import orjson

from preannotate.annotators.spans import Source, Span


def item_id(*parts: object) -> str:
    return hashlib.sha1("\x1f".join(map(str, parts)).encode()).hexdigest()[:10]


def span_item(from_name: str, to_name: str, text: str, span: Span) -> dict[str, Any]:
    value: dict[str, Any] = {
        "start": span.start,
        "end": span.end,
        "text": text[span.start : span.end],
        "labels": [span.label],
        "confidence": span.confidence,
    }
    if span.normalized is not None:
        value["normalized"] = span.normalized
    return {
        "id": item_id(from_name, span.start, span.end, span.label),
        "from_name": from_name,
        "to_name": to_name,
        "type": "labels",
        "origin": "prediction",
        "value": value,
        "score": span.confidence,
        "provenance": span.source.as_json(),
    }


def assertion_item(
    entity: dict[str, Any], status: str, confidence: float | None, source: Source
) -> dict[str, Any]:
    """The status of an entity: a second `labels` item on the same span (as Generative AI
    Lab shows assertion labels), whose provenance names the entity item it qualifies."""
    value = entity["value"]
    return {
        "id": item_id(entity["from_name"], value["start"], value["end"], status),
        "from_name": entity["from_name"],
        "to_name": entity["to_name"],
        "type": "labels",
        "origin": "prediction",
        "value": {
            "start": value["start"],
            "end": value["end"],
            "text": value["text"],
            "labels": [status],
            "confidence": confidence,
        },
        "score": confidence,
        "provenance": source.as_json() | {"assertion_of": entity["id"]},
    }


def relation_item(from_id: str, to_id: str, label: str, source: Source) -> dict[str, Any]:
    """A Label Studio relation between two span items of the same prediction."""
    return {
        "id": item_id("relation", from_id, to_id, label),
        "type": "relation",
        "from_id": from_id,
        "to_id": to_id,
        "direction": "right",
        "labels": [label],
        "origin": "prediction",
        "provenance": source.as_json(),
    }


def choices_item(
    from_name: str, to_name: str, choices: list[str], confidence: float, source: Source
) -> dict[str, Any]:
    return {
        "id": item_id(from_name, *choices),
        "from_name": from_name,
        "to_name": to_name,
        "type": "choices",
        "origin": "prediction",
        "value": {"choices": choices, "confidence": confidence},
        "score": confidence,
        "provenance": source.as_json(),
    }


@dataclass
class TaskPrediction:
    """One task's prediction, or the error that kept it from being predicted."""

    task_id: Any
    model_version: str
    result: list[dict[str, Any]] = field(default_factory=list)
    error: str | None = None
    usage: dict[str, int] | None = None
    """External LLM requests and tokens spent on the task, when its prompts called one."""

    @property
    def score(self) -> float | None:
        """Mean confidence of the items that carry one; None when no item does."""
        scores = [item["score"] for item in self.result if item.get("score") is not None]
        return sum(scores) / len(scores) if scores else None

    def as_json(self) -> dict[str, Any]:
        cost = {"usage": self.usage} if self.usage else {}
        if self.error is not None:
            return {"task_id": self.task_id, "error": self.error} | cost
        return {
            "task_id": self.task_id,
            "result": self.result,
            "score": self.score,
            "model_version": self.model_version,
        } | cost

    def as_encoded_json(self) -> dict[str, Any]:
        """`as_json` with the result as JSON text: what a bulk batch answers with. Both
        takers of a batch keep the result as text (a job's store, a Spark column), so it
        is encoded once, where it is made, and the replica, Ray and the scheduler pass one
        string per task instead of every item's nested dicts (about a hundred objects for
        a news sentence). orjson writes standard JSON (NaN and Infinity as null) at a
        tenth of `json.dumps`'s cost. A result it cannot encode (a value that is not
        JSON) fails this task alone, with the reason."""
        if self.error is not None:
            return self.as_json()
        try:
            return self.as_json() | {"result": orjson.dumps(self.result).decode()}
        except orjson.JSONEncodeError as exc:
            return replace(self, error=f"the result is not JSON: {exc}").as_json()
