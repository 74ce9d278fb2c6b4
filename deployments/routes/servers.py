"""The Clusters page (servers) and interactive predictions.

`predict` is the interactive lane and stays on the event loop: with a cached token and a
cached server handle it asks neither the store nor the scheduler, and what it must ask
(a role, a server not seen yet) goes to the thread pool. The other routes are plain `def`
(see `context`).
"""

from typing import Any

import ray
from fastapi import APIRouter, HTTPException
from pydantic import BaseModel, Field
from ray import serve
from ray.serve.exceptions import RayServeException
from ray.serve.handle import DeploymentHandle
from starlette.concurrency import run_in_threadpool

from preannotate.deployments.routes.context import MANAGE, READ, Context, Ctx, CurrentUser
from preannotate.store import NotFound, ServerStatus
from preannotate.store.models import User

router = APIRouter(tags=["servers"])
MAX_INTERACTIVE_TASKS = 100


class ServerNotReady(Exception):
    """The server exists but is still deploying or loading; the caller should retry."""


class PredictRequest(BaseModel):
    tasks: list[dict[str, Any]] = Field(
        min_length=1,
        max_length=MAX_INTERACTIVE_TASKS,
        description='tasks as `{"id": ..., "data": {"text": ...}}`',
    )


def _require_server_role(ctx: Context, user: User, server_id: str, allowed: set[str]) -> None:
    """Servers belong to the projects using them: a role in any of them is enough (admins
    need none). It asks the store: call it off the event loop."""
    if user.is_admin:
        return
    server = ctx.store.get_server(server_id)
    if any(ctx.store.role_of(user.id, p) in allowed for p in server.project_ids):
        return
    needed = " or ".join(sorted(allowed))
    raise HTTPException(403, f"user '{user.name}' is not {needed} of a project using {server_id}")


def _ready_handle(ctx: Context, server_id: str) -> DeploymentHandle:
    """The handle of a ready server, asking the store and the scheduler (it blocks), and
    cached for the next calls."""
    server = ctx.store.get_server(server_id)
    if server.deleted_at is not None:
        raise NotFound(f"server {server_id!r} was deleted")
    info = ray.get(ctx.scheduler.get_server.remote(server_id))
    if info["status"] != ServerStatus.READY:
        raise ServerNotReady(
            f"server {server_id!r} is {info['status']}, not ready"
            + (f": {info['message']}" if info.get("message") else "; retry shortly")
        )
    handle = serve.get_app_handle(server_id)
    ctx.handles[server_id] = handle
    return handle


@router.get("/servers")
def list_servers(ctx: Ctx, _: CurrentUser) -> list[dict[str, Any]]:
    """The Clusters page: every server with its configuration, status and resources."""
    return ray.get(ctx.scheduler.list_servers.remote())


@router.get("/servers/{server_id}")
def get_server(ctx: Ctx, _: CurrentUser, server_id: str) -> dict[str, Any]:
    return ray.get(ctx.scheduler.get_server.remote(server_id))


@router.delete("/servers/{server_id}")
def delete_server(ctx: Ctx, user: CurrentUser, server_id: str) -> dict[str, Any]:
    """Delete a server: its replicas, resources and license tokens are freed at once; jobs
    running on it end as cancelled."""
    _require_server_role(ctx, user, server_id, MANAGE)
    ctx.handles.pop(server_id, None)
    return ray.get(ctx.scheduler.delete_server.remote(server_id))


@router.post("/servers/{server_id}/predict")
async def predict(
    ctx: Ctx, user: CurrentUser, server_id: str, request: PredictRequest
) -> dict[str, Any]:
    """Pre-annotate a few tasks now: the interactive lane, which bulk jobs do not queue."""
    if not user.is_admin:  # admins need no role: spare them the trip to the thread pool
        await run_in_threadpool(_require_server_role, ctx, user, server_id, READ)
    handle = ctx.handles.get(server_id)
    if handle is None:
        handle = await run_in_threadpool(_ready_handle, ctx, server_id)
    try:
        predictions = await handle.predict.remote(request.tasks)
    except RayServeException as exc:
        ctx.handles.pop(server_id, None)
        raise NotFound(f"server {server_id!r} is not available: {exc}") from None
    return {"server_id": server_id, "predictions": predictions}
