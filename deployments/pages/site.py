"""The pages' router: sign-in and sign-out, the static files, and every page under `/ui/`.

The router includes it with one line; the pages are plain `def` functions like the API's
routes (see `routes/context.py`), so FastAPI runs their store and Ray work in its thread
pool, off the event loop that interactive predictions use.
"""

import hmac
import secrets
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


SIGN_IN_COOKIE = "preannotate_signin"
"""The sign-in form's own CSRF token: nobody is signed in yet, so it is a random value
in a cookie that only this site's pages send (SameSite=Strict) and in the form, which
must match. A form posted from another site carries no such cookie, so it cannot sign
the visitor into the sender's account (whose projects would then get their uploads)."""
SIGN_IN_FORM_S = 3600


def sign_in_form(
    request: Request, target: str, status: int = 200, problem: str = ""
) -> HTMLResponse:
    """The sign-in page, with its CSRF token in the form and in the cookie (a fresh one
    unless the browser holds one)."""
    csrf = request.cookies.get(SIGN_IN_COOKIE) or secrets.token_urlsafe(32)
    response = page("signin.html", None, status, next=target, problem=problem, csrf=csrf)
    response.set_cookie(
        SIGN_IN_COOKIE,
        csrf,
        max_age=SIGN_IN_FORM_S,
        path=SIGN_IN,
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )
    return response


@router.get("/signin", response_class=HTMLResponse)
def sign_in_page(request: Request, next: Next = "/ui/") -> Response:
    return sign_in_form(request, safe_next(next))


@router.post("/signin", response_class=HTMLResponse)
async def sign_in(ctx: Ctx, request: Request) -> Response:
    """Check the form's CSRF token and the API token, then keep the API token in the
    session cookie."""
    form = parse_qs((await request.body())[:8192].decode("utf-8", "replace"))
    token, target = first(form, "token").strip(), safe_next(first(form, "next", "/ui/"))
    expected = request.cookies.get(SIGN_IN_COOKIE, "")
    if not expected or not hmac.compare_digest(first(form, "csrf").encode(), expected.encode()):
        problem = "The sign-in form did not come from this site, or it expired; sign in again."
        return sign_in_form(request, target, 403, problem)
    try:
        await current_user(ctx, f"Bearer {token}")
    except HTTPException:
        return sign_in_form(request, target, 401, "That API token is not valid.")
    response = see(target)
    response.delete_cookie(SIGN_IN_COOKIE, path=SIGN_IN, httponly=True, samesite="strict")
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
