"""Who is signed in to the pages, and the checks every form post passes.

The API token a user signs in with is kept in a cookie the page scripts cannot read
(HttpOnly) and the browser sends only to requests started from these pages
(SameSite=Strict). The cookie's token is looked up by the API's own `current_user`, so a
rotated or revoked token signs the user out on their next click. Every POST also carries
a CSRF token: an HMAC of the API token, so it is the same on every router replica, changes
with the token and cannot be forged without it.
"""

import hashlib
import hmac
import re
from dataclasses import dataclass
from typing import Annotated
from urllib.parse import parse_qs, quote

from fastapi import Depends, HTTPException, Request

from preannotate.deployments.routes.context import Ctx, current_user
from preannotate.store.models import User

COOKIE = "preannotate_session"
SIGN_IN = "/ui/signin"
CSRF_FIELD = "csrf"
CSRF_HEADER = "X-CSRF-Token"
MAX_FORM_BYTES = 32 << 20
"""A pasted task import is the largest form; the JSON API takes larger files."""


def csrf_for(api_token: str) -> str:
    return hmac.new(api_token.encode(), b"preannotate pages csrf", hashlib.sha256).hexdigest()


@dataclass(frozen=True)
class Visitor:
    """The signed-in user of a page request and the CSRF token its forms carry."""

    user: User
    csrf: str


async def visitor(ctx: Ctx, request: Request) -> Visitor:
    """The signed-in user; anyone else is sent to the sign-in page (htmx follows
    `HX-Redirect`, as a fragment request must not swap the sign-in page into itself)."""
    token = request.cookies.get(COOKIE, "")
    try:
        user = await current_user(ctx, f"Bearer {token}")
    except HTTPException:
        back = quote(request.url.path, safe="/")
        target = f"{SIGN_IN}?next={back}"
        if request.headers.get("HX-Request"):
            raise HTTPException(401, "sign in again", headers={"HX-Redirect": target}) from None
        raise HTTPException(303, "sign in first", headers={"Location": target}) from None
    return Visitor(user, csrf_for(token))


SignedIn = Annotated[Visitor, Depends(visitor)]

Form = dict[str, list[str]]


async def posted_form(request: Request, who: SignedIn) -> Form:
    """The url-encoded form of a POST whose CSRF token (field or header) is the visitor's;
    a post without it is refused before anything is read or changed."""
    body = await request.body()
    if len(body) > MAX_FORM_BYTES:
        raise HTTPException(413, f"the form is larger than {MAX_FORM_BYTES >> 20} MiB")
    form = parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True)
    sent = request.headers.get(CSRF_HEADER) or first(form, CSRF_FIELD)
    if not hmac.compare_digest(sent.encode(), who.csrf.encode()):
        raise HTTPException(403, "the form's CSRF token is missing or stale; reload the page")
    return form


PostedForm = Annotated[Form, Depends(posted_form)]


def first(form: Form, name: str, default: str = "") -> str:
    return form.get(name, [default])[0]


ID_TEXT = re.compile(r"[0-9]{1,19}")
"""An id as a form posts it: ASCII digits (`str.isdigit` also takes "²", which `int`
refuses), no more than the largest id has, so `int` always reads it; a route's `Id`
then bounds its value."""


def form_ids(form: Form, name: str) -> list[int]:
    """The ids posted under `name`; anything else is left out."""
    return [int(value) for value in form.get(name, []) if ID_TEXT.fullmatch(value)]


def safe_next(target: str) -> str:
    """Where to go after signing in: only a page of this site, never another host."""
    return target if target.startswith("/ui/") and not target.startswith("/ui//") else "/ui/"
