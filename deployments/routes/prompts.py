"""The shared prompt library over HTTP: zero-shot and external LLM prompts, reused by any
project's configuration (`configs/prompts.py`).

Any signed-in user reads the library; admins, and users who are Owner or Manager in at
least one project (those who configure projects), add to it. A changed prompt under a name
already in the library gets the next version, so configurations deployed with the old one
keep their hash until they are validated again. Only its author or an admin may change a
prompt: every project naming it runs its next version.
"""

from typing import Any

from fastapi import APIRouter, HTTPException

from preannotate.configs.prompts import Prompt, PromptLibrary, PromptTaken
from preannotate.deployments.routes.context import MANAGE, Ctx, CurrentUser, errors
from preannotate.deployments.routes.json_body import JsonBodyRoute
from preannotate.store.models import User

router = APIRouter(tags=["prompts"], route_class=JsonBodyRoute)


def require_configurer(ctx: Ctx, user: User) -> None:
    """403 unless the caller is an admin or an Owner or Manager of some project."""
    if user.is_admin or set(ctx.store.roles_of(user.id).values()) & MANAGE:
        return
    raise HTTPException(
        403,
        f"user '{user.name}' is no Owner or Manager of any project; adding prompts needs "
        "that role in at least one project, or an admin",
    )


@router.post("/prompts", status_code=201, response_model=Prompt, responses=errors(401, 403, 422))
def add_prompt(ctx: Ctx, user: CurrentUser, prompt: Prompt) -> dict[str, Any]:
    """Add a prompt to the library, or a new version of one of the caller's (the answer has
    its version); changing another user's prompt is a 403."""
    require_configurer(ctx, user)
    try:
        added = PromptLibrary().add(prompt, by=None if user.is_admin else user.id)
    except PromptTaken as exc:
        raise HTTPException(403, str(exc)) from None
    return added.model_dump()


@router.get("/prompts", response_model=list[Prompt], responses=errors(401))
def list_prompts(_: CurrentUser) -> list[dict[str, Any]]:
    """Every prompt in the library, by name."""
    return [p.model_dump() for p in PromptLibrary().prompts()]
