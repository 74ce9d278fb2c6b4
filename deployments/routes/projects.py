"""Health, the Models Hub, users, tokens and roles, projects and their configurations,
deploys.

Taking access away (a user deleted, a token rotated, a member removed) re-reads the access
epoch at once, so this replica's cache forgets the old access before the answer goes out
(and the other replicas within `access_cache.EPOCH_CHECK_S`)."""

from typing import Any

import ray
from fastapi import APIRouter, HTTPException
from pydantic import BaseModel, Field, StrictBool

from preannotate.configs.project import ProjectConfig, parse_project_config
from preannotate.deployments.routes import resources
from preannotate.deployments.routes.context import (
    MANAGE,
    READ,
    BodyId,
    Ctx,
    CurrentUser,
    Id,
    caller_roles,
    errors,
    require_role,
)
from preannotate.deployments.routes.json_body import JsonBodyRoute
from preannotate.deployments.routes.refusals import for_caller, refusals_for
from preannotate.deployments.routes.servers import shown, visible
from preannotate.hub.catalog import HubModel
from preannotate.hub.validation import validate_config
from preannotate.hub.versions import version_number
from preannotate.store import NotFound, Role
from preannotate.store.models import User

router = APIRouter(route_class=JsonBodyRoute)


class ConfigUpdate(ProjectConfig):
    name: str | None = None  # type: ignore[assignment]


class NewUser(BaseModel):
    name: str = Field(min_length=1, max_length=200)
    is_admin: StrictBool = False


class Member(BaseModel):
    user_id: BodyId
    role: Role


def project_json(ctx: Ctx, project_id: int) -> dict[str, Any]:
    project = ctx.store.get_project(project_id)
    config = ctx.store.current_config(project_id)
    return {
        "id": project.id,
        "name": project.name,
        "created_at": project.created_at.isoformat(),
        "config_version": config.version if config else None,
        "config_hash": config.config_hash if config else None,
    }


def _save_config(ctx: Ctx, project_id: int, config: ProjectConfig) -> dict[str, Any]:
    validated = validate_config(config, ctx.hub)
    ctx.store.set_config(project_id, config.model_dump(), validated.hash)
    return project_json(ctx, project_id)


@router.get("/health", tags=["cluster"], response_model=resources.ClusterHealth)
def health(ctx: Ctx) -> dict[str, Any]:
    return {"status": "UP", "servers": len(ctx.store.list_servers())}


@router.get(
    "/models", tags=["hub"], response_model=list[resources.HubModelEntry], responses=errors(401)
)
def models(ctx: Ctx, user: CurrentUser) -> list[dict[str, Any]]:
    """The Models Hub, with each model's predefined labels."""
    roles = caller_roles(ctx, user)
    return [hub_entry(m, roles) for m in ctx.hub.models()]


PROJECT_PROVENANCE = ("source_project", "job_id")
"""What a trained model's `training` says of the project it was trained on: shown only to
members of that project (and admins); its labels and metrics are the hub's for all."""


def hub_entry(model: HubModel, roles: dict[int, str] | None) -> dict[str, Any]:
    """A hub model as the caller may see it (`roles`: `caller_roles`)."""
    entry = model.manifest.model_dump() | {"builtin": model.builtin}
    training = entry.get("training") or {}
    if roles is not None and training.get("source_project") not in roles:
        entry["training"] = {k: v for k, v in training.items() if k not in PROJECT_PROVENANCE}
    return entry


@router.get(
    "/models/{name}",
    tags=["hub"],
    response_model=resources.ModelVersions,
    responses=errors(401, 404),
)
def model_versions(ctx: Ctx, user: CurrentUser, name: str) -> dict[str, Any]:
    """A model and its trained versions (`<name>_v1`, `_v2`, ...) with their metrics."""
    roles = caller_roles(ctx, user)
    found = [
        (number, m)
        for m in ctx.hub.models()
        if (number := -1 if m.name == name else version_number(m.name, name)) is not None
    ]
    found.sort(key=lambda pair: pair[0])  # the base model, then its versions in order
    versions = [hub_entry(m, roles) for _, m in found]
    if not versions:
        raise NotFound(f"no model named {name!r} or {name}_v<n> in the Models Hub")
    return {"name": name, "versions": versions}


@router.get("/me", tags=["users"], response_model=resources.User, responses=errors(401))
async def me(user: CurrentUser) -> dict[str, Any]:
    return {"id": user.id, "name": user.name, "is_admin": user.is_admin}


def _require_admin(user: User, what: str) -> None:
    if not user.is_admin:
        raise HTTPException(403, f"user '{user.name}' is not an admin; only admins {what}")


@router.post(
    "/users",
    status_code=201,
    tags=["users"],
    response_model=resources.NewUserAnswer,
    responses=errors(401, 403, 409),
)
def create_user(ctx: Ctx, user: CurrentUser, new: NewUser) -> dict[str, Any]:
    """Create a user and their first API token (shown this once). Admins only."""
    _require_admin(user, "create users")
    created = ctx.store.create_user(new.name, is_admin=new.is_admin)
    token = ctx.store.issue_token(created.id)
    return {"id": created.id, "name": created.name, "is_admin": created.is_admin, "token": token}


@router.delete(
    "/users/{user_id}",
    tags=["users"],
    response_model=resources.DeletedUser,
    responses=errors(401, 403, 404, 409),
)
def delete_user(ctx: Ctx, user: CurrentUser, user_id: Id) -> dict[str, Any]:
    """Delete a user: their tokens fail from the next request on and their roles are gone;
    their completions keep naming them. Admins only; the last admin cannot be deleted."""
    _require_admin(user, "delete users")
    deleted = ctx.store.delete_user(user_id)
    ctx.access.reread()
    return deleted.as_dict()


@router.post(
    "/users/{user_id}/tokens",
    status_code=201,
    tags=["users"],
    response_model=resources.Token,
    responses=errors(401, 403, 404),
)
def rotate_token(ctx: Ctx, user: CurrentUser, user_id: Id) -> dict[str, Any]:
    """A new API token for the user (shown this once); every earlier one of theirs fails
    from the next request on. Users rotate their own, admins anyone's."""
    if user_id != user.id:
        _require_admin(user, "rotate another user's token")
    token = ctx.store.rotate_token(user_id)
    ctx.access.reread()
    return {"user_id": user_id, "token": token}


@router.put(
    "/projects/{project_id}/members",
    tags=["users"],
    response_model=resources.Membership,
    responses=errors(401, 403, 404),
)
def set_member(ctx: Ctx, user: CurrentUser, project_id: Id, member: Member) -> dict[str, Any]:
    """Give a user a role in the project (Owners and admins)."""
    require_role(ctx, user, project_id, {Role.OWNER.value})
    ctx.store.set_role(member.user_id, project_id, member.role.value)
    return {"user_id": member.user_id, "project_id": project_id, "role": member.role.value}


@router.delete(
    "/projects/{project_id}/members/{user_id}",
    tags=["users"],
    response_model=resources.Membership,
    responses=errors(401, 403, 404),
)
def remove_member(ctx: Ctx, user: CurrentUser, project_id: Id, user_id: Id) -> dict[str, Any]:
    """Take a user's role in the project away, from their next request on (Owners and
    admins)."""
    require_role(ctx, user, project_id, {Role.OWNER.value})
    ctx.store.remove_member(user_id, project_id)
    ctx.access.reread()
    return {"user_id": user_id, "project_id": project_id, "role": None}


@router.post(
    "/projects",
    status_code=201,
    tags=["projects"],
    response_model=resources.Project,
    responses=errors(401, 409),
)
def create_project(ctx: Ctx, user: CurrentUser, config: ProjectConfig) -> dict[str, Any]:
    """Create a project with its configuration, the caller as its Owner: all or nothing,
    so a refused configuration leaves no project behind."""
    validated = validate_config(config, ctx.hub)
    project = ctx.store.create_project(
        config.name, owner_id=user.id, config=(config.model_dump(), validated.hash)
    )
    return project_json(ctx, project.id)


@router.get(
    "/projects", tags=["projects"], response_model=list[resources.Project], responses=errors(401)
)
def list_projects(ctx: Ctx, user: CurrentUser) -> list[dict[str, Any]]:
    """The projects the caller has a role in (all of them for admins)."""
    roles = caller_roles(ctx, user)
    visible = [p for p in ctx.store.list_projects() if roles is None or p.id in roles]
    return [project_json(ctx, p.id) for p in visible]


@router.get(
    "/projects/{project_id}",
    tags=["projects"],
    response_model=resources.Project,
    responses=errors(401, 403, 404),
)
def get_project(ctx: Ctx, user: CurrentUser, project_id: Id) -> dict[str, Any]:
    require_role(ctx, user, project_id, READ)
    return project_json(ctx, project_id)


@router.put(
    "/projects/{project_id}/config",
    tags=["projects"],
    response_model=resources.Project,
    responses=errors(401, 403, 404, 409),
)
def set_config(ctx: Ctx, user: CurrentUser, project_id: Id, update: ConfigUpdate) -> dict[str, Any]:
    """Replace the configuration (validated first: 422 with every problem found)."""
    require_role(ctx, user, project_id, MANAGE)
    project = ctx.store.get_project(project_id)
    data = update.model_dump() | {"name": update.name or project.name}
    return _save_config(ctx, project_id, parse_project_config(data))


@router.post(
    "/projects/{project_id}/deploy",
    status_code=202,
    tags=["servers"],
    response_model=resources.Server,
    responses=errors(401, 403, 404, 409),
)
def deploy(ctx: Ctx, user: CurrentUser, project_id: Id) -> dict[str, Any]:
    """Deploy the project's configuration (or share a server that has it: the project's
    members may then use it, not manage it); 409 with what is missing and which servers
    could be deleted when the cluster cannot take it."""
    require_role(ctx, user, project_id, MANAGE)
    with refusals_for(ctx, user):
        server = ray.get(ctx.scheduler.deploy.remote(project_id))
    return shown(server, caller_roles(ctx, user))


@router.get(
    "/projects/{project_id}/preannotate/options",
    tags=["servers"],
    response_model=resources.PreannotateOptions,
    responses=errors(401, 403, 404, 409),
)
def preannotate_options(ctx: Ctx, user: CurrentUser, project_id: Id) -> dict[str, Any]:
    """What the Pre-Annotate dialog shows: the servers with the project's configuration
    that the caller may use, and whether one can be deployed."""
    require_role(ctx, user, project_id, MANAGE)
    options = ray.get(ctx.scheduler.preannotate_options.remote(project_id))
    roles = caller_roles(ctx, user)
    reason, candidates = for_caller(
        ctx, roles, options["reason"] or "", options["delete_candidates"]
    )
    return options | {
        "servers": visible(options["servers"], roles),
        "reason": reason or None,
        "delete_candidates": candidates,
    }
