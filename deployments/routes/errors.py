"""The error answers every route documents: one body shape, `{"detail": "<message>"}`.

Routes list the codes they answer with `errors(...)`, so the OpenAPI document names each
one with its body. A 422 also carries `problems` (each one named by its place) when there
are several to report; it replaces FastAPI's own 422 schema, an array of error objects
this API never sends. A deploy or training run the cluster cannot take (409) names
servers that could be deleted to make room.
"""

from typing import Any

from pydantic import BaseModel, Field

from preannotate.hub.catalog import HubError
from preannotate.scheduler.errors import DeployRefused
from preannotate.store import AlreadyExists, InvalidInput, InvalidState, NotFound


class ServerNotReady(Exception):
    """The server exists but is still deploying or loading; the caller should retry."""


STATUS_OF_ERROR: dict[type[Exception], int] = {
    ServerNotReady: 503,
    NotFound: 404,
    AlreadyExists: 409,
    InvalidState: 409,
    DeployRefused: 409,
    InvalidInput: 400,
    HubError: 422,
}
"""The status of each error a caller can fix, for the API and the pages alike."""


class ErrorBody(BaseModel):
    detail: str = Field(description="what went wrong and, where it helps, what to do")


class ProblemsBody(ErrorBody):
    problems: list[str] = Field(
        default_factory=list, description="every problem found, each naming its place"
    )


class RefusedBody(ErrorBody):
    delete_candidates: list[str] = Field(
        default_factory=list,
        description="servers whose deletion would free what is missing, when a refusal "
        "is about room on the cluster",
    )


MEANINGS: dict[int, tuple[type[BaseModel], str]] = {
    400: (ErrorBody, "bad input: the message says what to change"),
    401: (ErrorBody, "no valid API token"),
    403: (ErrorBody, "the caller lacks the role this needs"),
    404: (ErrorBody, "not found"),
    409: (RefusedBody, "not possible in the current state"),
    422: (ProblemsBody, "the request is malformed or the configuration invalid"),
    503: (ErrorBody, "the server is still deploying or loading; retry shortly"),
}


def errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    """The OpenAPI `responses` of the errors a route answers with. Every route that reads
    a parameter or a body answers 422, so list it for those."""
    return {code: {"model": MEANINGS[code][0], "description": MEANINGS[code][1]} for code in codes}
