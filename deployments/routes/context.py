"""What every route needs: the store, the hub, the scheduler, who is calling, ids.

Roles (per project): Owners and Managers configure, deploy, pre-annotate and train;
Annotators read tasks and predictions and create completions. Admins may do everything.
A server belongs to every project using it (`servers.py`): a role in any of them lets a
user use it, managing it needs Owner or Manager in all of them. No token is 401, a token
without the role is 403.

The store, the hub and Ray calls block, and the router's event loop must never wait on
them (an import of 100k tasks would stall every interactive prediction): routes that use
them are plain `def` functions, which FastAPI runs in its thread pool, and so is
`require_role`. Only what is cheap runs on the loop: `context` and a token found in the
access cache, the fast path of `current_user` that every interactive prediction takes.
"""

from dataclasses import dataclass, field
from typing import Annotated, Any

from fastapi import Depends, Header, HTTPException, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import Field, Strict
from ray.serve.handle import DeploymentHandle

from preannotate.deployments.access_cache import TOKEN_REQUIRED, AccessCache, bearer_token
from preannotate.deployments.routes.errors import errors as errors  # where routes look for it
from preannotate.hub.catalog import Hub
from preannotate.scheduler.actor import find_scheduler
from preannotate.store import InvalidState, Role, Store
from preannotate.store.models import User

MANAGE = {Role.OWNER.value, Role.MANAGER.value}
READ = MANAGE | {Role.ANNOTATOR.value}
MAX_ID = 2**63 - 1
"""The largest value the database's integer columns hold."""
Id = Annotated[int, Field(ge=1, lt=MAX_ID + 1, description="an id")]
"""Every id a route takes, in its path, query or body: a larger one is a 422 that says so,
not a database overflow. The bound is exclusive because a JSON Schema checker compares
numbers as floats, and 2**63 - 1 is no float: documented as `maximum`, larger ids would
pass it."""
BodyId = Annotated[Id, Strict()]
"""An id in a JSON body: a number, as the document says, never a string or `true`."""


@dataclass
class Context:
    store: Store
    hub: Hub
    handles: dict[str, DeploymentHandle] = field(default_factory=dict)
    """Handles of servers seen ready; dropped on delete or when a call finds them gone."""
    access: AccessCache = field(init=False)
    """Who each token is and which servers users may use, so interactive predictions skip
    the database; call `access.reread()` after a revocation."""

    def __post_init__(self) -> None:
        self.access = AccessCache(self.store)

    @property
    def scheduler(self) -> Any:
        """The scheduler actor's handle; finding it asks Ray, so use it off the event loop."""
        scheduler = find_scheduler()
        if scheduler is None:
            raise InvalidState("the scheduler is not running; start it with `preannotate up`")
        return scheduler


_current: list[Context] = []


def install(ctx: Context) -> None:
    """Called once by the router replica; routes reach it through `Depends(context)`."""
    _current[:] = [ctx]


async def context() -> Context:
    """Async because it only reads a list: a sync dependency would cost a thread hop."""
    return _current[0]


BEARER = HTTPBearer(
    auto_error=False, description="an API token: header `Authorization: Bearer <token>`"
)
Bearer = Annotated[HTTPAuthorizationCredentials | None, Security(BEARER)]
"""The bearer token sent, if any; declaring it documents the API's security scheme."""


async def current_user(
    ctx: Annotated[Context, Depends(context)],
    authorization: Annotated[str | None, Header(include_in_schema=False)] = None,
    _: Bearer = None,
) -> User:
    """The caller, from `Authorization: Bearer <token>` (the pages pass their cookie's
    token as that header's value); 401 without a valid one. `_` puts the bearer scheme in
    the OpenAPI document."""
    user = await ctx.access.user(bearer_token(authorization))
    if user is None:
        raise HTTPException(401, TOKEN_REQUIRED, headers={"WWW-Authenticate": "Bearer"})
    return user


Ctx = Annotated[Context, Depends(context)]
CurrentUser = Annotated[User, Depends(current_user)]


def require_role(ctx: Context, user: User, project_id: int, allowed: set[str]) -> None:
    """403 unless the user is an admin or has one of `allowed` roles in the project; 404
    for an unknown project. It asks the store: call it off the event loop."""
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


def caller_roles(ctx: Context, user: User) -> dict[int, str] | None:
    """The caller's role in each project, or None for an admin, who sees everything."""
    return None if user.is_admin else ctx.store.roles_of(user.id)
