"""What the routes answer with: the API's resources as the OpenAPI document shows them.

Routes build these answers as dicts (from `as_dict()` rows and the scheduler's replies);
FastAPI checks each against its model here on the way out, so the document cannot drift
from what is sent. That costs the interactive lane nothing measurable: pydantic-core
checks and writes the answer in one pass, as fast as the `dict[str, Any]` it replaced, and
faster than no model at all (FastAPI's pure-Python `jsonable_encoder`).
"""

from typing import Any

from pydantic import BaseModel, Field

from preannotate.hub.manifest import ModelManifest
from preannotate.store import JobState, Role, ServerStatus

Time = str
"""An ISO 8601 time, as the store writes it."""
Item = dict[str, Any]
"""A result item as Label Studio and Generative AI Lab read it (a span, a choice, ...)."""


class ClusterHealth(BaseModel):
    status: str = Field(examples=["UP"])
    servers: int = Field(description="servers recorded, whatever their status")


class HubModelEntry(ModelManifest):
    builtin: bool = Field(description="shipped with preannotate, not trained or added")


class ModelVersions(BaseModel):
    name: str
    versions: list[HubModelEntry] = Field(description="the model and its trained versions")


class User(BaseModel):
    id: int
    name: str
    is_admin: bool


class NewUserAnswer(User):
    token: str = Field(description="the user's first API token, shown this once")


class DeletedUser(User):
    created_at: Time
    deleted_at: Time | None


class Token(BaseModel):
    user_id: int
    token: str = Field(description="the new API token, shown this once")


class Membership(BaseModel):
    user_id: int
    project_id: int
    role: Role | None = Field(description="null once the role is taken away")


class Project(BaseModel):
    id: int
    name: str
    created_at: Time
    config_version: int | None
    config_hash: str | None


class Replicas(BaseModel):
    target: int
    running: int


class Server(BaseModel):
    id: str
    config_hash: str
    projects: list[int] = Field(description="the projects using it that the caller sees")
    models: list[dict[str, Any]] = Field(description="as deployed: name, version, labels")
    rules: list[dict[str, Any]]
    prompts: list[dict[str, Any]] = Field(
        description="as deployed: name, version, type (entity, classification, relation, "
        "external) and the labels it gives"
    )
    status: ServerStatus
    message: str | None
    replicas: Replicas
    resources_per_replica: dict[str, Any]
    nodes: list[str] = Field(description="Ray node ids of its running replicas")
    deployed_at: Time


class PreannotateOptions(BaseModel):
    project_id: int
    config_hash: str
    servers: list[Server] = Field(description="servers with the configuration the caller may use")
    can_deploy: bool
    reason: str | None = Field(description="why a deploy is not possible")
    delete_candidates: list[str]


class Prediction(BaseModel):
    """A server's output for a task, one version; never edited."""

    task_id: Any = Field(description="the task's `id` as sent")
    result: list[Item] = []
    score: float | None = None
    model_version: str | None = None
    error: str | None = Field(None, description="why this task got no prediction")


class Predictions(BaseModel):
    server_id: str
    predictions: list[Prediction] = Field(description="one per task, in order")


class AddedTasks(BaseModel):
    count: int
    first_id: int | None
    last_id: int | None


class TaskSummary(BaseModel):
    id: int
    data: dict[str, Any]
    predictions: int = Field(description="prediction versions")
    completions: int


class TaskPage(BaseModel):
    tasks: list[TaskSummary]
    next_after_id: int | None = Field(description="`after_id` of the next page; null at the end")


class StoredPrediction(BaseModel):
    id: int
    task_id: int
    version: int
    server_id: str | None
    config_hash: str
    job_id: int | None
    result: list[Item]
    score: float | None
    model_version: str
    created_at: Time


class ChangedItem(BaseModel):
    a: Item
    b: Item


class Comparison(BaseModel):
    added: list[Item]
    removed: list[Item]
    changed: list[ChangedItem]
    unchanged: int


class Completion(BaseModel):
    id: int
    task_id: int
    result: list[Item]
    copied_from_prediction_id: int | None
    created_by: int | None
    created_at: Time
    updated_at: Time


class Job(BaseModel):
    id: int
    project_id: int
    kind: str = Field(examples=["preannotate", "train"])
    state: JobState
    server_id: str | None
    params: dict[str, Any]
    total: int
    done: int
    failed: int
    errors: list[dict[str, Any]] = Field(description="the latest failures; `failed` counts all")
    details: dict[str, Any] = Field(description="a training run's epoch, loss, log, metrics")
    reason: str | None
    created_at: Time
    started_at: Time | None
    finished_at: Time | None
    rate: float | None = Field(description="tasks per second since it started")
    llm_requests: int | None = Field(
        None, description="requests to external LLM providers, retries included; null: none"
    )
    prompt_tokens: int | None = Field(None, description="prompt tokens the providers counted")
    completion_tokens: int | None = Field(
        None, description="completion tokens the providers counted"
    )


class Provider(BaseModel):
    """An external LLM provider; its API key is never part of an answer."""

    id: int
    name: str
    kind: str = Field(examples=["openai", "azure-openai"])
    base_url: str
    api_version: str | None
    timeout_s: float | None
    concurrency: int | None
    created_at: Time


class ProviderCheck(BaseModel):
    """What one call to a provider gave."""

    provider: str
    model: str
    ok: bool
    answer: str | None
    error: str | None = Field(description="the provider's error, when the call failed")
    llm_requests: int
    prompt_tokens: int
    completion_tokens: int


EXPORT = {
    200: {
        "description": "the project's tasks with their predictions and completions",
        "content": {"application/json": {"schema": {"type": "array", "items": {"type": "object"}}}},
    }
}
"""The export is streamed, so it is documented here rather than checked by a model."""
