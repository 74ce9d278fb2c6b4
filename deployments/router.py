"""The HTTP API: a FastAPI ingress on Ray Serve that owns every route.

Routes live in `deployments/routes/`, one module per resource; this module builds the app,
maps the errors a caller can fix to 4xx with a message, and holds the Serve deployment.
No route runs store, hub, file or Ray work on the event loop (`routes/context.py` says
how), so a large import or a slow deploy never stalls interactive predictions.
"""

from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from ray import serve

from preannotate.configs.errors import ConfigError
from preannotate.deployments.routes import jobs, projects, servers, tasks
from preannotate.deployments.routes.context import Context, install
from preannotate.deployments.routes.servers import ServerNotReady
from preannotate.hub.catalog import Hub, HubError
from preannotate.scheduler.errors import DeployRefused
from preannotate.store import AlreadyExists, InvalidInput, InvalidState, NotFound, Store

api = FastAPI(
    title="preannotate",
    summary="Pre-annotation servers on Ray Serve: deploy project configurations, pre-annotate.",
    version="0.1.0",
)
for module in (projects, servers, tasks, jobs):
    api.include_router(module.router)

STATUS_OF_ERROR: dict[type[Exception], int] = {
    ServerNotReady: 503,
    NotFound: 404,
    AlreadyExists: 409,
    InvalidState: 409,
    DeployRefused: 409,
    InvalidInput: 400,
    HubError: 422,
}


def _cause(exc: Exception) -> Exception:
    """Errors raised in the scheduler actor arrive wrapped; answer with the original."""
    return getattr(exc, "cause", exc)


@api.exception_handler(ConfigError)
async def _config_error(_: Request, exc: Exception) -> JSONResponse:
    problems = _cause(exc).problems  # type: ignore[attr-defined]
    return JSONResponse({"detail": "; ".join(problems), "problems": problems}, status_code=422)


async def _known_error(_: Request, exc: Exception) -> JSONResponse:
    cause = _cause(exc)
    status = next(code for kind, code in STATUS_OF_ERROR.items() if isinstance(cause, kind))
    body: dict[str, Any] = {"detail": str(cause)}
    if isinstance(cause, DeployRefused):
        body["delete_candidates"] = cause.delete_candidates
    return JSONResponse(body, status_code=status)


for _kind in STATUS_OF_ERROR:
    api.add_exception_handler(_kind, _known_error)


@serve.deployment(name="router", ray_actor_options={"num_cpus": 0.1}, max_ongoing_requests=200)
@serve.ingress(api)
class Router:
    def __init__(self, database_url: str, hub_root: str):
        install(Context(Store(database_url), Hub(Path(hub_root))))
