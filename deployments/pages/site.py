"""The pages' router: sign-in and sign-out, the static files, and every page under `/ui/`.

The router includes it with one line; the pages are plain `def` functions like the API's
routes (see `routes/context.py`), so FastAPI runs their store and Ray work in its thread
pool, off the event loop that interactive predictions use.
"""

from typing import Annotated
from urllib.parse import parse_qs

from fastapi import APIRouter, HTTPException, Query, Request
from fastapi.responses import FileResponse, HTMLResponse, Response

from preannotate.deployments.pages import clusters, projects, tasks
from preannotate.deployments.pages.render import page, see, static_file
from preannotate.deployments.pages.session import COOKIE, SIGN_IN, first, safe_next
from preannotate.deployments.routes.context import Ctx, current_user

router = APIRouter(prefix="/ui", include_in_schema=False)
for module in (projects, tasks, clusters):
    router.include_router(module.router)

SESSION_S = 12 * 3600
"""How long the sign-in cookie lives; the token itself may be revoked sooner."""
Next = Annotated[str, Query(max_length=2000)]


@router.get("/", response_class=HTMLResponse)
def home() -> Response:
    return see("/ui/projects")


@router.get("/signin", response_class=HTMLResponse)
def sign_in_page(next: Next = "/ui/") -> Response:
    return page("signin.html", None, next=safe_next(next), problem="")


@router.post("/signin", response_class=HTMLResponse)
async def sign_in(ctx: Ctx, request: Request) -> Response:
    """Check the API token, then keep it in the session cookie. Nothing is signed in yet,
    so there is no CSRF token to check: the form only ever signs its sender in."""
    form = parse_qs((await request.body())[:8192].decode("utf-8", "replace"))
    token, target = first(form, "token").strip(), safe_next(first(form, "next", "/ui/"))
    try:
        await current_user(ctx, f"Bearer {token}")
    except HTTPException:
        return page("signin.html", None, 401, next=target, problem="That API token is not valid.")
    response = see(target)
    response.set_cookie(
        COOKIE,
        token,
        max_age=SESSION_S,
        path="/ui",
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )
    return response


@router.post("/signout", response_class=HTMLResponse)
def sign_out() -> Response:
    """Forget the cookie. Signing out needs no CSRF token: the worst a forged one can do
    is sign the user out."""
    response = see(SIGN_IN)
    response.delete_cookie(COOKIE, path="/ui", httponly=True, samesite="strict")
    return response


@router.get("/static/{name}")
def static(name: str) -> FileResponse:
    path = static_file(name)
    if path is None:
        raise HTTPException(404, f"no static file {name!r}")
    return FileResponse(path, headers={"Cache-Control": "public, max-age=3600"})
