"""A project configuration: labeling config XML + rules + prompts + resource needs, as users
write it.

A project file is JSON. `labeling_config` holds the XML inline or names an `.xml` file next
to the project file; `rules` lists names from the shared rule library or inline rule
definitions, so an example project works offline without registering anything first;
`prompts` holds inline prompt definitions the same way (the labeling config names them).
"""

import json
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from preannotate.configs.errors import ConfigError, validation_problems
from preannotate.configs.relations import RelationRule
from preannotate.configs.textfiles import existing_file, read_text


class Autoscaling(BaseModel):
    """Ray Serve autoscaling; `min_replicas=0` scales an idle server to zero (frees tokens)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    min_replicas: int = Field(0, ge=0)
    max_replicas: int = Field(2, ge=1)
    target_ongoing_requests: float = Field(4, gt=0)


class Resources(BaseModel):
    """Per-replica needs; unset values are summed from the hub manifests of its models."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    num_cpus: float | None = Field(None, ge=0)
    num_gpus: float | None = Field(None, ge=0)
    memory_mb: int | None = Field(None, ge=0)
    replicas: int = Field(1, ge=1, le=64)
    autoscaling: Autoscaling | None = None

    @model_validator(mode="after")
    def _check_autoscaling(self) -> "Resources":
        scaling = self.autoscaling
        if scaling and scaling.min_replicas > scaling.max_replicas:
            raise ValueError("autoscaling.min_replicas is larger than max_replicas")
        return self


class DocumentOptions(BaseModel):
    """How a visual project's PDFs and images are read: the DPI pages are rendered at for OCR
    and for annotators, Tesseract's languages (`eng`, `eng+deu`; their Debian
    `tesseract-ocr-<lang>` packages must be installed on the nodes), and the OCR time and
    page limits per document."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    dpi: int = Field(200, ge=72, le=600)
    languages: str = Field("eng", pattern=r"^[a-z_]{3,16}(\+[a-z_]{3,16}){0,7}$")
    ocr_seconds: float = Field(30.0, gt=0, le=600)
    max_pages: int = Field(200, ge=1, le=2000)


class ProjectConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    name: str = Field(min_length=1, max_length=200)
    labeling_config: str = Field(min_length=1, description="labeling config XML")
    rules: list[str | dict] = Field(default_factory=list, description="names or inline rules")
    prompts: list[dict] = Field(
        default_factory=list,
        description="inline prompts, found before the library's by the names the labeling "
        "config gives",
    )
    allow_mixed_embeddings: bool = False
    prefer: Literal["model", "rule"] = Field(
        "model", description="which source wins between overlapping spans of equal length"
    )
    relation_rules: list[RelationRule] = Field(
        default_factory=list, description="rules a rule relation model adds to its own"
    )
    resources: Resources = Resources()
    documents: DocumentOptions = DocumentOptions()


def load_project_config(path: Path) -> ProjectConfig:
    """Read a project file (JSON) or a bare labeling config (`.xml`, project named after it)."""
    path = Path(path)
    path = existing_file(path)
    if path.suffix.lower() == ".xml":
        return ProjectConfig(name=path.stem, labeling_config=read_text(path, xml=True))
    try:
        data = json.loads(read_text(path))
    except json.JSONDecodeError as exc:
        raise ConfigError([f"{path} is not valid JSON: {exc}"]) from None
    if not isinstance(data, dict):
        raise ConfigError([f"{path} must hold a JSON object"])
    xml = data.get("labeling_config")
    if isinstance(xml, str) and xml.strip().endswith(".xml") and not xml.lstrip().startswith("<"):
        xml_file = (path.parent / xml).resolve()
        if not xml_file.is_relative_to(path.parent.resolve()) or not xml_file.is_file():
            raise ConfigError([f"{path}: labeling_config '{xml}' is not a file next to it"])
        data = {**data, "labeling_config": read_text(xml_file, xml=True)}
    return parse_project_config(data, str(path))


def parse_project_config(data: object, source: str = "config") -> ProjectConfig:
    try:
        return ProjectConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(validation_problems(exc, source)) from None
