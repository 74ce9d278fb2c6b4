"""Templates, the vendored static files, and the errors a page shows instead of raising.

The pages call the API's route functions, which raise what the API answers as 4xx; here
those become a message on the page with the same status code, so a refused action reads
the same in the browser as over HTTP.
"""

from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

from fastapi import HTTPException
from fastapi.responses import HTMLResponse, RedirectResponse
from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape
from pydantic import ValidationError

from preannotate.configs.errors import ConfigError
from preannotate.deployments.pages.session import CSRF_HEADER, Visitor
from preannotate.deployments.routes import errors as routes_errors

HERE = Path(__file__).resolve().parent
STATIC = HERE / "static"
HTMX = "htmx-2.0.11.min.js"
"""The vendored htmx (0BSD, `static/htmx-LICENSE.txt`), pinned by its file name."""
STATIC_TYPES = {".js": "text/javascript", ".css": "text/css", ".txt": "text/plain"}

STATUS_OF_ERROR = {**routes_errors.STATUS_OF_ERROR, ConfigError: 422, ValidationError: 422}
PAGE_ERRORS = (HTTPException, *STATUS_OF_ERROR)
"""What a caller can fix or must be told; anything else is the router's 500."""


class PageError(Exception):
    def __init__(self, status: int, problems: list[str]):
        super().__init__("; ".join(problems))
        self.status = status
        self.problems = problems


def problem_of(exc: Exception) -> PageError:
    """A route's error as the status and messages a page shows (Ray wraps what the
    scheduler raises; its `cause` is the original)."""
    cause = getattr(exc, "cause", exc)
    if isinstance(cause, HTTPException):
        return PageError(cause.status_code, [str(cause.detail)])
    if isinstance(cause, ConfigError):
        return PageError(422, list(cause.problems))
    if isinstance(cause, ValidationError):
        return PageError(
            422, [f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in cause.errors()]
        )
    status = next(code for kind, code in STATUS_OF_ERROR.items() if isinstance(cause, kind))
    return PageError(status, [str(cause)])


T = TypeVar("T")


def attempt(action: Callable[[], T]) -> T:
    """Run a route function; what it refuses becomes a PageError."""
    try:
        return action()
    except PAGE_ERRORS as exc:
        raise problem_of(exc) from None


def _when(value: str | datetime | None) -> str:
    """An ISO time as "2025-03-12 10:04:05 UTC", to the second."""
    if value is None:
        return "—"
    moment = datetime.fromisoformat(value) if isinstance(value, str) else value
    return moment.strftime("%Y-%m-%d %H:%M:%S UTC")


def _amount(value: float, key: str) -> str:
    """A resource amount as people read it: memory in MiB, counts without trailing zeros."""
    return f"{value / 2**20:g} MiB" if key == "memory" else f"{value:g}"


templates = Environment(
    loader=FileSystemLoader(HERE / "templates"),
    autoescape=select_autoescape(["html"]),
    undefined=StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)
templates.filters |= {"when": _when, "amount": _amount}
templates.globals |= {"htmx": HTMX, "csrf_header": CSRF_HEADER}


def page(template: str, who: Visitor | None, status: int = 200, **values: Any) -> HTMLResponse:
    """A rendered page or fragment; every template sees the visitor as `who`."""
    html = templates.get_template(template).render(who=who, **values)
    return HTMLResponse(html, status_code=status)


def error_page(who: Visitor | None, error: PageError) -> HTMLResponse:
    return page("error.html", who, error.status, problems=error.problems)


def see(url: str) -> RedirectResponse:
    """After a successful form post: the browser loads `url` (post/redirect/get)."""
    return RedirectResponse(url, status_code=303)


def static_file(name: str) -> Path | None:
    """A file of `static/` by its bare name, or None (no paths, no other folders)."""
    path = STATIC / name
    if "/" in name or name.startswith(".") or path.suffix not in STATIC_TYPES:
        return None
    return path if path.is_file() else None
