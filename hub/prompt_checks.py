"""Resolve the prompts a configuration names and check that each fits its place.

A prompt is looked up among the project's inline prompts, then in the shared library. An
entity prompt sits on the `<Label>` of its label, a classification prompt on `<Choices>`
offering its classes, a relation prompt on the `<Relation>` it gives, joining labels a
text `<Labels>` offers; an external prompt answers labels its `<Labels>` or `<Choices>`
offers. All zero-shot prompts of a project run on one zero-shot model of the hub.
"""

from collections.abc import Callable

from preannotate.configs.errors import ConfigError
from preannotate.configs.labeling import LabelingConfig
from preannotate.configs.project import ProjectConfig
from preannotate.configs.prompts import (
    ClassificationPrompt,
    EntityPrompt,
    ExternalPrompt,
    Prompt,
    PromptLibrary,
    RelationPrompt,
    parse_prompt,
    zero_shot_model,
)
from preannotate.hub.catalog import Hub, HubError
from preannotate.hub.manifest import ModelManifest

ZERO_SHOT_KIND = "zero_shot"


def _inline_prompts(project: ProjectConfig) -> tuple[dict[str, Prompt], list[str]]:
    problems: list[str] = []
    inline: dict[str, Prompt] = {}
    for i, entry in enumerate(project.prompts):
        try:
            prompt = parse_prompt(entry, f"#{i + 1} in the project's prompts")
        except ConfigError as exc:
            problems += exc.problems
            continue
        if prompt.name in inline:
            problems.append(f"the project defines the prompt '{prompt.name}' twice")
        inline[prompt.name] = prompt
    return inline, problems


def _offered_list(values: list[str]) -> str:
    return ", ".join(values) or "none"


class _Checker:
    """Collects the problems of every place a prompt is named, in one pass."""

    def __init__(self, resolve: Callable[[str, str], Prompt | None]):
        self.resolve = resolve
        self.problems: list[str] = []

    def wrong_type(self, where: str, prompt: Prompt, expected: str) -> None:
        kind = f"an external {prompt.output}" if isinstance(prompt, ExternalPrompt) else prompt.type
        self.problems.append(
            f"{where} names the prompt '{prompt.name}', {'an' if kind[0] in 'aeiou' else 'a'} "
            f"{kind} prompt, where {expected} prompts belong"
        )

    def labels(self, labeling: LabelingConfig) -> None:
        for control in labeling.labels:
            offered = [lab.value for lab in control.labels]
            for label in control.labels:
                tag = "RectangleLabels" if control.kind == "rectanglelabels" else "Labels"
                where = f'<Label value="{label.value}"> in <{tag} name="{control.name}">'
                prompt = self.resolve(label.prompt, where) if label.prompt else None
                if prompt is None:
                    continue
                if label.assertion:
                    self.problems.append(
                        f"{where} names the prompt '{prompt.name}'; prompts propose entity "
                        "spans, not assertion statuses"
                    )
                elif isinstance(prompt, EntityPrompt):
                    if prompt.label != label.value:
                        self.problems.append(
                            f"{where} names the prompt '{prompt.name}', which proposes "
                            f"'{prompt.label}', not '{label.value}'"
                        )
                elif isinstance(prompt, ExternalPrompt) and prompt.output == "entity":
                    missing = [x for x in prompt.labels if x not in offered]
                    if label.value not in prompt.labels or missing:
                        self.problems.append(
                            f"{where} names the external prompt '{prompt.name}', which answers "
                            f"{_offered_list(prompt.labels)}; its <Labels> must offer each of "
                            f"them and this label must be one (offered: {_offered_list(offered)})"
                        )
                else:
                    self.wrong_type(where, prompt, "entity")

    def choices(self, labeling: LabelingConfig) -> None:
        for control in labeling.choices:
            where = f'<Choices name="{control.name}">'
            prompt = self.resolve(control.prompt, where) if control.prompt else None
            if prompt is None:
                continue
            if control.model:
                self.problems.append(
                    f"{where} names both a model and a prompt; one of them gives its choices"
                )
            if isinstance(prompt, ClassificationPrompt | ExternalPrompt) and (
                isinstance(prompt, ClassificationPrompt) or prompt.output == "classification"
            ):
                missing = [c for c in prompt.labels if c not in control.choices]
                if missing:
                    self.problems.append(
                        f"{where}: the prompt '{prompt.name}' gives {', '.join(missing)}, which "
                        f"it does not offer (choices: {_offered_list(control.choices)})"
                    )
            else:
                self.wrong_type(where, prompt, "classification")

    def relations(self, labeling: LabelingConfig) -> None:
        entity_labels = labeling.entity_labels()
        for control in labeling.relations:
            for relation in control.relations:
                where = f'<Relation value="{relation.value}">'
                prompt = self.resolve(relation.prompt, where) if relation.prompt else None
                if prompt is None:
                    continue
                if not isinstance(prompt, RelationPrompt):
                    self.wrong_type(where, prompt, "relation")
                    continue
                if prompt.relation != relation.value:
                    self.problems.append(
                        f"{where} names the prompt '{prompt.name}', which gives "
                        f"'{prompt.relation}', not '{relation.value}'"
                    )
                missing = [
                    x
                    for x in dict.fromkeys((prompt.from_label, prompt.to_label))
                    if x not in entity_labels
                ]
                if missing:
                    self.problems.append(
                        f"{where}: the prompt '{prompt.name}' joins "
                        f"{', '.join(repr(m) for m in missing)}, which no <Labels> on text offers"
                    )


def _zero_shot_models(
    prompts: dict[str, Prompt], hub: Hub
) -> tuple[dict[str, ModelManifest], list[str]]:
    """The one zero-shot model the prompts run on, checked in the hub."""
    by_model: dict[str, list[str]] = {}
    for prompt in prompts.values():
        model = zero_shot_model(prompt)
        if model is not None:
            by_model.setdefault(model, []).append(prompt.name)
    problems: list[str] = []
    if len(by_model) > 1:
        detail = "; ".join(f"{m} ({', '.join(names)})" for m, names in sorted(by_model.items()))
        problems.append(
            f"a project uses the prompts of one zero-shot model; these prompts name "
            f"{len(by_model)}: {detail}"
        )
    models: dict[str, ModelManifest] = {}
    for name, users in sorted(by_model.items()):
        try:
            manifest = hub.get(name).manifest
        except HubError as exc:
            problems.append(f"{exc} (named by the prompt '{users[0]}')")
            continue
        if manifest.kind != ZERO_SHOT_KIND:
            problems.append(
                f"the prompt '{users[0]}' names '{name}', a {manifest.kind} model; prompts run "
                f"on {ZERO_SHOT_KIND} models"
            )
            continue
        models[name] = manifest
    return models, problems


def resolve_prompts(
    labeling: LabelingConfig, project: ProjectConfig, hub: Hub, library: PromptLibrary
) -> tuple[dict[str, Prompt], dict[str, ModelManifest], list[str]]:
    """The prompts the labeling config names (by name), the zero-shot model they run on,
    and every problem found."""
    inline, problems = _inline_prompts(project)
    prompts: dict[str, Prompt] = {}
    unknown: set[str] = set()

    def resolve(name: str, where: str) -> Prompt | None:
        if name in prompts:
            return prompts[name]
        prompt = inline.get(name) or library.find(name)
        if prompt is None:
            if name not in unknown:
                problems.append(
                    f"{where} names the unknown prompt '{name}': add it with "
                    '`preannotate prompts add FILE` or define it under "prompts" in the project'
                )
            unknown.add(name)
            return None
        prompts[name] = prompt
        return prompt

    checker = _Checker(resolve)
    checker.labels(labeling)
    checker.choices(labeling)
    checker.relations(labeling)
    models, model_problems = _zero_shot_models(prompts, hub)
    return prompts, models, problems + checker.problems + model_problems
