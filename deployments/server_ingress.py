"""A server's own HTTP ingress: `POST /servers/{id}/predict`, answered by its replicas.

Through the router an interactive prediction crosses two replicas (HTTP, the router's
FastAPI app, a deployment handle, the model replica), and the handle hop alone cost more
than the model takes for a sentence. So each server's Serve application owns the route
prefix `/servers/{id}/predict`, and Serve's ingress (HAProxy or its Python proxy, both
longest prefix first) sends those requests straight to the server's replicas. They check
the token and the role as the router does, through the same store and the same kind of
cache (`access_cache`), and answer as the router's route would: the same body and the
same errors. The router keeps the route for the OpenAPI document and for the moments a
server's application has no route: still deploying (503) or deleted (404).
"""

import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from pydantic import BaseModel, Field, ValidationError
from starlette.requests import Request
from starlette.responses import Response

from preannotate.deployments.access_cache import TOKEN_REQUIRED, AccessCache, bearer_token
from preannotate.store import InvalidInput, NotFound, standard_json

MAX_INTERACTIVE_TASKS = 100
UNEXPECTED = "internal error; the server's replica log has its cause"
log = logging.getLogger("ray.serve")

Predict = Callable[[list[dict[str, Any]]], Awaitable[list[dict[str, Any]]]]


class PredictRequest(BaseModel):
    tasks: list[dict[str, Any]] = Field(
        min_length=1,
        max_length=MAX_INTERACTIVE_TASKS,
        description='tasks as `{"id": ..., "data": {"text": ...}}`',
    )


def predict_route(server_id: str) -> str:
    """The route prefix of a server's application."""
    return f"/servers/{server_id}/predict"


def problems_of(error: ValidationError, place: str) -> list[str]:
    """Each problem named by its place, as the router's 422 names them (`body.tasks`)."""
    return [".".join(map(str, (place, *e["loc"]))) + f": {e['msg']}" for e in error.errors()]


def answer(status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> Response:
    return Response(json.dumps(body), status, headers, media_type="application/json")


def refusal(status: int, detail: str, headers: dict[str, str] | None = None) -> Response:
    return answer(status, {"detail": detail}, headers)


class PredictIngress:
    """What a server's replica answers on its route: the router's `predict`, without it."""

    def __init__(self, server_id: str, access: AccessCache):
        self.server_id = server_id
        self.route = predict_route(server_id)
        self.access = access

    async def respond(self, request: Request, predict: Predict) -> Response:
        try:
            return await self._respond(request, predict)
        except NotFound as exc:
            return refusal(404, str(exc))
        except Exception:
            log.exception("predict on %s failed", self.server_id)
            return refusal(500, UNEXPECTED)

    async def _respond(self, request: Request, predict: Predict) -> Response:
        path = request.url.path
        if path.rstrip("/") != self.route:
            return refusal(404, "Not Found")
        if request.method != "POST":
            detail = f"{request.method} is not allowed on {path}; use POST"
            return refusal(405, detail, {"Allow": "POST"})
        user = await self.access.user(bearer_token(request.headers.get("authorization")))
        if user is None:
            return refusal(401, TOKEN_REQUIRED, {"WWW-Authenticate": "Bearer"})
        denied = await self.access.refusal(user, self.server_id)
        if denied:
            return refusal(403, denied)
        try:
            body = PredictRequest.model_validate(
                standard_json.parse(await request.body(), "request body")
            )
        except InvalidInput as exc:
            return refusal(422, str(exc))
        except ValidationError as exc:
            problems = problems_of(exc, "body")
            return answer(422, {"detail": "; ".join(problems), "problems": problems})
        predictions = await predict(body.tasks)
        return answer(200, {"server_id": self.server_id, "predictions": public(predictions)})


def public(predictions: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Predictions as the API documents them: a job's LLM usage is for its totals only."""
    return [{k: v for k, v in p.items() if k != "usage"} for p in predictions]
