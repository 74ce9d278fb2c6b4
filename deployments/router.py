"""The HTTP API: a FastAPI ingress on Ray Serve that owns every route.

It reads and writes projects in the store, asks the scheduler actor for every deploy and
delete, and calls model servers through cached Serve handles. Errors a caller can fix come
back as 4xx with a message; the cluster keeps serving.
"""

import asyncio
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from ray import serve
from ray.serve.exceptions import RayServeException
from ray.serve.handle import DeploymentHandle

from cluster.servers import DeployRefused
from configs.errors import ConfigError
from configs.project import ProjectConfig, parse_project_config
from configs.validation import validate_config
from hub.catalog import Hub, HubError
from scheduler.actor import find_scheduler
from store import AlreadyExists, InvalidInput, InvalidState, NotFound, ServerStatus, Store

MAX_INTERACTIVE_TASKS = 100

api = FastAPI(
    title="preannotate",
    summary="Pre-annotation servers on Ray Serve: deploy project configurations, predict.",
    version="0.1.0",
)


class ServerNotReady(Exception):
    """The server exists but is still deploying or loading; the caller should retry."""


STATUS_OF_ERROR: dict[type[Exception], int] = {
    ServerNotReady: 503,
    NotFound: 404,
    AlreadyExists: 409,
    InvalidState: 409,
    DeployRefused: 409,
    InvalidInput: 400,
    HubError: 422,
}


def _cause(exc: Exception) -> Exception:
    """Errors raised in the scheduler actor arrive wrapped; answer with the original."""
    return getattr(exc, "cause", exc)


@api.exception_handler(ConfigError)
async def _config_error(_: Request, exc: Exception) -> JSONResponse:
    problems = _cause(exc).problems  # type: ignore[attr-defined]
    return JSONResponse({"detail": "; ".join(problems), "problems": problems}, status_code=422)


async def _known_error(_: Request, exc: Exception) -> JSONResponse:
    cause = _cause(exc)
    status = next(code for kind, code in STATUS_OF_ERROR.items() if isinstance(cause, kind))
    body: dict[str, Any] = {"detail": str(cause)}
    if isinstance(cause, DeployRefused):
        body["delete_candidates"] = cause.delete_candidates
    return JSONResponse(body, status_code=status)


for _kind in STATUS_OF_ERROR:
    api.add_exception_handler(_kind, _known_error)


class ConfigUpdate(ProjectConfig):
    name: str | None = None  # type: ignore[assignment]


class PredictRequest(BaseModel):
    tasks: list[dict[str, Any]] = Field(
        min_length=1,
        max_length=MAX_INTERACTIVE_TASKS,
        description='tasks as `{"id": ..., "data": {"text": ...}}`',
    )


def _project_json(store: Store, project_id: int) -> dict[str, Any]:
    project = store.get_project(project_id)
    config = store.current_config(project_id)
    return {
        "id": project.id,
        "name": project.name,
        "created_at": project.created_at.isoformat(),
        "config_version": config.version if config else None,
        "config_hash": config.config_hash if config else None,
    }


@serve.deployment(name="router", ray_actor_options={"num_cpus": 0.1}, max_ongoing_requests=200)
@serve.ingress(api)
class Router:
    def __init__(self, database_url: str, hub_root: str):
        self.store = Store(database_url)
        self.hub = Hub(Path(hub_root))
        self.handles: dict[str, DeploymentHandle] = {}
        """Handles of servers seen ready; dropped on delete or when a call finds them gone."""

    @property
    def scheduler(self) -> Any:
        scheduler = find_scheduler()
        if scheduler is None:
            raise InvalidState(
                "the scheduler is not running; start the cluster with `preannotate up`"
            )
        return scheduler

    def _save_config(self, project_id: int, config: ProjectConfig) -> dict[str, Any]:
        validated = validate_config(config, self.hub)
        self.store.set_config(project_id, config.model_dump(), validated.hash)
        return _project_json(self.store, project_id)

    @api.get("/health")
    async def health(self) -> dict[str, Any]:
        return {"status": "UP", "servers": len(self.store.list_servers())}

    @api.get("/models")
    async def models(self) -> list[dict[str, Any]]:
        """The Models Hub, with each model's predefined labels."""
        return [m.manifest.model_dump() | {"builtin": m.builtin} for m in self.hub.models()]

    @api.post("/projects", status_code=201)
    async def create_project(self, config: ProjectConfig) -> dict[str, Any]:
        """Create a project with its configuration (validated first: 422 with the problems)."""
        validate_config(config, self.hub)
        project = self.store.create_project(config.name)
        return self._save_config(project.id, config)

    @api.get("/projects")
    async def list_projects(self) -> list[dict[str, Any]]:
        return [_project_json(self.store, p.id) for p in self.store.list_projects()]

    @api.get("/projects/{project_id}")
    async def get_project(self, project_id: int) -> dict[str, Any]:
        return _project_json(self.store, project_id)

    @api.put("/projects/{project_id}/config")
    async def set_config(self, project_id: int, update: ConfigUpdate) -> dict[str, Any]:
        """Replace the configuration; an identical one keeps its version."""
        project = self.store.get_project(project_id)
        data = update.model_dump() | {"name": update.name or project.name}
        return self._save_config(project_id, parse_project_config(data))

    @api.post("/projects/{project_id}/deploy", status_code=202)
    async def deploy(self, project_id: int) -> dict[str, Any]:
        """Deploy the project's configuration (or share a server that has it); 409 with what
        is missing and which servers could be deleted when the cluster cannot take it."""
        self.store.get_project(project_id)
        return await self.scheduler.deploy.remote(project_id)

    @api.get("/projects/{project_id}/preannotate/options")
    async def preannotate_options(self, project_id: int) -> dict[str, Any]:
        """What the Pre-Annotate dialog shows: usable servers, and whether one can be deployed."""
        self.store.get_project(project_id)
        return await self.scheduler.preannotate_options.remote(project_id)

    @api.get("/servers")
    async def list_servers(self) -> list[dict[str, Any]]:
        """The Clusters page."""
        return await self.scheduler.list_servers.remote()

    @api.get("/servers/{server_id}")
    async def get_server(self, server_id: str) -> dict[str, Any]:
        return await self.scheduler.get_server.remote(server_id)

    @api.delete("/servers/{server_id}")
    async def delete_server(self, server_id: str) -> dict[str, Any]:
        """Delete a server: its replicas, resources and license tokens are freed at once."""
        self._forget(server_id)
        return await self.scheduler.delete_server.remote(server_id)

    def _forget(self, server_id: str) -> None:
        self.handles.pop(server_id, None)

    async def _handle(self, server_id: str) -> DeploymentHandle:
        """The cached handle of a ready server; the store and scheduler are asked only once."""
        handle = self.handles.get(server_id)
        if handle is not None:
            return handle
        server = self.store.get_server(server_id)
        if server.deleted_at is not None:
            raise NotFound(f"server {server_id!r} was deleted")
        info = await self.scheduler.get_server.remote(server_id)
        if info["status"] != ServerStatus.READY:
            raise ServerNotReady(
                f"server {server_id!r} is {info['status']}, not ready"
                + (f": {info['message']}" if info.get("message") else "; retry shortly")
            )
        handle = await asyncio.to_thread(serve.get_app_handle, server_id)
        self.handles[server_id] = handle
        return handle

    @api.post("/servers/{server_id}/predict")
    async def predict(self, server_id: str, request: PredictRequest) -> dict[str, Any]:
        """Pre-annotate a few tasks now (the interactive lane; bulk work goes through jobs)."""
        handle = await self._handle(server_id)
        try:
            predictions = await handle.predict.remote(request.tasks)
        except RayServeException as exc:
            self._forget(server_id)
            raise NotFound(f"server {server_id!r} is not available: {exc}") from None
        return {"server_id": server_id, "predictions": predictions}
