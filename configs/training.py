"""The training request: what `POST /projects/{id}/train` asks for, checked at the edge so a
malformed request never reaches the scheduler."""

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from preannotate.configs.rules import NAME_PATTERN

TrainingKind = Literal["ner", "classification", "assertion", "relation", "visual_ner"]
"""What a run learns: entity spans (`<Labels>`), document classes (`<Choices>`), the
assertion status of entity chunks (assertion labels), relations between them
(`<Relations>`), or entities on document pages (`<RectangleLabels>`, learnt over the
page text)."""
MARKED_KINDS = frozenset({"assertion", "relation"})
"""Kinds learnt as a text classifier over chunks marked in their context."""


class TrainingResources(BaseModel):
    """What the training run reserves on the cluster; it runs next to serving, so it asks
    for its share like a replica does."""

    model_config = ConfigDict(extra="forbid")

    num_cpus: float = Field(1.0, gt=0)
    num_gpus: float = Field(0.0, ge=0)
    memory_mb: int = Field(1000, ge=0)


class TrainingSpec(BaseModel):
    """What `POST /projects/{id}/train` asks for."""

    model_config = ConfigDict(extra="forbid")

    kind: TrainingKind
    model_name: str = Field(pattern=NAME_PATTERN, description="versions become <name>_v1, _v2…")
    base_model: str | None = Field(None, description="a hub NER model to start from")
    epochs: int = Field(10, ge=1, le=200)
    holdout: float = Field(0.2, gt=0, lt=0.9, description="share of completions held out")
    seed: int = Field(0, description="the same seed and completions train the same model")
    resources: TrainingResources = TrainingResources()
