"""Gold data and held-out measures for trained assertion and relation models.

Gold comes from completions: entity chunks are the `labels` items of a `<Labels>` control
that are not assertion statuses; a status item qualifies the entity on the same span of the
same control; relation items join entity items by id. Only completions that carry a status
(or a relation) teach the model: a chunk of such a completion with no status (or a pair
with no relation) is an example of NONE.

A model is measured on the held-out tasks' gold chunks, next to a reference model (the
built-in ConText or rule model) run on the very same chunks: precision, recall and F1 per
status or relation, and over all of them.
"""

import random
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from preannotate.annotators.evaluation import per_label
from preannotate.annotators.gold_items import not_offered
from preannotate.annotators.marked import NONE, assertion_input, candidate_pairs, relation_input
from preannotate.annotators.relations import Relation
from preannotate.annotators.sentences import Sentences
from preannotate.annotators.spans import Source, Span
from preannotate.configs.errors import ConfigError
from preannotate.configs.labeling import LabelingConfig

NEGATIVES_PER_POSITIVE = 3
"""Unrelated pairs sampled per related pair when training a relation model: enough to
learn which pairs are not related without drowning the relations."""
GOLD = Source("model", "gold", "1")

Predict = Callable[[Sequence[Sentences], Sequence[Sequence[Span]]], list[list[Any]]]


@dataclass
class AnnotatedChunks:
    """The gold of one task: its entity chunks, the status of each (assertion) and the
    relations between them (relation)."""

    chunks: list[Span]
    statuses: list[str | None] = field(default_factory=list)
    relations: list[Relation] = field(default_factory=list)


def _entities(
    labeling: LabelingConfig, result: list[dict], statuses: set[str]
) -> tuple[list[dict], list[dict]]:
    """(entity items, status items) of a completion's `<Labels>` controls."""
    controls = {c.name for c in labeling.labels if c.kind == "labels"}
    spans = [
        i
        for i in result
        if i.get("type") == "labels" and i.get("from_name") in controls and i.get("value")
    ]
    status_items = [i for i in spans if set(i["value"].get("labels", [])) & statuses]
    return [i for i in spans if i not in status_items], status_items


def _chunk(item: dict) -> Span:
    value = item["value"]
    return Span(value["start"], value["end"], value["labels"][0], GOLD)


def assertion_gold(
    labeling: LabelingConfig, annotated: Iterable[tuple[int, dict, list]]
) -> tuple[list[str], list[str], list[AnnotatedChunks]]:
    """(statuses offered, texts, gold) of the completions that give a chunk a status."""
    controls = [c for c in labeling.labels if c.kind == "labels"]
    offered = sorted({lab.value for c in controls for lab in c.labels if lab.assertion})
    if not offered:
        raise ConfigError(
            ['assertion training needs assertion labels (<Label assertion="true">) in a <Labels>']
        )
    fields = {o.name: o.value for o in labeling.objects}
    texts, gold = [], []
    for _, task, result in annotated:
        entities, status_items = _entities(labeling, result, set(offered))
        text = task.get(fields[controls[0].to_name])
        if not status_items or not isinstance(text, str):
            continue
        by_span = {
            (i["from_name"], i["value"]["start"], i["value"]["end"]): i["value"]["labels"][0]
            for i in status_items
        }
        texts.append(text)
        gold.append(
            AnnotatedChunks(
                [_chunk(e) for e in entities],
                [
                    by_span.get((e["from_name"], e["value"]["start"], e["value"]["end"]))
                    for e in entities
                ],
            )
        )
    return offered, texts, gold


def relation_gold(
    labeling: LabelingConfig, annotated: Iterable[tuple[int, dict, list]]
) -> tuple[list[str], list[str], list[AnnotatedChunks]]:
    """(relations offered, texts, gold) of the completions that relate chunks; refuses a
    relation the configuration does not offer."""
    offered = sorted({r.value for c in labeling.relations for r in c.relations})
    controls = [c for c in labeling.labels if c.kind == "labels"]
    if not offered or not controls:
        raise ConfigError(["relation training needs a <Relations> control and a <Labels> control"])
    statuses = {lab.value for c in controls for lab in c.labels if lab.assertion}
    fields = {o.name: o.value for o in labeling.objects}
    texts, gold, problems = [], [], []
    for task_id, task, result in annotated:
        entities, _ = _entities(labeling, result, statuses)
        index = {e["id"]: n for n, e in enumerate(entities) if "id" in e}
        relations: list[Relation] = []
        for item in result:
            if item.get("type") != "relation":
                continue
            ends = (index.get(item.get("from_id")), index.get(item.get("to_id")))
            for label in item.get("labels", []):
                if label not in offered:
                    problems.append(not_offered(task_id, "relation", label))
                elif None not in ends:
                    a, b = ends
                    relations += _directed(a, b, item.get("direction", "right"), label)
        text = task.get(fields[controls[0].to_name])
        if relations and isinstance(text, str):
            texts.append(text)
            gold.append(AnnotatedChunks([_chunk(e) for e in entities], relations=relations))
    if problems:
        raise ConfigError(problems[:20])
    return offered, texts, gold


def _directed(a: int, b: int, direction: str, label: str) -> list[Relation]:
    """Label Studio's directions: `right` from -> to, `left` to -> from, `bi` both."""
    if direction == "left":
        return [(b, a, label)]
    if direction == "bi":
        return [(a, b, label), (b, a, label)]
    return [(a, b, label)]


def marked_examples(
    kind: str, texts: list[str], gold: list[AnnotatedChunks], rows: list[int], seed: int
) -> list[tuple[str, str]]:
    """`(classifier input, class)` for the rows: every chunk (assertion); every related
    pair and a sample of the unrelated candidate pairs (relation)."""
    examples: list[tuple[str, str]] = []
    negatives: list[tuple[str, str]] = []
    for row in rows:
        doc, truth = Sentences(texts[row]), gold[row]
        chunks = truth.chunks
        if kind == "assertion":
            examples += [
                (assertion_input(doc, c), status or NONE)
                for c, status in zip(chunks, truth.statuses, strict=True)
            ]
            continue
        related = {(a, b): label for a, b, label in truth.relations}
        examples += [
            (relation_input(doc, chunks[a], chunks[b]), r) for (a, b), r in related.items()
        ]
        negatives += [
            (relation_input(doc, chunks[a], chunks[b]), NONE)
            for a, b in candidate_pairs(doc, chunks)
            if (a, b) not in related
        ]
    keep = min(len(negatives), NEGATIVES_PER_POSITIVE * len(examples))
    return examples + random.Random(seed).sample(negatives, keep)


def _predicted(
    kind: str, predict: Predict, docs: list[Sentences], truths: list[AnnotatedChunks]
) -> set[tuple[Any, str]]:
    """`(item, label)` a model gives the held-out gold chunks."""
    found = predict(docs, [t.chunks for t in truths])
    if kind == "assertion":
        return {
            ((n, c), status)
            for n, statuses in enumerate(found)
            for c, status in enumerate(statuses)
            if status is not None
        }
    return {((n, a, b), label) for n, relations in enumerate(found) for a, b, label in relations}


def _measure(gold: set, predicted: set) -> dict[str, Any]:
    """Per label, and over all labels (micro-averaged)."""
    hits = len(gold & predicted)
    precision = hits / len(predicted) if predicted else 0.0
    recall = hits / len(gold) if gold else 0.0
    f1 = 2 * precision * recall / (precision + recall) if hits else 0.0
    return {
        "precision": round(precision, 3),
        "recall": round(recall, 3),
        "f1": round(f1, 3),
        "per_label": per_label(gold, predicted),
    }


def marked_scores(
    kind: str,
    trained: Predict,
    reference: tuple[str, Predict],
    offered: list[str],
    texts: list[str],
    gold: list[AnnotatedChunks],
    rows: list[int],
) -> dict[str, Any]:
    """Held-out measures of the trained model, and of the reference model (`(name,
    predict)`) on the same chunks as `baseline_*`; the reference's labels the configuration
    does not offer count as none, as in a prediction."""
    docs = [Sentences(texts[row]) for row in rows]
    truths = [gold[row] for row in rows]
    if kind == "assertion":
        expected = {
            ((n, c), status)
            for n, t in enumerate(truths)
            for c, status in enumerate(t.statuses)
            if status is not None
        }
    else:
        expected = {((n, a, b), label) for n, t in enumerate(truths) for a, b, label in t.relations}
    name, predict = reference
    baseline = {
        (item, label) for item, label in _predicted(kind, predict, docs, truths) if label in offered
    }
    ours = _measure(expected, _predicted(kind, trained, docs, truths))
    theirs = _measure(expected, baseline)
    return ours | {f"baseline_{k}": v for k, v in theirs.items()} | {"baseline_model": name}
