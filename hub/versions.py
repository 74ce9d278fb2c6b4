"""Versions of trained models: each run adds `<name>_v<n>` next to the older versions, which
stay usable, with a manifest that says what it predicts, how well and from what data."""

import re
from typing import Any

from preannotate.configs.training import MARKED_KINDS, TrainingSpec
from preannotate.hub.catalog import Hub, HubModel
from preannotate.hub.manifest import NO_EMBEDDINGS, ModelManifest, ModelResources

WEIGHTS = "model"
"""The weights folder inside a trained version's model folder."""


VERSION_DIGITS = re.compile(r"[0-9]{1,9}")
"""A version number as a name ends in: ASCII digits (`str.isdigit` also takes "²", which
`int` refuses)."""


def version_number(name: str, model_name: str) -> int | None:
    """n when `name` is `<model_name>_v<n>`, a trained version of that model, else None."""
    prefix = f"{model_name}_v"
    if name.startswith(prefix) and VERSION_DIGITS.fullmatch(name[len(prefix) :]):
        return int(name[len(prefix) :])
    return None


def next_version(hub: Hub, model_name: str) -> tuple[str, int]:
    """`<name>_v<n>` with n one above the highest version in the hub."""
    taken = [n for name in hub.names() if (n := version_number(name, model_name)) is not None]
    number = max(taken, default=0) + 1
    return f"{model_name}_v{number}", number


def _embeddings(spec: TrainingSpec, base: HubModel | None) -> str:
    """A marked-chunk classifier learns its own hashed features from blank, like a lexicon
    it combines with any model; other runs share their base's embeddings, or their own."""
    if spec.kind in MARKED_KINDS:
        return NO_EMBEDDINGS
    return base.manifest.embeddings if base else f"spacy_blank_en:{spec.model_name}"


def manifest_for(
    name: str,
    number: int,
    spec: TrainingSpec,
    labels: list[str],
    metrics: dict[str, Any],
    base: HubModel | None,
    provenance: dict[str, Any],
) -> ModelManifest:
    """The manifest of a trained version: what it predicts, how well, from what data."""
    return ModelManifest(
        name=name,
        version=str(number),
        kind=spec.kind,
        labels=labels,
        embeddings=_embeddings(spec, base),
        runtime="spacy",
        license_scope=base.manifest.license_scope if base else "open",
        resources=ModelResources(cpus=0.5, gpus=0, memory_mb=300),
        path=WEIGHTS,
        description=f"{spec.kind} model trained from the completions of a project",
        metrics=metrics,
        training=provenance | {"epochs": spec.epochs, "base_model": spec.base_model},
    )
