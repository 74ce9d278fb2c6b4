"""Which controls a page offers: the API's own role checks, asked as yes/no questions, so
a page never offers what the API would refuse."""

from fastapi import HTTPException

from preannotate.deployments.routes.context import MANAGE, Context, require_role
from preannotate.deployments.routes.servers import require_server_control
from preannotate.store.models import User


def manages_project(ctx: Context, user: User, project_id: int) -> bool:
    """Owner, Manager or admin: may deploy, import and pre-annotate. Blocks (the store)."""
    try:
        require_role(ctx, user, project_id, MANAGE)
    except HTTPException:
        return False
    return True


def controls_server(ctx: Context, user: User, server_id: str) -> bool:
    """Owner or Manager of every project using the server, or admin: may delete it."""
    try:
        require_server_control(ctx, user, server_id)
    except HTTPException:
        return False
    return True
