"""What every route needs: the store, the hub, the scheduler, and who is calling.

Roles (per project): Owners and Managers configure, deploy, delete servers, pre-annotate
and train; Annotators read tasks and predictions and create completions. Admins may do
everything. No token is 401, a token without the role is 403.
"""

import time
from dataclasses import dataclass, field
from typing import Annotated, Any

from fastapi import Depends, Header, HTTPException
from ray.serve.handle import DeploymentHandle

from preannotate.hub.catalog import Hub
from preannotate.scheduler.actor import find_scheduler
from preannotate.store import InvalidState, Role, Store
from preannotate.store.models import User

TOKEN_CACHE_S = 30.0
TOKEN_CACHE_SIZE = 10_000
MANAGE = {Role.OWNER.value, Role.MANAGER.value}
READ = MANAGE | {Role.ANNOTATOR.value}


@dataclass
class Context:
    store: Store
    hub: Hub
    handles: dict[str, DeploymentHandle] = field(default_factory=dict)
    """Handles of servers seen ready; dropped on delete or when a call finds them gone."""
    users: dict[str, tuple[float, User | None]] = field(default_factory=dict)
    """Token -> (when looked up, user): the interactive lane skips the database."""

    def user_for_token(self, token: str) -> User | None:
        now = time.monotonic()
        cached = self.users.get(token)
        if cached is None or now - cached[0] > TOKEN_CACHE_S:
            if len(self.users) > TOKEN_CACHE_SIZE:
                self.users.clear()
            cached = self.users[token] = (now, self.store.user_for_token(token))
        return cached[1]

    @property
    def scheduler(self) -> Any:
        scheduler = find_scheduler()
        if scheduler is None:
            raise InvalidState("the scheduler is not running; start it with `preannotate up`")
        return scheduler


_current: list[Context] = []


def install(ctx: Context) -> None:
    """Called once by the router replica; routes reach it through `Depends(context)`."""
    _current[:] = [ctx]


def context() -> Context:
    return _current[0]


def current_user(
    ctx: Annotated[Context, Depends(context)],
    authorization: Annotated[str | None, Header()] = None,
) -> User:
    scheme, _, token = (authorization or "").partition(" ")
    user = ctx.user_for_token(token) if scheme.lower() == "bearer" and token else None
    if user is None:
        raise HTTPException(
            401,
            "a valid API token is required (header `Authorization: Bearer <token>`)",
            headers={"WWW-Authenticate": "Bearer"},
        )
    return user


Ctx = Annotated[Context, Depends(context)]
CurrentUser = Annotated[User, Depends(current_user)]


def require_role(ctx: Context, user: User, project_id: int, allowed: set[str]) -> None:
    """403 unless the user is an admin or has one of `allowed` roles in the project."""
    ctx.store.get_project(project_id)
    if user.is_admin:
        return
    role = ctx.store.role_of(user.id, project_id)
    if role not in allowed:
        needed = " or ".join(sorted(allowed))
        has = f"is {role}" if role else "has no role"
        raise HTTPException(
            403, f"user '{user.name}' {has} in project {project_id}; this needs {needed}"
        )
