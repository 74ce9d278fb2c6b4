"""The pipeline built from a validated configuration: load models once, annotate batches.

Order: NER models, rules (and prompts) propose chunks; overlaps are resolved per
`<Labels>` control; the assertion model gives each surviving chunk a status; relation
models join surviving chunks. One prediction per task holds every item, and statuses and
relations refer to the ids of the entity items in it.

Each model runs once per batch over the documents of each object it is used on; a model
failing on the batch is retried document by document, so one bad document fails alone.
"""

from collections.abc import Mapping, Sequence
from typing import Any

from preannotate.annotators.llm import ExternalPrompts, ProviderAccess, Usage
from preannotate.annotators.results import (
    TaskPrediction,
    assertion_item,
    choices_item,
    relation_item,
    span_item,
)
from preannotate.annotators.rules import RuleMatcher
from preannotate.annotators.runtimes import ModelRuntime, builtin_runtime, load_runtime
from preannotate.annotators.sentences import Sentences
from preannotate.annotators.spans import Source, Span, resolve_overlaps
from preannotate.annotators.zero_shot import prompt_source
from preannotate.configs.labeling import ChoicesControl, LabelsControl, filled
from preannotate.configs.prompts import ExternalPrompt, zero_shot_model
from preannotate.hub.catalog import Hub, HubError
from preannotate.hub.validation import ValidatedConfig

MAX_DOCUMENT_CHARS = 1_000_000
CHOICE_THRESHOLD = 0.5


def check_runnable(config: ValidatedConfig) -> None:
    """Refuse, before anything loads, a model whose built-in runtime cannot run its kind,
    rather than serving a configuration that silently predicts nothing for it."""
    runtimes = {m.runtime: builtin_runtime(m.runtime) for m in config.models.values()}
    unsupported = [
        f"'{n}' ({m.kind}) models on the {m.runtime} runtime"
        for n, m in config.models.items()
        if (runtime := runtimes[m.runtime]) is not None and m.kind not in runtime.KINDS
    ]
    if unsupported:
        raise HubError(f"pre-annotation cannot run {', '.join(unsupported)} yet")
    for runtime in {r for r in runtimes.values() if r is not None}:
        if problem := runtime.unavailable():
            raise HubError(problem)


def task_data(task: Any) -> dict[str, Any]:
    """`{"id", "data": {...}}` or a flat `{"text": ...}`."""
    if not isinstance(task, Mapping):
        raise ValueError("a task must be a JSON object")
    data = task.get("data", task)
    if not isinstance(data, Mapping):
        raise ValueError("a task's 'data' must be a JSON object")
    return dict(data)


class Pipeline:
    def __init__(
        self,
        config: ValidatedConfig,
        hub: Hub | None = None,
        loaded: Mapping[str, ModelRuntime] | None = None,
    ):
        """`loaded`: runtimes another pipeline of the same project loaded and configured
        already, used as they are rather than loaded a second time."""
        check_runnable(config)
        self.config = config
        hub = hub or Hub()
        loaded = loaded or {}
        self.runtimes: dict[str, ModelRuntime] = {}
        for name in config.models:
            if name in loaded:
                self.runtimes[name] = loaded[name]
            else:
                self.runtimes[name] = load_runtime(hub.get(name))
                self.runtimes[name].configure(config.project)
        self.matchers = [RuleMatcher(rule) for rule in config.rules]
        labeling = config.labeling
        self.controls = [c for c in labeling.labels if c.kind == "labels"]
        self.choices = [c for c in labeling.choices if c.model or c.prompt]
        self.llm: ExternalPrompts | None = None
        """The external prompts' calls, once `connect_providers` gave their providers."""
        self.statuses = {  # control name -> (assertion model, the statuses it may give)
            c.name: (lab.model, {x.value for x in c.labels if x.assertion})
            for c in self.controls
            for lab in c.labels
            if lab.assertion and lab.model
        }
        self.relations: dict[str, set[str]] = {}  # relation model -> the relations offered
        for control in labeling.relations:
            for relation in control.relations:
                if relation.model:
                    self.relations.setdefault(relation.model, set()).add(relation.value)
        zero_shot = {n: p for n, p in config.prompts.items() if zero_shot_model(p)}
        self.entity_prompts = {  # control name -> the zero-shot entity prompts on its labels
            c.name: [
                zero_shot[name]
                for name in dict.fromkeys(lab.prompt for lab in c.labels)
                if name in zero_shot
            ]
            for c in self.controls
        }
        self.class_prompts = {  # choices name -> its zero-shot classification prompt
            c.name: zero_shot[c.prompt] for c in self.choices if c.prompt in zero_shot
        }
        self.relation_prompts = [
            zero_shot[r.prompt]
            for c in labeling.relations
            for r in c.relations
            if r.prompt in zero_shot
        ]
        used = {c.to_name for c in self.controls} | {c.to_name for c in self.choices}
        self.objects = [o for o in labeling.objects if o.name in used]

    def connect_providers(self, providers: Mapping[str, ProviderAccess]) -> None:
        """Reach the providers the external prompts call (a model server does this with
        the keys it opened); until then those prompts fail their tasks."""
        labeling = self.config.labeling
        named = [(lab.prompt, c.to_name) for c in self.controls for lab in c.labels]
        named += [(c.prompt, c.to_name) for c in labeling.choices]
        uses = [
            (self.config.prompts[name], obj)
            for name, obj in dict.fromkeys(named)
            if name and isinstance(self.config.prompts[name], ExternalPrompt)
        ]
        self.llm = ExternalPrompts(uses, providers) if uses else None

    def _external_outputs(
        self, texts: list[dict[str, str]], errors: list[str | None], usage: dict[int, Usage]
    ) -> dict[tuple[str, str, str], dict[int, Any]]:
        """("prompt", name, object) -> row -> output of the external prompts; a task whose
        answer failed gets the reason as its error, and each row's calls go to `usage`."""
        if self.config.external_prompts() and self.llm is None:
            for row, error in enumerate(errors):
                if error is None:
                    errors[row] = (
                        "external prompts run only on a deployed server, which opens their "
                        "providers' keys; deploy the project (`preannotate deploy`)"
                    )
            return {}
        return self.llm.outputs(texts, errors, usage) if self.llm else {}

    def _texts(self, tasks: Sequence[Any]) -> tuple[list[dict[str, str]], list[str | None]]:
        """Per task, object name -> text; or the reason the task cannot be annotated."""
        texts: list[dict[str, str]] = []
        errors: list[str | None] = []
        for task in tasks:
            try:
                data = task_data(task)
                values = {}
                for obj in self.objects:
                    value = data.get(obj.value)
                    if not filled(value):
                        raise ValueError(obj.missing())
                    if len(value) > MAX_DOCUMENT_CHARS:
                        raise ValueError(
                            f"data.{obj.value} has {len(value):,} characters; "
                            f"the limit is {MAX_DOCUMENT_CHARS:,}"
                        )
                    values[obj.name] = value
                texts.append(values)
                errors.append(None)
            except ValueError as exc:
                texts.append({})
                errors.append(str(exc))
        return texts, errors

    def _run(
        self,
        method: str,
        model: str,
        rows: list[int],
        errors: list[str | None],
        *columns: list,
        args: tuple[Any, ...] = (),
    ) -> dict[int, Any]:
        """Run a model over the rows' inputs (one list per argument of `method`, then the
        same `args` for every row, such as prompts); on failure, retry each row alone to
        isolate it."""
        call = getattr(self.runtimes[model], method)
        try:
            return dict(zip(rows, call(*columns, *args), strict=True))
        except Exception:
            out = {}
            for i, row in enumerate(rows):
                try:
                    out[row] = call(*([column[i]] for column in columns), *args)[0]
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
            if choice.model:
                jobs.add(("classify", choice.model, choice.to_name))
        outputs = {}
        for method, model, obj in sorted(jobs):
            rows = [i for i, err in enumerate(errors) if err is None]
            docs = [texts[i][obj] for i in rows]
            outputs[(method, model, obj)] = self._run(method, model, rows, errors, docs)
        return outputs

    def _zero_shot_outputs(
        self, docs: list[dict[str, Sentences]], errors: list[str | None]
    ) -> dict[tuple[str, str, str], dict[int, Any]]:
        """("prompt", name, object) -> row -> the spans, or the picked classes, of each
        zero-shot prompt; the entity prompts of one `<Labels>` run together, so that each
        chunk gets the label whose prompt scores it best."""
        outputs: dict[tuple[str, str, str], dict[int, Any]] = {}
        for control in self.controls:
            prompts = self.entity_prompts[control.name]
            if not prompts:
                continue
            rows = [r for r, err in enumerate(errors) if err is None]
            found = self._run(
                "prompt_entities",
                zero_shot_model(prompts[0]),
                rows,
                errors,
                [docs[r][control.to_name] for r in rows],
                args=(prompts,),
            )
            for prompt in prompts:
                outputs[("prompt", prompt.name, control.to_name)] = {
                    row: [s for s in spans if s.source.name == prompt.name]
                    for row, spans in found.items()
                }
        for control in self.choices:
            prompt = self.class_prompts.get(control.name)
            if prompt is None:
                continue
            rows = [r for r, err in enumerate(errors) if err is None]
            outputs[("prompt", prompt.name, control.to_name)] = self._run(
                "prompt_classes",
                zero_shot_model(prompt),
                rows,
                errors,
                [docs[r][control.to_name] for r in rows],
                args=(prompt, control.multiple),
            )
        return outputs

    def _chunks(
        self,
        control: LabelsControl,
        doc: Sentences,
        row: int,
        outputs: dict[tuple[str, str, str], dict[int, Any]],
    ) -> list[Span]:
        """The control's entity chunks from models and rules, overlaps resolved."""
        wanted = {(lab.model, lab.value) for lab in control.labels if not lab.assertion}
        candidates: list[Span] = []
        for model in {m for m, _ in wanted if m}:
            spans = outputs[("entities", model, control.to_name)].get(row, [])
            candidates += [s for s in spans if (model, s.label) in wanted]
        for lab in control.labels:
            if lab.prompt:
                spans = outputs.get(("prompt", lab.prompt, control.to_name), {}).get(row, [])
                candidates += [s for s in spans if s.label == lab.value]
        labels = {value for _, value in wanted}
        for matcher in self.matchers:
            if matcher.rule.label in labels:
                candidates += matcher.find(doc.text, doc)
        return resolve_overlaps(candidates, self.config.project.prefer)

    def _assertion_items(
        self,
        docs: list[dict[str, Sentences]],
        entities: dict[tuple[int, str], list[dict[str, Any]]],
        chunks: dict[tuple[int, str], list[Span]],
        errors: list[str | None],
    ) -> dict[int, list[dict[str, Any]]]:
        """A status item for each entity the assertion model gives a status the control
        offers; a status the configuration does not list gives none."""
        items: dict[int, list[dict[str, Any]]] = {}
        for control in self.controls:
            if control.name not in self.statuses:
                continue
            model, offered = self.statuses[control.name]
            rows = [r for r, err in enumerate(errors) if err is None]
            column = [chunks[(r, control.name)] for r in rows]
            statuses = self._run(
                "assertions", model, rows, errors, [docs[r][control.to_name] for r in rows], column
            )
            source = self.runtimes[model].source
            for row, found in statuses.items():
                for entity, status in zip(entities[(row, control.name)], found, strict=True):
                    if status in offered:
                        items.setdefault(row, []).append(
                            assertion_item(entity, status, None, source)
                        )
        return items

    def _relation_items(
        self,
        docs: list[dict[str, Sentences]],
        entities: dict[tuple[int, str], list[dict[str, Any]]],
        chunks: dict[tuple[int, str], list[Span]],
        errors: list[str | None],
    ) -> dict[int, list[dict[str, Any]]]:
        """Relations each relation model, and the relation prompts, give between the
        entities of one object, kept when the configuration offers them."""
        finders = [  # (method, model, args, offered relation -> its source)
            ("relations", model, (), dict.fromkeys(offered, self.runtimes[model].source))
            for model, offered in sorted(self.relations.items())
        ]
        if self.relation_prompts:
            sources = {p.relation: prompt_source(p) for p in self.relation_prompts}
            model = zero_shot_model(self.relation_prompts[0])
            finders.append(("prompt_relations", model, (self.relation_prompts,), sources))
        items: dict[int, list[dict[str, Any]]] = {}
        objects = dict.fromkeys(c.to_name for c in self.controls)
        for method, model, args, sources in finders:
            for obj in objects:
                names = [c.name for c in self.controls if c.to_name == obj]
                rows = [r for r, err in enumerate(errors) if err is None]
                spans = [[s for n in names for s in chunks[(r, n)]] for r in rows]
                found = self._run(
                    method, model, rows, errors, [docs[r][obj] for r in rows], spans, args=args
                )
                for row, relations in found.items():
                    ids = [e["id"] for n in names for e in entities[(row, n)]]
                    items.setdefault(row, []).extend(
                        relation_item(ids[a], ids[b], label, sources[label])
                        for a, b, label in relations
                        if label in sources
                    )
        return items

    def _choice_item(
        self, control: ChoicesControl, row: int, outputs: dict[tuple[str, str, str], dict[int, Any]]
    ) -> dict[str, Any] | None:
        if control.prompt:
            picked_by_prompt = outputs.get(("prompt", control.prompt, control.to_name), {})
            chosen = picked_by_prompt.get(row, {})
            if not chosen:
                return None
            prompt = self.config.prompts[control.prompt]
            source = Source("prompt", prompt.name, str(prompt.version))
            return choices_item(
                control.name, control.to_name, list(chosen), min(chosen.values()), source
            )
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
        usage: dict[int, Usage] = {}
        outputs |= self._external_outputs(texts, errors, usage)
        docs = [{obj: Sentences(text) for obj, text in row.items()} for row in texts]
        outputs |= self._zero_shot_outputs(docs, errors)
        chunks: dict[tuple[int, str], list[Span]] = {}
        entities: dict[tuple[int, str], list[dict[str, Any]]] = {}
        for row in (r for r, err in enumerate(errors) if err is None):
            for control in self.controls:
                doc = docs[row][control.to_name]
                kept = self._chunks(control, doc, row, outputs)
                chunks[(row, control.name)] = kept
                entities[(row, control.name)] = [
                    span_item(control.name, control.to_name, doc.text, s) for s in kept
                ]
        statuses = self._assertion_items(docs, entities, chunks, errors)
        relations = self._relation_items(docs, entities, chunks, errors)
        version = self.config.hash
        predictions = []
        for row, task in enumerate(tasks):
            task_id = task.get("id") if isinstance(task, Mapping) else None
            cost = usage[row].as_json() if row in usage else None
            if errors[row] is not None:
                predictions.append(TaskPrediction(task_id, version, error=errors[row], usage=cost))
                continue
            result = [item for c in self.controls for item in entities[(row, c.name)]]
            result += statuses.get(row, [])
            for choice in self.choices:
                item = self._choice_item(choice, row, outputs)
                if item is not None:
                    result.append(item)
            result += relations.get(row, [])
            predictions.append(TaskPrediction(task_id, version, result, usage=cost))
        return predictions
