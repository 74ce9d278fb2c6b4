"""Turn a project configuration into a validated one, or explain every problem at once.

The rules follow what annotation teams already know from Generative AI Lab: at most five
models of every kind, one assertion model, labels and relations must be predictable by the
model they name, relations join labels a control offers, and models built on different
embeddings do not mix unless the configuration opts in (models built on none, such as
lexicons and rules, mix with any). Prompts are resolved and checked in `prompt_checks.py`;
the zero-shot model they run on joins the configuration's models.
"""

import hashlib
import json
from dataclasses import dataclass, field

from preannotate.configs.errors import ConfigError
from preannotate.configs.labeling import Label, LabelingConfig, parse_labeling_config
from preannotate.configs.project import ProjectConfig
from preannotate.configs.prompts import ExternalPrompt, Prompt, PromptLibrary
from preannotate.configs.rules import Rule, RuleLibrary, parse_rule
from preannotate.hub.catalog import Hub, HubError
from preannotate.hub.manifest import NO_EMBEDDINGS, ModelManifest
from preannotate.hub.prompt_checks import resolve_prompts

MAX_MODELS = 5
RULE_RELATION_RUNTIME = "relation_rules"
"""Models on this runtime also predict the relations of the project's `relation_rules`."""
CONTROL_KINDS = {"labels": {"ner"}, "rectanglelabels": {"ner", "visual_ner"}}


@dataclass(frozen=True)
class ValidatedConfig:
    """A configuration that passed validation, with everything resolved that serving needs."""

    project: ProjectConfig
    labeling: LabelingConfig
    models: dict[str, ModelManifest]
    rules: list[Rule]
    hash: str
    prompts: dict[str, Prompt] = field(default_factory=dict)
    """Every prompt the labeling config names, by name; `models` holds the zero-shot model
    the zero-shot ones run on."""

    def external_prompts(self) -> list[ExternalPrompt]:
        return [p for p in self.prompts.values() if isinstance(p, ExternalPrompt)]

    @property
    def license_scopes(self) -> set[str]:
        return {m.license_scope for m in self.models.values()} - {"open"}

    def replica_resources(self) -> dict[str, float]:
        """What one replica asks Ray for: explicit settings, else the sum over its models."""
        res = self.project.resources
        models = self.models.values()
        cpus = res.num_cpus if res.num_cpus is not None else sum(m.resources.cpus for m in models)
        gpus = res.num_gpus if res.num_gpus is not None else sum(m.resources.gpus for m in models)
        memory = (
            res.memory_mb
            if res.memory_mb is not None
            else sum(m.resources.memory_mb for m in models)
        )
        return {
            "num_cpus": cpus if self.models else max(cpus, 0.1),
            "num_gpus": gpus,
            "memory_mb": memory,
            "license_tokens": 1.0 if self.license_scopes else 0.0,
        }


def config_hash(
    labeling: LabelingConfig,
    project: ProjectConfig,
    models: dict[str, ModelManifest],
    rules: list[Rule],
    prompts: list[Prompt] | None = None,
) -> str:
    """Same meaning, same hash: XML layout, attribute order and label order do not count;
    a new model version, an edited rule or a new prompt version does, since predictions
    would change."""
    canonical = labeling.model_dump()
    for control in canonical["labels"]:
        control["labels"].sort(key=lambda lab: lab["value"])
    for control in canonical["choices"]:
        control["choices"].sort()
    for key in ("objects", "labels", "choices"):
        canonical[key].sort(key=lambda item: item.get("name", ""))
    for control in canonical["relations"]:
        control["relations"].sort(key=lambda rel: rel["value"])
    canonical["relations"].sort(key=lambda control: json.dumps(control, sort_keys=True))
    payload = {
        "labeling": canonical,
        "models": {name: m.version for name, m in sorted(models.items())},
        "rules": sorted((r.model_dump() for r in rules), key=lambda r: r["name"]),
        "prompts": sorted((p.model_dump() for p in prompts or []), key=lambda p: p["name"]),
        "allow_mixed_embeddings": project.allow_mixed_embeddings,
        "prefer": project.prefer,
        "relation_rules": [r.model_dump() for r in project.relation_rules],
        "resources": project.resources.model_dump(),
    }
    digest = hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()
    return digest[:16]


def _label_where(control: str, label: Label) -> str:
    return f'<Label value="{label.value}"> in <Labels name="{control}">'


def _check_controls(labeling: LabelingConfig) -> list[str]:
    problems = []
    objects = [o.name for o in labeling.objects]
    controls = [(c.name, c.to_name, "Labels") for c in labeling.labels]
    controls += [(c.name, c.to_name, "Choices") for c in labeling.choices]
    seen: set[str] = set()
    for name, to_name, tag in controls:
        if name in seen:
            problems.append(f'two controls are named "{name}"; control names must be unique')
        seen.add(name)
        if to_name not in objects:
            problems.append(
                f'<{tag} name="{name}"> has toName="{to_name}", but no object tag has that name '
                f"(objects: {', '.join(objects) or 'none'})"
            )
    for control in labeling.labels:
        values = [lab.value for lab in control.labels]
        for dup in sorted({v for v in values if values.count(v) > 1}):
            problems.append(f'<Labels name="{control.name}"> lists the label "{dup}" twice')
    return problems


def _check_images(labeling: LabelingConfig) -> list[str]:
    """Boxes (`<RectangleLabels>`) and document classes (`<Choices>` with a model or a
    prompt) are pre-annotated on one `<Image>`; a configuration does either documents or
    plain text, so each task is read one way."""
    problems = []
    kinds = {o.name: o.kind for o in labeling.objects}
    for control in labeling.labels:
        on_image = kinds.get(control.to_name) == "image"
        tag = "RectangleLabels" if control.kind == "rectanglelabels" else "Labels"
        if on_image != (control.kind == "rectanglelabels") and control.to_name in kinds:
            problems.append(
                f'<{tag} name="{control.name}"> points at a {kinds[control.to_name]} object; '
                "use <RectangleLabels> on an <Image> and <Labels> on <Text>"
            )
    predicted = [c for c in labeling.choices if c.model or c.prompt]
    images = {c.to_name for c in labeling.labels if c.kind == "rectanglelabels"}
    images |= {c.to_name for c in predicted if kinds.get(c.to_name) == "image"}
    if len(images) > 1:
        problems.append(
            f"boxes or classes are pre-annotated on {len(images)} images "
            f"({', '.join(sorted(images))}); a configuration pre-annotates one <Image>"
        )
    on_text = any(c.kind == "labels" for c in labeling.labels) or any(
        kinds.get(c.to_name) != "image" for c in predicted
    )
    if images and on_text:
        problems.append("a configuration pre-annotates either an <Image> or text, not both")
    return problems


def _check_models(
    labeling: LabelingConfig, project: ProjectConfig, hub: Hub
) -> tuple[dict[str, ModelManifest], list[str]]:
    problems: list[str] = []
    names = labeling.models()
    if len(names) > MAX_MODELS:
        problems.append(
            f"the configuration uses {len(names)} models ({', '.join(names)}); "
            f"a configuration may use at most {MAX_MODELS}"
        )
    models: dict[str, ModelManifest] = {}
    unknown: set[str] = set()
    for name in names:
        try:
            models[name] = hub.get(name).manifest
        except HubError as exc:
            unknown.add(name)
            problems.append(str(exc))

    def check(where: str, model: str | None, kinds: set[str], label: str | None) -> None:
        if model is None or model in unknown:
            return
        manifest = models[model]
        if manifest.kind not in kinds:
            problems.append(
                f"{where} names '{model}', a {manifest.kind} model, where "
                f"{' or '.join(sorted(kinds))} models are expected"
            )
        elif label is not None and label not in manifest.labels:
            problems.append(
                f"{where}: model '{model}' does not predict '{label}' "
                f"(its labels: {', '.join(manifest.labels)})"
            )

    assertion_models = []
    for control in labeling.labels:
        for label in control.labels:
            where = _label_where(control.name, label)
            if label.assertion:
                if label.model is None:
                    problems.append(f'{where} has assertion="true" but names no assertion model')
                check(where, label.model, {"assertion"}, label.value)
                assertion_models.append(label.model)
            else:
                check(where, label.model, CONTROL_KINDS[control.kind], label.value)
    distinct_assertion = sorted({m for m in assertion_models if m})
    if len(distinct_assertion) > 1:
        problems.append(
            f"only one assertion model per configuration; found {', '.join(distinct_assertion)}"
        )
    for control in labeling.choices:
        where = f'<Choices name="{control.name}">'
        check(where, control.model, {"classification"}, None)
        manifest = models.get(control.model or "")
        if manifest and manifest.kind == "classification":
            missing = [c for c in control.choices if c not in manifest.labels]
            if missing:
                problems.append(
                    f"{where}: model '{control.model}' does not predict {', '.join(missing)} "
                    f"(its classes: {', '.join(manifest.labels)})"
                )
    ruled = {r.relation for r in project.relation_rules}
    for control in labeling.relations:
        for relation in control.relations:
            where = f'<Relation value="{relation.value}">'
            manifest = models.get(relation.model or "")
            if manifest and manifest.runtime == RULE_RELATION_RUNTIME and relation.value in ruled:
                check(where, relation.model, {"relation"}, None)
            else:
                check(where, relation.model, {"relation"}, relation.value)

    embeddings = {m.embeddings for m in models.values()} - {NO_EMBEDDINGS}
    if len(embeddings) > 1 and not project.allow_mixed_embeddings:
        detail = ", ".join(f"{n} ({m.embeddings})" for n, m in models.items())
        problems.append(
            f"models built on different embeddings cannot be combined: {detail}; "
            "set allow_mixed_embeddings to true to load each model's embeddings separately"
        )
    return models, problems


def _check_relations(labeling: LabelingConfig, project: ProjectConfig) -> list[str]:
    """Relations join entity chunks: a relation rule must join labels a `<Labels>` or
    `<RectangleLabels>` offers and give a relation a `<Relation>` offers."""
    problems = []
    entity_labels = labeling.entity_labels()
    offered = {r.value for c in labeling.relations for r in c.relations}
    if labeling.relations and not entity_labels:
        problems.append(
            "<Relations> needs a <Labels> or <RectangleLabels> control whose chunks it joins"
        )
    for rule in project.relation_rules:
        missing = [x for x in (rule.from_label, rule.to_label) if x not in entity_labels]
        if missing:
            problems.append(
                f"{rule.describe()} joins {', '.join(repr(m) for m in missing)}, which no "
                "<Labels> or <RectangleLabels> in the labeling config offers"
            )
        if rule.relation not in offered:
            problems.append(
                f"{rule.describe()} gives '{rule.relation}', which no <Relation> in the "
                f'labeling config offers; add <Relation value="{rule.relation}" model="..."/>'
            )
    return problems


def _resolve_rules(
    project: ProjectConfig, labeling: LabelingConfig, library: RuleLibrary
) -> tuple[list[Rule], list[str]]:
    problems: list[str] = []
    rules: list[Rule] = []
    for i, entry in enumerate(project.rules):
        if isinstance(entry, str):
            rule = library.find(entry)
            if rule is None:
                problems.append(
                    f"unknown rule '{entry}': add it with `preannotate rules add FILE` "
                    "or define it inline"
                )
                continue
        else:
            try:
                rule = parse_rule(entry, f"#{i + 1}")
            except ConfigError as exc:
                problems.extend(exc.problems)
                continue
        rules.append(rule)
    names = [r.name for r in rules]
    for dup in sorted({n for n in names if names.count(n) > 1}):
        problems.append(f"the rule '{dup}' is listed twice")
    span_labels = {lab.value for c in labeling.labels for lab in c.labels}
    for rule in rules:
        if rule.label not in span_labels:
            problems.append(
                f"rule '{rule.name}' proposes the label '{rule.label}', which no <Labels> in the "
                'labeling config offers; add <Label value="' + rule.label + '"/>'
            )
    return rules, problems


def validate_config(
    project: ProjectConfig,
    hub: Hub | None = None,
    library: RuleLibrary | None = None,
    prompt_library: PromptLibrary | None = None,
) -> ValidatedConfig:
    """Validate everything and raise one ConfigError listing every problem found."""
    hub = hub or Hub()
    library = library or RuleLibrary()
    labeling = parse_labeling_config(project.labeling_config)
    problems = _check_controls(labeling) + _check_images(labeling)
    models, model_problems = _check_models(labeling, project, hub)
    rules, rule_problems = _resolve_rules(project, labeling, library)
    problems += model_problems + rule_problems + _check_relations(labeling, project)
    prompts, zero_shot, prompt_problems = resolve_prompts(
        labeling, project, hub, prompt_library or PromptLibrary()
    )
    problems += prompt_problems
    models |= zero_shot
    if not labeling.objects:
        problems.append("the labeling config has no object tag (<Text>, <HyperText> or <Image>)")
    if problems:
        raise ConfigError(problems)
    digest = config_hash(labeling, project, models, rules, list(prompts.values()))
    return ValidatedConfig(project, labeling, models, rules, digest, prompts)
