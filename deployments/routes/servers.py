"""The Clusters page (servers) and interactive predictions."""

import asyncio
from typing import Any

from fastapi import APIRouter, HTTPException
from pydantic import BaseModel, Field
from ray import serve
from ray.serve.exceptions import RayServeException
from ray.serve.handle import DeploymentHandle

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
    """Servers belong to the projects using them: a role in any of them is enough."""
    if user.is_admin:
        return
    server = ctx.store.get_server(server_id)
    if any(ctx.store.role_of(user.id, p) in allowed for p in server.project_ids):
        return
    needed = " or ".join(sorted(allowed))
    raise HTTPException(403, f"user '{user.name}' is not {needed} of a project using {server_id}")


async def server_handle(ctx: Context, server_id: str) -> DeploymentHandle:
    """The cached handle of a ready server; the store and scheduler are asked only once."""
    handle = ctx.handles.get(server_id)
    if handle is not None:
        return handle
    server = ctx.store.get_server(server_id)
    if server.deleted_at is not None:
        raise NotFound(f"server {server_id!r} was deleted")
    info = await ctx.scheduler.get_server.remote(server_id)
    if info["status"] != ServerStatus.READY:
        raise ServerNotReady(
            f"server {server_id!r} is {info['status']}, not ready"
            + (f": {info['message']}" if info.get("message") else "; retry shortly")
        )
    handle = await asyncio.to_thread(serve.get_app_handle, server_id)
    ctx.handles[server_id] = handle
    return handle


@router.get("/servers")
async def list_servers(ctx: Ctx, _: CurrentUser) -> list[dict[str, Any]]:
    """The Clusters page: every server with its configuration, status and resources."""
    return await ctx.scheduler.list_servers.remote()


@router.get("/servers/{server_id}")
async def get_server(ctx: Ctx, _: CurrentUser, server_id: str) -> dict[str, Any]:
    return await ctx.scheduler.get_server.remote(server_id)


@router.delete("/servers/{server_id}")
async def delete_server(ctx: Ctx, user: CurrentUser, server_id: str) -> dict[str, Any]:
    """Delete a server: its replicas, resources and license tokens are freed at once; jobs
    running on it end as cancelled."""
    _require_server_role(ctx, user, server_id, MANAGE)
    ctx.handles.pop(server_id, None)
    return await ctx.scheduler.delete_server.remote(server_id)


@router.post("/servers/{server_id}/predict")
async def predict(
    ctx: Ctx, user: CurrentUser, server_id: str, request: PredictRequest
) -> dict[str, Any]:
    """Pre-annotate a few tasks now: the interactive lane, which bulk jobs do not queue."""
    _require_server_role(ctx, user, server_id, READ)
    handle = await server_handle(ctx, server_id)
    try:
        predictions = await handle.predict.remote(request.tasks)
    except RayServeException as exc:
        ctx.handles.pop(server_id, None)
        raise NotFound(f"server {server_id!r} is not available: {exc}") from None
    return {"server_id": server_id, "predictions": predictions}
