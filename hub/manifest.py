"""The manifest every hub model carries (`manifest.json` in its folder).

The manifest is what validation, capacity checks and the "Predefined Labels" list read,
so a model is never loaded just to learn what it predicts or what it needs.
"""

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

ModelKind = Literal["ner", "classification", "assertion", "relation", "visual_ner", "zero_shot"]
LicenseScope = Literal["open", "healthcare", "finance", "legal"]
MANIFEST_FILE = "manifest.json"
NO_EMBEDDINGS = "none"
"""The embeddings of a model built on none (a lexicon, rules): it combines with any model."""


class ModelResources(BaseModel):
    """What one replica serving this model needs; summed over a configuration's models."""

    model_config = ConfigDict(extra="forbid")

    cpus: float = Field(0.5, ge=0)
    gpus: float = Field(0, ge=0)
    memory_mb: int = Field(500, ge=0)


class ModelManifest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
    version: str = Field(min_length=1)
    kind: ModelKind
    labels: list[str] = Field(min_length=1)
    embeddings: str = Field(min_length=1, description="models on different embeddings don't mix")
    runtime: str = Field(min_length=1, description="the plugin that loads it, e.g. 'spacy'")
    license_scope: LicenseScope = "open"
    resources: ModelResources = ModelResources()
    package: str | None = Field(None, description="an installed Python package holding the model")
    path: str | None = Field(None, description="weights folder, relative to the model folder")
    description: str = ""
    metrics: dict[str, Any] = {}
    training: dict[str, Any] = {}
