"""The Clusters page (servers) and interactive predictions.

A server belongs to every project using it (projects with the same configuration share
one). A role in any of them lets a user use the server: see it, predict, run jobs on it;
what they see of it names only the projects they have a role in. Managing it (deleting
it) needs Owner or Manager in every one of them: attaching a project to a shared server
gives its members use of the server, not control over it. Admins may do everything.

`predict` is the interactive lane and stays on the event loop: with a cached token, a
cached permission and a cached server handle it asks neither the store nor the scheduler,
and what it must ask (a role, a server not seen yet) goes to the thread pool. The other
routes are plain `def` (see `context`).
"""

from collections.abc import Collection
from typing import Any

import ray
from fastapi import APIRouter, HTTPException
from ray import serve
from ray.serve.exceptions import RayServeException
from ray.serve.handle import DeploymentHandle
from starlette.concurrency import run_in_threadpool

from preannotate.deployments.access_cache import use_refusal
from preannotate.deployments.routes import resources
from preannotate.deployments.routes.context import (
    MANAGE,
    Context,
    Ctx,
    CurrentUser,
    caller_roles,
    errors,
)
from preannotate.deployments.routes.errors import ServerNotReady
from preannotate.deployments.routes.json_body import JsonBodyRoute
from preannotate.deployments.server_ingress import PredictRequest
from preannotate.store import NotFound, ServerStatus
from preannotate.store.models import User

router = APIRouter(tags=["servers"], route_class=JsonBodyRoute)


def may_control(roles: dict[int, str], project_ids: Collection[int]) -> bool:
    """Owner or Manager of every project using the server (it has some): the caller may
    delete it."""
    return bool(project_ids) and all(roles.get(p) in MANAGE for p in project_ids)


def shown(server: dict[str, Any], roles: dict[int, str] | None) -> dict[str, Any]:
    """A server as the caller may see it: the projects they have no role in are left out."""
    if roles is None:
        return server
    return server | {"projects": [p for p in server["projects"] if p in roles]}


def visible(servers: list[dict[str, Any]], roles: dict[int, str] | None) -> list[dict[str, Any]]:
    """The servers the caller may use, as they may see them (`roles` from `caller_roles`)."""
    return [
        s for s in (shown(server, roles) for server in servers) if roles is None or s["projects"]
    ]


def require_server_use(ctx: Context, user: User, server_id: str) -> None:
    """404 for an unknown server; 403 unless the caller has a role in a project using it
    (admins need none). It asks the store: call it off the event loop."""
    refusal = use_refusal(ctx.store, user, server_id)
    if refusal:
        raise HTTPException(403, refusal)


async def check_server_use(ctx: Context, user: User, server_id: str) -> None:
    """`require_server_use` through the access cache: a permission seen before is answered
    on the event loop, any other in the thread pool and remembered."""
    refusal = await ctx.access.refusal(user, server_id)
    if refusal:
        raise HTTPException(403, refusal)


def require_server_control(ctx: Context, user: User, server_id: str) -> None:
    """404 for an unknown server; 403 unless the caller is Owner or Manager of every
    project using it (admins need no role). The message names no project: the caller may
    have no role in them. It asks the store: call it off the event loop."""
    server = ctx.store.get_server(server_id)
    roles = caller_roles(ctx, user)
    if roles is not None and not may_control(roles, server.project_ids):
        raise HTTPException(
            403,
            f"user '{user.name}' is not owner or manager of every project using {server_id}; "
            "only they or an admin may manage a shared server",
        )


def ready_handle(ctx: Context, server_id: str) -> DeploymentHandle:
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


@router.get("/servers", response_model=list[resources.Server], responses=errors(401, 409))
def list_servers(ctx: Ctx, user: CurrentUser) -> list[dict[str, Any]]:
    """The Clusters page: the servers of the projects the caller has a role in (all of
    them for admins) with their configuration, status and resources."""
    return visible(ray.get(ctx.scheduler.list_servers.remote()), caller_roles(ctx, user))


@router.get(
    "/servers/{server_id}", response_model=resources.Server, responses=errors(401, 403, 404, 409)
)
def get_server(ctx: Ctx, user: CurrentUser, server_id: str) -> dict[str, Any]:
    require_server_use(ctx, user, server_id)
    return shown(ray.get(ctx.scheduler.get_server.remote(server_id)), caller_roles(ctx, user))


@router.delete(
    "/servers/{server_id}", response_model=resources.Server, responses=errors(401, 403, 404, 409)
)
def delete_server(ctx: Ctx, user: CurrentUser, server_id: str) -> dict[str, Any]:
    """Delete a server: its replicas, resources and license tokens are freed at once; jobs
    running on it end as cancelled. Needs Owner or Manager in every project using it."""
    require_server_control(ctx, user, server_id)
    ctx.handles.pop(server_id, None)
    return ray.get(ctx.scheduler.delete_server.remote(server_id))


@router.post(
    "/servers/{server_id}/predict",
    response_model=resources.Predictions,
    response_model_exclude_unset=True,  # a failed task is only its `task_id` and `error`
    responses=errors(401, 403, 404, 409, 503),
)
async def predict(
    ctx: Ctx, user: CurrentUser, server_id: str, request: PredictRequest
) -> dict[str, Any]:
    """Pre-annotate a few tasks now: the interactive lane, which bulk jobs do not queue."""
    await check_server_use(ctx, user, server_id)
    handle = ctx.handles.get(server_id)
    if handle is None:
        handle = await run_in_threadpool(ready_handle, ctx, server_id)
    try:
        predictions = await handle.predict.remote(request.tasks)
    except RayServeException as exc:
        ctx.handles.pop(server_id, None)
        raise NotFound(f"server {server_id!r} is not available: {exc}") from None
    return {"server_id": server_id, "predictions": predictions}
