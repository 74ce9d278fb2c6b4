"""Training a spaCy model from a project's completions, never its predictions; no Ray here.

Everything a run needs is checked before any work (enough completions, labels the
configuration offers, a base model that fits); then part of the data is held out, the
model is trained, and precision / recall / F1 per label are measured on the held-out part,
next to the same measure for a baseline: the base model or nothing (NER, classification),
the built-in ConText model (assertion) or rule model (relation). Assertion and relation
models are text classifiers over chunks marked in their context (`annotators/marked.py`).
"""

import random
from collections.abc import Callable, Generator, Iterable
from dataclasses import dataclass, field
from typing import Any

from preannotate.annotators.gold_items import not_offered, readable_gold
from preannotate.annotators.marked import NONE, predict_assertions, predict_relations
from preannotate.annotators.marked_training import (
    assertion_gold,
    marked_examples,
    marked_scores,
    relation_gold,
)
from preannotate.annotators.runtimes import load_runtime
from preannotate.annotators.visual_training import visual_gold
from preannotate.configs.errors import ConfigError
from preannotate.configs.labeling import LabelingConfig
from preannotate.configs.training import MARKED_KINDS, TrainingSpec
from preannotate.hub.catalog import Hub, HubModel

MIN_COMPLETIONS = 10
REFERENCE_MODELS = {"assertion": "assertion_context_en", "relation": "relation_rules_en"}
"""The built-in model a trained assertion or relation model is measured against."""
TEXTCAT_MODEL = {
    "@architectures": "spacy.TextCatBOW.v3",
    "exclusive_classes": True,
    "ngram_size": 2,
    "no_output_layer": False,
}
GOLD_NAMES = {
    "ner": "spans",
    "classification": "choices",
    "assertion": "assertion labels",
    "relation": "relations",
    "visual_ner": "boxes on pages",
}


@dataclass
class TrainingData:
    """Texts with gold annotations: spans `(start, end, label)` for NER, chosen classes for
    classification, `AnnotatedChunks` for assertion and relation."""

    kind: str
    labels: list[str]
    texts: list[str] = field(default_factory=list)
    gold: list[Any] = field(default_factory=list)
    multiple: bool = False

    def split(self, holdout: float, seed: int) -> tuple[list[int], list[int]]:
        order = list(range(len(self.texts)))
        random.Random(seed).shuffle(order)
        cut = max(1, int(len(order) * holdout))
        return order[cut:], order[:cut]

    def model_labels(self, base: HubModel | None) -> list[str]:
        """What the trained model predicts: the labels its gold spans teach, plus what the
        base model already knew; the statuses or relations the gold teaches; for
        classification (or no spans at all), the labels offered."""
        if self.kind in MARKED_KINDS:
            return sorted(
                {s for g in self.gold for s in g.statuses if s}
                | {label for g in self.gold for *_, label in g.relations}
            )
        learned = (
            {label for spans in self.gold for *_, label in spans} if self.kind == "ner" else set()
        )
        if base:
            return sorted(learned | set(base.manifest.labels))
        return sorted(learned) or self.labels


def _ner_data(
    labeling: LabelingConfig, annotated: Iterable[tuple[int, dict, list]]
) -> TrainingData:
    controls = {c.name: c for c in labeling.labels if c.kind == "labels"}
    if not controls:
        raise ConfigError(["NER training needs a <Labels> control in the labeling config"])
    offered = {lab.value for c in controls.values() for lab in c.labels if not lab.assertion}
    statuses = {lab.value for c in controls.values() for lab in c.labels if lab.assertion}
    fields = {o.name: o.value for o in labeling.objects}
    data = TrainingData("ner", sorted(offered))
    problems = []
    for task_id, task, result in annotated:
        spans = []
        for item in result:
            control = controls.get(item.get("from_name", ""))
            if item.get("type") != "labels" or control is None:
                continue
            value = item.get("value", {})
            for label in value.get("labels", []):
                if label in statuses:  # an assertion status qualifies an entity, it is none
                    continue
                if label not in offered:
                    problems.append(not_offered(task_id, "label", label))
                spans.append((value["start"], value["end"], label))
        text = task.get(fields[next(iter(controls.values())).to_name])
        if isinstance(text, str):
            data.texts.append(text)
            data.gold.append(spans)
    if problems:
        raise ConfigError(problems[:20])
    return data


def _classification_data(
    labeling: LabelingConfig, annotated: Iterable[tuple[int, dict, list]]
) -> TrainingData:
    if len(labeling.choices) != 1:
        raise ConfigError(
            [
                "classification training needs exactly one <Choices> control; "
                f"the configuration has {len(labeling.choices)}"
            ]
        )
    control = labeling.choices[0]
    target = next(o for o in labeling.objects if o.name == control.to_name)
    if target.kind == "image":
        raise ConfigError(
            [
                f'classification training reads text; <Choices name="{control.name}"> '
                "classifies an <Image>, whose documents it does not read yet"
            ]
        )
    key = target.value
    data = TrainingData("classification", control.choices, multiple=control.multiple)
    problems = []
    for task_id, task, result in annotated:
        chosen = [
            c
            for item in result
            if item.get("from_name") == control.name
            for c in item.get("value", {}).get("choices", [])
        ]
        problems += [not_offered(task_id, "choice", c) for c in chosen if c not in control.choices]
        if chosen and isinstance(task.get(key), str):
            data.texts.append(task[key])
            data.gold.append(chosen)
    if problems:
        raise ConfigError(problems[:20])
    return data


def training_data(
    spec: TrainingSpec, labeling: LabelingConfig, annotated: Iterable[tuple[int, dict, list]]
) -> TrainingData:
    """Gold data from `(task id, task data, completion result)`; refuses, before any work,
    regions it cannot read (`gold_items.py`), labels the configuration does not offer and
    too few completions."""
    annotated = readable_gold(spec.kind, labeling, annotated)
    if spec.kind in MARKED_KINDS:
        gold = assertion_gold if spec.kind == "assertion" else relation_gold
        offered, texts, chunks = gold(labeling, annotated)
        data = TrainingData(spec.kind, offered, texts, chunks)
    elif spec.kind == "visual_ner":  # learnt as NER over page text
        data = TrainingData("ner", *visual_gold(labeling, annotated))
    else:
        build = _ner_data if spec.kind == "ner" else _classification_data
        data = build(labeling, annotated)
    if len(data.texts) < MIN_COMPLETIONS:
        raise ConfigError(
            [
                f"training needs at least {MIN_COMPLETIONS} completions with "
                f"{GOLD_NAMES[spec.kind]}; the project has {len(data.texts)}"
            ]
        )
    return data


def check_base(spec: TrainingSpec, hub: Hub) -> HubModel | None:
    """The base model to start from, refused before any work unless training can resume it
    (only a spaCy NER pipeline can); for assertion and relation, the built-in model the
    run is measured against."""
    if spec.base_model is None:
        return hub.get(REFERENCE_MODELS[spec.kind]) if spec.kind in MARKED_KINDS else None
    base = hub.get(spec.base_model)
    if spec.kind != "ner" or base.manifest.kind != "ner" or base.manifest.runtime != "spacy":
        raise ConfigError(
            [
                f"base model '{base.name}' is a {base.manifest.runtime} "
                f"{base.manifest.kind} model; only spaCy NER models can be a base"
            ]
        )
    return base


@dataclass(frozen=True)
class Epoch:
    """One finished epoch: its number (from 1) and the training loss summed over it."""

    epoch: int
    loss: float


@dataclass
class TrainedModel:
    """A run's result: the spaCy pipeline, its held-out metrics and the split sizes that
    the version's provenance records."""

    nlp: Any
    metrics: dict[str, Any]
    train_size: int
    eval_size: int


def _examples(nlp: Any, data: TrainingData, rows: list[int]) -> list[Any]:
    from spacy.training import Example
    from spacy.util import filter_spans

    examples = []
    for row in rows:
        doc = nlp.make_doc(data.texts[row])
        if data.kind == "ner":
            spans = [
                doc.char_span(s, e, label, alignment_mode="expand")
                for s, e, label in data.gold[row]
            ]
            annotations = {
                "entities": [
                    (s.start_char, s.end_char, s.label_)
                    for s in filter_spans([s for s in spans if s is not None])
                ]
            }
        else:
            annotations = {"cats": {c: float(c in data.gold[row]) for c in data.labels}}
        examples.append(Example.from_dict(doc, annotations))
    return examples


def _scores(nlp: Any, examples: list[Any], kind: str) -> dict[str, Any]:
    scores = nlp.evaluate(examples)
    if kind == "ner":
        per_type = scores.get("ents_per_type") or {}
        return {
            "precision": scores["ents_p"] or 0.0,
            "recall": scores["ents_r"] or 0.0,
            "f1": scores["ents_f"] or 0.0,
            "per_label": per_type,
        }
    per_type = scores.get("cats_f_per_type") or {}
    return {"f1": scores.get("cats_macro_f") or 0.0, "per_label": per_type}


def _blank_or_base(spec: TrainingSpec, data: TrainingData, base: HubModel | None) -> Any:
    import spacy

    if base is not None:
        nlp = spacy.load(base.manifest.package or base.weights_path())
        nlp.select_pipes(enable=["ner"])
        return nlp
    nlp = spacy.blank("en")
    pipe = "ner" if data.kind == "ner" else ("textcat_multilabel" if data.multiple else "textcat")
    nlp.add_pipe(pipe)
    return nlp


@dataclass
class _Run:
    """A run ready to train: the pipeline, its training examples and optimizer, and what
    measures it on the held-out part once trained."""

    nlp: Any
    examples: list[Any]
    optimizer: Any
    measure: Callable[[], dict[str, Any]]


def _span_or_class_run(
    spec: TrainingSpec, data: TrainingData, base: HubModel | None, rows: tuple[list, list]
) -> _Run:
    train_rows, eval_rows = rows
    nlp = _blank_or_base(spec, data, base)
    eval_examples = _examples(nlp, data, eval_rows)
    pipe = nlp.get_pipe(nlp.pipe_names[-1])
    if base is not None:
        baseline = _scores(nlp, eval_examples, data.kind)["f1"]
        for label in data.labels:
            pipe.add_label(label)
        optimizer = nlp.resume_training()
        train_examples = _examples(nlp, data, train_rows)
    else:
        baseline = 0.0
        for label in data.labels:
            pipe.add_label(label)
        train_examples = _examples(nlp, data, train_rows)
        optimizer = nlp.initialize(lambda: train_examples)
    return _Run(
        nlp,
        train_examples,
        optimizer,
        lambda: _scores(nlp, eval_examples, data.kind) | {"baseline_f1": baseline},
    )


def _marked_run(
    spec: TrainingSpec, data: TrainingData, reference: HubModel | None, rows: tuple[list, list]
) -> _Run:
    """A text classifier over marked chunks (or pairs), with a NONE class; measured next
    to the reference model on the held-out tasks' gold chunks."""
    import spacy
    from spacy.training import Example

    if reference is None:
        raise ValueError(f"{data.kind} training is measured against a reference model")
    train_rows, eval_rows = rows
    pairs = marked_examples(data.kind, data.texts, data.gold, train_rows, spec.seed)
    classes = sorted({c for _, c in pairs} | {NONE})
    nlp = spacy.blank("en")
    textcat = nlp.add_pipe("textcat", config={"model": TEXTCAT_MODEL})
    for label in classes:
        textcat.add_label(label)
    examples = [
        Example.from_dict(nlp.make_doc(text), {"cats": {c: float(c == gold) for c in classes}})
        for text, gold in pairs
    ]
    optimizer = nlp.initialize(lambda: examples)
    compared = load_runtime(reference)
    if data.kind == "assertion":
        trained, theirs = predict_assertions, compared.assertions
    else:
        trained, theirs = predict_relations, compared.relations
    return _Run(
        nlp,
        examples,
        optimizer,
        lambda: marked_scores(
            data.kind,
            lambda docs, chunks: trained(nlp, docs, chunks),
            (reference.name, theirs),
            data.labels,
            data.texts,
            data.gold,
            eval_rows,
        ),
    )


def train(
    spec: TrainingSpec, data: TrainingData, base: HubModel | None
) -> Generator[Epoch, None, TrainedModel]:
    """Train on the non-held-out part and measure on the rest. Each epoch is yielded as it
    ends and the model is returned, so a caller streams progress (`yield from`) instead of
    being called back. `base` is the model to start from, or for assertion and relation
    the one to compare with."""
    from spacy.util import fix_random_seed, minibatch

    fix_random_seed(spec.seed)  # weights and dropout too, so a seed repeats a run
    train_rows, eval_rows = data.split(spec.holdout, spec.seed)
    prepare = _marked_run if data.kind in MARKED_KINDS else _span_or_class_run
    run = prepare(spec, data, base, (train_rows, eval_rows))
    nlp, train_examples, optimizer = run.nlp, run.examples, run.optimizer
    pipe_name = nlp.pipe_names[-1]
    shuffler = random.Random(spec.seed)
    for epoch in range(1, spec.epochs + 1):
        shuffler.shuffle(train_examples)
        losses: dict[str, float] = {}
        for batch in minibatch(train_examples, size=16):
            nlp.update(batch, drop=0.2, sgd=optimizer, losses=losses)
        yield Epoch(epoch, float(losses.get(pipe_name, 0.0)))
    return TrainedModel(nlp, run.measure(), len(train_rows), len(eval_rows))
