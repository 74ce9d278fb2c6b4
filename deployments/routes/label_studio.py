"""Any server as Label Studio's ML backend: the protocol `label-studio-ml-backend` serves.

Label Studio connects to a model by URL and calls `GET /health`, `POST /setup`,
`POST /predict` and `POST /webhook` under it. Two base URLs serve it: `/ml/{server_id}`
(a server; its annotations go to the one project using it that the caller has a role in)
and `/ml/projects/{project_id}` (a project, through the server with its current
configuration). Label Studio authenticates with HTTP basic auth when its connection has a
user and password: our user name and an API token; bearer tokens work too.

Label Studio sends its project's labeling config with every call, and its names and task
fields may differ from the server's: `configs/label_studio.py` pairs them, predictions go
out under Label Studio's names and annotations come in under the configuration's. Every
answer is JSON; errors are 4xx `{"detail": ...}` (Label Studio shows the body with its
error), one task that cannot be predicted is an empty result with its `error`.

`predict` is the interactive lane of `servers.predict`, which it calls per slice of tasks:
with cached token, permission, handle and labeling-config pairing it asks neither the
store nor the scheduler. Webhooks write to the store and are plain `def` (see `context`).
"""

import asyncio
import base64
import binascii
import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Response, Security
from fastapi.security import HTTPAuthorizationCredentials
from fastapi.security.http import HTTPBase
from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt
from starlette.concurrency import run_in_threadpool

from preannotate.annotators.pipeline import task_data
from preannotate.configs.errors import ConfigError
from preannotate.configs.label_studio import SchemaMatch, match
from preannotate.configs.labeling import parse_labeling_config
from preannotate.configs.training import TrainingSpec
from preannotate.deployments.routes import jobs, servers
from preannotate.deployments.routes.context import (
    READ,
    Bearer,
    Context,
    Ctx,
    Id,
    caller_roles,
    require_role,
)
from preannotate.deployments.routes.errors import ErrorBody, ProblemsBody, errors
from preannotate.deployments.routes.json_body import JsonBodyRoute
from preannotate.deployments.server_ingress import MAX_INTERACTIVE_TASKS, PredictRequest
from preannotate.store import InvalidInput, InvalidState, NotFound, ServerStatus
from preannotate.store.models import User

router = APIRouter(tags=["label studio"], route_class=JsonBodyRoute)
MAX_TASKS = 1000
"""Tasks per `/predict` call; they go to the server in slices of the interactive lane's
size, together."""
ANNOTATION_EVENTS = {"ANNOTATION_CREATED", "ANNOTATION_UPDATED"}
TRAINING_EVENT = "START_TRAINING"
CHALLENGE = {"WWW-Authenticate": 'Basic realm="preannotate"'}


UNAUTHORIZED = {401: {"model": ErrorBody, "description": "no valid user name and API token"}}
MISMATCH = {
    422: {
        "model": ProblemsBody,
        "description": "the labeling config lacks controls or labels the server predicts, "
        "or the request is malformed; each problem named",
    }
}


BASIC = HTTPBase(
    scheme="basic",
    scheme_name="HTTPBasic",
    auto_error=False,
    description="your user name, and an API token as the password",
)
"""Documents basic auth; it hands on the `Authorization` header of any scheme, unchecked."""


async def label_studio_user(
    ctx: Ctx,
    sent: Annotated[HTTPAuthorizationCredentials | None, Security(BASIC)],
    bearer: Bearer,
) -> User:
    """The caller, from basic auth (user name, API token as password) or a bearer token;
    401 with a basic challenge otherwise, which Label Studio's connection form answers."""
    name, token = None, bearer.credentials if bearer else None
    if sent is not None and sent.scheme.lower() == "basic":
        try:
            decoded = base64.b64decode(sent.credentials, validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            decoded = ""
        name, _, token = decoded.partition(":")
    user = await ctx.access.user(token)
    if user is None or (name is not None and name != user.name):
        raise HTTPException(
            401,
            "give your user name and an API token as the password (HTTP basic auth, as "
            "Label Studio's model connection sends it), or `Authorization: Bearer <token>`",
            headers=CHALLENGE,
        )
    return user


Caller = Annotated[User, Depends(label_studio_user)]


@dataclass(frozen=True)
class Backend:
    """What a Label Studio connection talks to: a server, and the project its annotations
    go to (None for a server's URL: the one project of the server the caller is in)."""

    server_id: str
    project_id: int | None
    user: User


async def server_backend(ctx: Ctx, user: Caller, server_id: str) -> Backend:
    """`/ml/{server_id}`: 404 for an unknown server, 403 without a role in a project using
    it; the permission is cached as for `servers.predict`."""
    await servers.check_server_use(ctx, user, server_id)
    return Backend(server_id, None, user)


def project_backend(ctx: Ctx, user: Caller, project_id: Id) -> Backend:
    """`/ml/projects/{project_id}`: the caller needs a role in the project, which needs a
    server with its current configuration (the ready one, if several)."""
    require_role(ctx, user, project_id, READ)
    config = ctx.store.current_config(project_id)
    candidates = [
        s
        for s in ctx.store.list_servers(project_id=project_id)
        if config is not None and s.config_hash == config.config_hash
    ]
    if not candidates:
        raise InvalidState(
            f"project {project_id} has no server with its current configuration; deploy it "
            f"first (POST /projects/{project_id}/deploy)"
        )
    server = min(candidates, key=lambda s: s.status != ServerStatus.READY)
    return Backend(server.id, project_id, user)


# -- the server's configuration, paired with Label Studio's ------------------------------


@dataclass(frozen=True)
class ServerSchema:
    config_hash: str
    labeling_config: str
    rule_labels: frozenset[str]


_schemas: dict[str, ServerSchema] = {}
"""By server id, never stale: a server keeps its configuration for life (a restore
redeploys the same one) and ids are not reused. A server deleted since is found out by the
calls that reach it (health, predict)."""
MAX_SCHEMAS = 1000


def _read_schema(ctx: Context, server_id: str) -> ServerSchema:
    """The server's labeling config and rule labels, from the store (it blocks)."""
    server = ctx.store.get_server(server_id)
    if server.deleted_at is not None:
        raise NotFound(f"server {server_id!r} was deleted")
    rules = server.config.get("rules", [])
    schema = ServerSchema(
        server.config_hash,
        server.config["labeling_config"],
        frozenset(r["label"] for r in rules if isinstance(r, dict) and "label" in r),
    )
    if len(_schemas) >= MAX_SCHEMAS:
        _schemas.clear()
    _schemas[server_id] = schema
    return schema


async def server_schema(ctx: Context, server_id: str) -> ServerSchema:
    return _schemas.get(server_id) or await run_in_threadpool(_read_schema, ctx, server_id)


@lru_cache(maxsize=256)
def _pairing(ours: str, rule_labels: frozenset[str], theirs: str) -> SchemaMatch:
    """Parsed once per pair of configs: Label Studio sends the same one with every call."""
    return match(parse_labeling_config(ours), parse_labeling_config(theirs), rule_labels)


def served(schema: ServerSchema, label_config: str | None) -> SchemaMatch:
    """The pairing of the server's config with Label Studio's (its own without one); 422
    naming each control or label Label Studio's lacks."""
    pairing = _pairing(
        schema.labeling_config, schema.rule_labels, label_config or schema.labeling_config
    )
    if pairing.problems:
        raise ConfigError(pairing.problems)
    return pairing


# -- request and answer bodies, as Label Studio sends and reads them ----------------------


class Foreign(BaseModel):
    """Label Studio's bodies carry more than we read, and more with each release."""

    model_config = ConfigDict(extra="ignore")


class Health(BaseModel):
    status: str = Field(examples=["UP"])
    model_class: str = Field(description="what serves: preannotate and the server id")


class SetupRequest(Foreign):
    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    label_config: str = Field(alias="schema", description="the project's labeling config XML")
    project: Any = Field(None, description="Label Studio's `<id>.<created timestamp>`; unused")
    hostname: Any = Field(None, description="Label Studio's address; unused")
    access_token: Any = Field(None, description="unused: nothing is fetched from Label Studio")
    extra_params: Any = Field(None, description="unused")


class SetupAnswer(BaseModel):
    model_version: str = Field(description="the server's configuration hash")


class PredictParams(Foreign):
    context: Any = Field(
        None, description="interactive pre-annotation's context: accepted, not used yet"
    )


class PredictTasks(Foreign):
    tasks: list[dict[str, Any]] = Field(max_length=MAX_TASKS)
    label_config: str | None = Field(None, description="the project's labeling config XML")
    project: Any = Field(None, description="Label Studio's `<id>.<created timestamp>`; unused")
    model_version: Any = Field(None, description="unused: the server's is answered")
    params: PredictParams | None = None


class TaskResult(BaseModel):
    result: list[dict[str, Any]]
    score: float | None
    model_version: str
    error: str | None = Field(None, description="why the task got no prediction")


class PredictAnswer(BaseModel):
    results: list[TaskResult] = Field(description="one per task, in order")


class LabelStudioTask(Foreign):
    id: StrictInt | None = None
    data: dict[str, Any] | None = None


class Annotation(Foreign):
    id: StrictInt | None = None
    result: list[dict[str, Any]] = []
    was_cancelled: StrictBool = False


class LabelStudioProject(Foreign):
    id: StrictInt | None = None
    label_config: str | None = None


class WebhookEvent(Foreign):
    action: str
    project: LabelStudioProject | None = None
    task: LabelStudioTask | None = None
    annotation: Annotation | None = None


class WebhookAnswer(BaseModel):
    status: str = Field(examples=["ok", "Unknown event"])
    result: dict[str, Any] | None = None


# -- what the routes do -------------------------------------------------------------------


async def health(ctx: Ctx, backend: Backend) -> Health:
    """UP once the server is ready (503 while it deploys or loads)."""
    if backend.server_id not in ctx.handles:
        await run_in_threadpool(servers.ready_handle, ctx, backend.server_id)
    return Health(status="UP", model_class=f"preannotate {backend.server_id}")


async def setup(ctx: Ctx, backend: Backend, request: SetupRequest) -> SetupAnswer:
    """Check that the server can serve Label Studio's labeling config."""
    schema = await server_schema(ctx, backend.server_id)
    served(schema, request.label_config)
    return SetupAnswer(model_version=schema.config_hash)


async def predict(ctx: Ctx, backend: Backend, request: PredictTasks) -> PredictAnswer:
    """One result per task, in order, under Label Studio's names, by the interactive lane;
    a task without the fields the server reads gets an empty result and its `error`."""
    schema = await server_schema(ctx, backend.server_id)
    pairing = served(schema, request.label_config)
    results: list[TaskResult | None] = [None] * len(request.tasks)
    sendable: list[tuple[int, dict[str, Any]]] = []
    for row, task in enumerate(request.tasks):
        try:
            data = pairing.server_data(task_data(task))
        except ValueError as problem:
            results[row] = _failed(str(problem), schema.config_hash)
            continue
        sendable.append((row, {"id": task.get("id"), "data": data}))
    size = MAX_INTERACTIVE_TASKS
    slices = [sendable[start : start + size] for start in range(0, len(sendable), size)]
    answers = await asyncio.gather(
        *(
            servers.predict(
                ctx,
                backend.user,
                backend.server_id,
                PredictRequest(tasks=[task for _, task in part]),
            )
            for part in slices
        )
    )
    for part, answer in zip(slices, answers, strict=True):
        for (row, _), prediction in zip(part, answer["predictions"], strict=True):
            results[row] = _result(prediction, pairing, schema.config_hash)
    return PredictAnswer(results=[r for r in results if r is not None])


def _failed(error: str, model_version: str) -> TaskResult:
    return TaskResult(result=[], score=None, model_version=model_version, error=error)


def _result(prediction: dict[str, Any], pairing: SchemaMatch, model_version: str) -> TaskResult:
    if "error" in prediction:
        return _failed(prediction["error"], model_version)
    return TaskResult(
        result=[pairing.to_label_studio(item) for item in prediction["result"]],
        score=prediction["score"],
        model_version=prediction["model_version"],
    )


def webhook(ctx: Ctx, backend: Backend, event: WebhookEvent, response: Response) -> WebhookAnswer:
    """Annotations become completions of the project's task with the same document (a new
    task if none has it); START_TRAINING trains on the project's completions."""
    if event.action in ANNOTATION_EVENTS:
        project_id = linked_project(ctx, backend)
        require_role(ctx, backend.user, project_id, READ)
        return WebhookAnswer(status="ok", result=store_annotation(ctx, backend, project_id, event))
    if event.action == TRAINING_EVENT:
        project_id = linked_project(ctx, backend)
        spec = training_spec(ctx, project_id)
        job = jobs.train(ctx, backend.user, project_id, spec)
        return WebhookAnswer(status="ok", result=job)
    response.status_code = 200
    return WebhookAnswer(status="Unknown event")


def linked_project(ctx: Context, backend: Backend) -> int:
    """The project a connection's annotations and training go to: the project's own, or
    the one project using the server that the caller has a role in."""
    if backend.project_id is not None:
        return backend.project_id
    roles = caller_roles(ctx, backend.user)
    server = ctx.store.get_server(backend.server_id)
    projects = [p for p in server.project_ids if roles is None or p in roles]
    if len(projects) != 1:
        serves = ", ".join(map(str, projects)) or "none"
        raise InvalidState(
            f"{backend.server_id} serves projects {serves} of yours; connect Label Studio to "
            "/ml/projects/<id> of the project its annotations should go to"
        )
    return projects[0]


def _project_labeling(ctx: Context, project_id: int) -> str:
    config = ctx.store.current_config(project_id)
    if config is None:
        raise InvalidState(f"project {project_id} has no configuration yet; set one first")
    return config.config["labeling_config"]


def store_annotation(
    ctx: Context, backend: Backend, project_id: int, event: WebhookEvent
) -> dict[str, Any]:
    """The annotation as a completion by the caller, under the configuration's names."""
    annotation, task = event.annotation, event.task
    if annotation is None or task is None or task.data is None:
        raise InvalidInput(
            f"the {event.action} event has no annotation or no task with its data; turn on "
            "'Send payload' for the webhook in Label Studio"
        )
    if annotation.was_cancelled:
        return {"stored": False, "reason": "the annotation was cancelled (a skipped task)"}
    ours = _project_labeling(ctx, project_id)
    theirs = event.project.label_config if event.project else None
    pairing = _pairing(ours, frozenset(), theirs or ours)
    try:  # named as Label Studio's task names it, before the store checks it by our names
        pairing.server_data(task.data)
    except ValueError as exc:
        raise InvalidInput(f"the annotated task: {exc}") from None
    completion, created = ctx.store.complete_document(
        project_id,
        pairing.project_data(task.data),
        list(pairing.fields),
        [pairing.to_project(item) for item in annotation.result],
        created_by=backend.user.id,
    )
    return {
        "stored": True,
        "project_id": project_id,
        "task_id": completion.task_id,
        "task_created": created,
        "completion_id": completion.id,
    }


def training_spec(ctx: Context, project_id: int) -> TrainingSpec:
    """What Label Studio's "Start Training" trains: NER when the configuration has a
    `<Labels>` control, else classification, under the project's name (in the characters
    a model name may have); `POST /projects/{id}/train` takes every other setting."""
    labeling = parse_labeling_config(_project_labeling(ctx, project_id))
    kind = "ner" if any(c.kind == "labels" for c in labeling.labels) else "classification"
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", ctx.store.get_project(project_id).name)
    return TrainingSpec(kind=kind, model_name=name.lstrip("_.-")[:100] or f"project{project_id}")


# -- the routes, under both base URLs ---------------------------------------------------


def _add_routes(base: str, backend: Callable[..., Any], what: str, *codes: int) -> None:
    """The four calls under `base`, whose `backend` answers `codes` besides 401."""
    Connection = Annotated[Backend, Depends(backend)]
    found = errors(*codes) | UNAUTHORIZED

    async def health_route(ctx: Ctx, connection: Connection) -> Health:
        return await health(ctx, connection)

    async def setup_route(ctx: Ctx, connection: Connection, request: SetupRequest) -> SetupAnswer:
        return await setup(ctx, connection, request)

    async def predict_route(
        ctx: Ctx, connection: Connection, request: PredictTasks
    ) -> PredictAnswer:
        return await predict(ctx, connection, request)

    def webhook_route(
        ctx: Ctx, connection: Connection, event: WebhookEvent, response: Response
    ) -> WebhookAnswer:
        return webhook(ctx, connection, event, response)

    for path in ("/health", "/"):
        router.add_api_route(
            base + path,
            health_route,
            methods=["GET"],
            summary=f"Health of {what}",
            description=health.__doc__,
            responses=found | errors(409, 503),  # 409: the scheduler is not running
            include_in_schema=path == "/health",
        )
    router.add_api_route(
        base + "/setup",
        setup_route,
        methods=["POST"],
        summary=f"Check a Label Studio labeling config against {what}",
        description=setup.__doc__,
        responses=found | MISMATCH,
    )
    router.add_api_route(
        base + "/predict",
        predict_route,
        methods=["POST"],
        summary=f"Predict Label Studio tasks with {what}",
        description=predict.__doc__,
        responses=found | MISMATCH | errors(409, 503),
        response_model_exclude_unset=True,
    )
    router.add_api_route(
        base + "/webhook",
        webhook_route,
        methods=["POST"],
        status_code=201,
        summary=f"Label Studio's events for {what}",
        description=webhook.__doc__,
        responses=found | errors(400, 409) | MISMATCH | {200: {"model": WebhookAnswer}},
        response_model_exclude_unset=True,
    )


_add_routes("/ml/projects/{project_id}", project_backend, "a project's server", 403, 404, 409)
_add_routes("/ml/{server_id}", server_backend, "a server", 403, 404)
