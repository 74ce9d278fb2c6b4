"""What every route needs: the store, the hub, the scheduler, and who is calling.

Roles (per project): Owners and Managers configure, deploy, delete servers, pre-annotate
and train; Annotators read tasks and predictions and create completions. Admins may do
everything. No token is 401, a token without the role is 403.

The store, the hub and Ray calls block, and the router's event loop must never wait on
them (an import of 100k tasks would stall every interactive prediction): routes that use
them are plain `def` functions, which FastAPI runs in its thread pool, and so is
`require_role`. Only what is cheap runs on the loop: `context` and a token found in the
cache, the fast path of `current_user` that every interactive prediction takes.
"""

import threading
import time
from dataclasses import dataclass, field
from typing import Annotated, Any

from fastapi import Depends, Header, HTTPException
from ray.serve.handle import DeploymentHandle
from starlette.concurrency import run_in_threadpool

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
    """Token -> (when looked up, user): the interactive lane skips the database. Read on
    the event loop and written from the thread pool, always under `users_lock`."""
    users_lock: threading.Lock = field(default_factory=threading.Lock)
    """Held for one dict operation at a time, never around the store, so the loop never
    waits on it for long."""

    def _cached(self, token: str) -> tuple[float, User | None] | None:
        """The cache entry of a token looked up less than TOKEN_CACHE_S ago."""
        with self.users_lock:
            entry = self.users.get(token)
        return entry if entry and time.monotonic() - entry[0] <= TOKEN_CACHE_S else None

    def known_user(self, token: str) -> User | None:
        """The user of a token found in the cache, else None; never asks the store, so the
        event loop may call it."""
        entry = self._cached(token)
        return entry[1] if entry else None

    def user_for_token(self, token: str) -> User | None:
        """The user of a token (None for an unknown one), from the cache or else the store:
        it blocks, so call it off the event loop. Two threads missing the same token both
        ask the store; the answers are the same, so the later write is harmless."""
        entry = self._cached(token)
        if entry is not None:
            return entry[1]
        user = self.store.user_for_token(token)
        with self.users_lock:
            if len(self.users) >= TOKEN_CACHE_SIZE:
                self.users.clear()
            self.users[token] = (time.monotonic(), user)
        return user

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


async def current_user(
    ctx: Annotated[Context, Depends(context)],
    authorization: Annotated[str | None, Header()] = None,
) -> User:
    """The caller: a cached token is answered on the event loop, any other is looked up in
    the store in the thread pool."""
    scheme, _, token = (authorization or "").partition(" ")
    user = None
    if scheme.lower() == "bearer" and token:
        user = ctx.known_user(token) or await run_in_threadpool(ctx.user_for_token, token)
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
