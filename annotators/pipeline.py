"""The pipeline built from a validated configuration: load models once, annotate batches.

Each model runs once per batch over the documents of each object it is used on; a model
failing on the batch is retried document by document, so one bad document fails alone.
"""

from collections.abc import Mapping, Sequence
from typing import Any

from preannotate.annotators.results import TaskPrediction, choices_item, span_item
from preannotate.annotators.rules import RuleMatcher
from preannotate.annotators.runtimes import ModelRuntime, load_runtime
from preannotate.annotators.sentences import Sentences
from preannotate.annotators.spans import Span, resolve_overlaps
from preannotate.configs.labeling import ChoicesControl, LabelsControl
from preannotate.hub.catalog import Hub, HubError
from preannotate.hub.validation import ValidatedConfig

MAX_DOCUMENT_CHARS = 1_000_000
CHOICE_THRESHOLD = 0.5
RUNNABLE_KINDS = {"ner", "classification"}


def check_runnable(config: ValidatedConfig) -> None:
    """Refuse, before anything loads, models whose kind the pipeline cannot run yet, rather
    than serving a configuration that silently predicts nothing for them."""
    unsupported = [
        f"'{n}' ({m.kind})" for n, m in config.models.items() if m.kind not in RUNNABLE_KINDS
    ]
    if unsupported:
        raise HubError(
            f"pre-annotation cannot run {', '.join(unsupported)} models yet; "
            f"it runs {' and '.join(sorted(RUNNABLE_KINDS))} models and rules"
        )


def task_data(task: Any) -> dict[str, Any]:
    """`{"id", "data": {...}}` or a flat `{"text": ...}`."""
    if not isinstance(task, Mapping):
        raise ValueError("a task must be a JSON object")
    data = task.get("data", task)
    if not isinstance(data, Mapping):
        raise ValueError("a task's 'data' must be a JSON object")
    return dict(data)


class Pipeline:
    def __init__(self, config: ValidatedConfig, hub: Hub | None = None):
        check_runnable(config)
        self.config = config
        hub = hub or Hub()
        self.runtimes: dict[str, ModelRuntime] = {
            name: load_runtime(hub.get(name)) for name in config.models
        }
        self.matchers = [RuleMatcher(rule) for rule in config.rules]
        labeling = config.labeling
        self.controls = [c for c in labeling.labels if c.kind == "labels"]
        self.choices = [c for c in labeling.choices if c.model]
        used = {c.to_name for c in self.controls} | {c.to_name for c in self.choices}
        self.fields = {o.name: o.value for o in labeling.objects if o.name in used}

    def _texts(self, tasks: Sequence[Any]) -> tuple[list[dict[str, str]], list[str | None]]:
        """Per task, object name -> text; or the reason the task cannot be annotated."""
        texts: list[dict[str, str]] = []
        errors: list[str | None] = []
        for task in tasks:
            try:
                data = task_data(task)
                values = {}
                for obj, key in self.fields.items():
                    value = data.get(key)
                    if not isinstance(value, str):
                        raise ValueError(f"the task has no text in data.{key}")
                    if len(value) > MAX_DOCUMENT_CHARS:
                        raise ValueError(
                            f"data.{key} has {len(value):,} characters; "
                            f"the limit is {MAX_DOCUMENT_CHARS:,}"
                        )
                    values[obj] = value
                texts.append(values)
                errors.append(None)
            except ValueError as exc:
                texts.append({})
                errors.append(str(exc))
        return texts, errors

    def _run(
        self, method: str, model: str, docs: list[str], errors: list[str | None], rows: list[int]
    ) -> dict[int, Any]:
        """Run a model over the documents; on failure, retry each alone to isolate it."""
        call = getattr(self.runtimes[model], method)
        try:
            return dict(zip(rows, call(docs), strict=True))
        except Exception:
            out = {}
            for row, doc in zip(rows, docs, strict=True):
                try:
                    out[row] = call([doc])[0]
                except Exception as exc:
                    errors[row] = f"model '{model}' failed: {type(exc).__name__}: {exc}"
            return out

    def _model_outputs(
        self,
        texts: list[dict[str, str]],
        errors: list[str | None],
    ) -> dict[tuple[str, str, str], dict[int, Any]]:
        """(method, model, object) -> row -> output, each model run once per object."""
        jobs: set[tuple[str, str, str]] = set()
        for control in self.controls:
            for label in control.labels:
                if label.model and not label.assertion:
                    jobs.add(("entities", label.model, control.to_name))
        for choice in self.choices:
            assert choice.model is not None
            jobs.add(("classify", choice.model, choice.to_name))
        outputs = {}
        for method, model, obj in sorted(jobs):
            rows = [i for i, err in enumerate(errors) if err is None]
            docs = [texts[i][obj] for i in rows]
            outputs[(method, model, obj)] = self._run(method, model, docs, errors, rows)
        return outputs

    def _span_items(
        self,
        control: LabelsControl,
        text: str,
        row: int,
        outputs: dict[tuple[str, str, str], dict[int, Any]],
    ) -> list[dict[str, Any]]:
        wanted = {(lab.model, lab.value) for lab in control.labels if not lab.assertion}
        candidates: list[Span] = []
        for model in {m for m, _ in wanted if m}:
            spans = outputs[("entities", model, control.to_name)].get(row, [])
            candidates += [s for s in spans if (model, s.label) in wanted]
        labels = {value for _, value in wanted}
        sentences = Sentences(text)
        for matcher in self.matchers:
            if matcher.rule.label in labels:
                candidates += matcher.find(text, sentences)
        kept = resolve_overlaps(candidates, self.config.project.prefer)
        return [span_item(control.name, control.to_name, text, s) for s in kept]

    def _choice_item(
        self, control: ChoicesControl, row: int, outputs: dict[tuple[str, str, str], dict[int, Any]]
    ) -> dict[str, Any] | None:
        assert control.model is not None
        scores = outputs[("classify", control.model, control.to_name)].get(row, {})
        ranked = sorted(((scores.get(c, 0.0), c) for c in control.choices), reverse=True)
        if control.multiple:
            picked = [(s, c) for s, c in ranked if s >= CHOICE_THRESHOLD]
        else:
            picked = ranked[:1]
        if not picked:
            return None
        confidence = min(s for s, _ in picked)
        source = self.runtimes[control.model].source
        return choices_item(
            control.name, control.to_name, [c for _, c in picked], confidence, source
        )

    def annotate(self, tasks: Sequence[Any]) -> list[TaskPrediction]:
        """One prediction per task, in order; a task that cannot be annotated carries its error."""
        texts, errors = self._texts(tasks)
        outputs = self._model_outputs(texts, errors)
        version = self.config.hash
        predictions = []
        for row, task in enumerate(tasks):
            task_id = task.get("id") if isinstance(task, Mapping) else None
            if errors[row] is not None:
                predictions.append(TaskPrediction(task_id, version, error=errors[row]))
                continue
            result = []
            for control in self.controls:
                result += self._span_items(control, texts[row][control.to_name], row, outputs)
            for choice in self.choices:
                item = self._choice_item(choice, row, outputs)
                if item is not None:
                    result.append(item)
            predictions.append(TaskPrediction(task_id, version, result))
        return predictions
