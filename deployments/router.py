"""The HTTP API: a FastAPI ingress on Ray Serve that owns every route.

Routes live in `deployments/routes/`, one module per resource; this module builds the app,
maps the errors a caller can fix to 4xx with a message, and holds the Serve deployment.
No route runs store, hub, file or Ray work on the event loop (`routes/context.py` says
how), so a large import or a slow deploy never stalls interactive predictions.

Every error answer is JSON `{"detail": "<message>"}`: a request that fails validation
gets each problem named by its place (never an echo of the input, which may not even be
JSON), and an error nobody foresaw a 500 whose cause goes to the router's log, not to the
caller. The API docs (`/docs`, `/redoc`) load Swagger UI and ReDoc from files installed
with the package, so they work on a cluster without internet access.
"""

from pathlib import Path
from typing import Any

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import iter_route_contexts
from fastapi_offline import FastAPIOffline
from ray import serve
from starlette.exceptions import HTTPException
from starlette.routing import Match

from preannotate.cluster.ray_cluster import ON_THE_HEAD
from preannotate.configs.errors import ConfigError
from preannotate.deployments.pages import site
from preannotate.deployments.routes import (
    files,
    jobs,
    label_studio,
    metrics,
    projects,
    prompts,
    providers,
    servers,
    tasks,
)
from preannotate.deployments.routes.context import Context, install
from preannotate.deployments.routes.errors import STATUS_OF_ERROR, ProblemsBody
from preannotate.hub.catalog import Hub
from preannotate.scheduler.errors import DeployRefused
from preannotate.store import Store

api = FastAPIOffline(
    title="preannotate",
    summary="Pre-annotation servers on Ray Serve: deploy project configurations, pre-annotate.",
    version="0.1.0",
    # No badge from the online validator: it would send the spec's address out.
    swagger_ui_parameters={"validatorUrl": None},
)
for module in (projects, servers, tasks, files, jobs, providers, prompts):
    api.include_router(module.router)
api.include_router(label_studio.router)  # /ml/...: Label Studio's ML backend protocol
api.include_router(metrics.router)  # /metrics: Prometheus
api.include_router(site.router)  # /ui/...: the web pages

UNEXPECTED = "internal error; the router's log has its cause under this answer's X-Request-Id"


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


@api.exception_handler(RequestValidationError)
async def _invalid_request(_: Request, exc: RequestValidationError) -> JSONResponse:
    problems = [f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()]
    return JSONResponse({"detail": "; ".join(problems), "problems": problems}, status_code=422)


@api.exception_handler(Exception)
async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
    """Starlette would answer in plain text. After this answer it raises the error on, and
    Serve logs it with its traceback and request id in the router replica's log."""
    return JSONResponse({"detail": UNEXPECTED}, status_code=500)


@api.exception_handler(405)
async def _method_not_allowed(request: Request, exc: HTTPException) -> JSONResponse:
    """Starlette's 405 names only the methods of the first route on the path; `Allow`
    lists those of every route on it."""
    allowed = sorted(
        method
        for route in iter_route_contexts(api.router.routes)
        if route.methods and route.matches(request.scope)[0] != Match.NONE
        for method in route.methods
    )
    detail = f"{request.method} is not allowed on {request.url.path}; use {', '.join(allowed)}"
    return JSONResponse({"detail": detail}, status_code=405, headers={"Allow": ", ".join(allowed)})


def _openapi() -> dict[str, Any]:
    """The document, with the 422 this API really sends: FastAPI documents its own body
    (an array of error objects), and a 422 even where nothing documented can be invalid
    (the routes read the `Authorization` header, documented as a security scheme)."""
    if api.openapi_schema is None:
        document = _fastapi_openapi()
        schemas = document["components"]["schemas"]
        for name in ("HTTPValidationError", "ValidationError"):
            schemas.pop(name, None)
        schemas.setdefault("ProblemsBody", ProblemsBody.model_json_schema())
        for operation in (op for path in document["paths"].values() for op in path.values()):
            invalid = operation["responses"].get("422", {})
            if not (operation.get("parameters") or operation.get("requestBody")):
                operation["responses"].pop("422", None)
            elif "HTTPValidationError" in str(invalid.get("content")):
                operation["responses"]["422"] = {
                    "description": "the request is malformed: each problem named",
                    "content": {
                        "application/json": {
                            "schema": {"$ref": "#/components/schemas/ProblemsBody"}
                        }
                    },
                }
        api.openapi_schema = document
    return api.openapi_schema


_fastapi_openapi = api.openapi
api.openapi = _openapi  # type: ignore[method-assign]


@serve.deployment(
    name="router",
    ray_actor_options={"num_cpus": 0, "resources": ON_THE_HEAD},
    max_ongoing_requests=200,
)
@serve.ingress(api)
class Router:
    def __init__(self, database_url: str, hub_root: str):
        store = Store(database_url, create_schema=False)  # `start_control_plane` made it
        install(Context(store, Hub(Path(hub_root))))
