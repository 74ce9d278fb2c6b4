"""Tasks: import, list, prediction versions and their comparison, completions, export.

Every route but the import is a plain `def` (see `context`). The import is async only to
read the request body as it arrives; writing it to the spool, the role check and the
import's transaction run in the thread pool, so even a 100k-task import leaves the event
loop free for interactive predictions.
"""

import email.message
import json
import tempfile
from collections.abc import Iterator
from typing import IO, Annotated, Any, Literal

from fastapi import APIRouter, Query, Request
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, model_validator
from starlette.concurrency import run_in_threadpool

from preannotate.deployments.routes import resources
from preannotate.deployments.routes.context import (
    MANAGE,
    MAX_ID,
    READ,
    BodyId,
    Context,
    Ctx,
    CurrentUser,
    Id,
    require_role,
)
from preannotate.deployments.routes.errors import errors
from preannotate.deployments.routes.json_body import JsonBodyRoute
from preannotate.store import AddedTasks, InvalidInput
from preannotate.store.tasks_io import text_stream

router = APIRouter(tags=["tasks"], route_class=JsonBodyRoute)
SPOOL_BYTES = 8 << 20
MAX_UPLOAD_NAME = 200
CONTENT_FORMATS = {
    "application/json": "json",
    "application/x-ndjson": "jsonl",
    "application/jsonl": "jsonl",
    "text/csv": "csv",
}
TASKS_BODY = {
    "required": True,
    "content": {
        "application/json": {"schema": {"type": "array", "items": {"type": "object"}}},
        **{
            content_type: {"schema": {"type": "string"}}
            for content_type, fmt in CONTENT_FORMATS.items()
            if fmt != "json"
        },
    },
}
"""The import reads its body as a stream, so FastAPI cannot document it from a model."""


class CompletionRequest(BaseModel):
    """Either an editable copy of a prediction, or a result written by the annotator."""

    from_prediction: BodyId | None = None
    result: list[dict[str, Any]] | None = None

    @model_validator(mode="after")
    def _one_source(self) -> "CompletionRequest":
        if (self.from_prediction is None) == (self.result is None):
            raise ValueError("give exactly one of 'from_prediction' and 'result'")
        return self


def _task_project(ctx: Context, task_id: int) -> int:
    return ctx.store.get_task(task_id).project_id


def _import_spool(
    ctx: Context, project_id: int, spool: IO[bytes], fmt: str, name: str
) -> AddedTasks:
    """Import the spooled request body, all or nothing, in one transaction."""
    spool.seek(0)
    return ctx.store.import_tasks(project_id, text_stream(spool), fmt, name)


def _upload_name(request: Request) -> str:
    """What import errors call the body: the file name a client gives in the
    `Content-Disposition` header (`filename` or `filename*`), else "request body"."""
    header = email.message.Message()
    header["content-disposition"] = request.headers.get("content-disposition", "")
    filename = (header.get_filename() or "").replace("\\", "/").rsplit("/", 1)[-1]
    return filename[:MAX_UPLOAD_NAME] if filename.isprintable() and filename else "request body"


@router.post(
    "/projects/{project_id}/tasks",
    status_code=201,
    response_model=resources.AddedTasks,
    responses=errors(400, 401, 403, 404),
    openapi_extra={"requestBody": TASKS_BODY},
)
async def import_tasks(
    ctx: Ctx,
    user: CurrentUser,
    project_id: Id,
    request: Request,
    format: Annotated[Literal["json", "jsonl", "csv"] | None, Query()] = None,
) -> dict[str, Any]:
    """Import tasks from the request body (JSON list, JSONL or CSV), each with its document
    in the fields the project's labeling config pre-annotates (`text`, say),
    all or nothing; the body is spooled to disk, so large imports do not sit in memory.
    Errors name the line and the file given as `Content-Disposition: attachment;
    filename="tasks.jsonl"` (else "request body")."""
    await run_in_threadpool(require_role, ctx, user, project_id, MANAGE)
    content_type = request.headers.get("content-type", "").split(";")[0].strip()
    fmt = format or CONTENT_FORMATS.get(content_type)
    if fmt is None:
        raise InvalidInput(
            "say the format with ?format=json|jsonl|csv or a Content-Type of "
            + ", ".join(CONTENT_FORMATS)
        )
    with tempfile.SpooledTemporaryFile(SPOOL_BYTES) as spool:
        async for chunk in request.stream():
            await run_in_threadpool(spool.write, chunk)  # past SPOOL_BYTES it writes a file
        added = await run_in_threadpool(
            _import_spool, ctx, project_id, spool, fmt, _upload_name(request)
        )
    return {"count": added.count, "first_id": added.first_id, "last_id": added.last_id}


@router.get(
    "/projects/{project_id}/tasks",
    response_model=resources.TaskPage,
    responses=errors(401, 403, 404),
)
def list_tasks(
    ctx: Ctx,
    user: CurrentUser,
    project_id: Id,
    after_id: Annotated[int, Query(ge=0, lt=MAX_ID + 1)] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> dict[str, Any]:
    """A page of tasks with their prediction and completion counts (keyset paging)."""
    require_role(ctx, user, project_id, READ)
    page = ctx.store.task_summaries(project_id, after_id, limit)
    return {
        "tasks": [
            {"id": t.id, "data": t.data, "predictions": t.predictions, "completions": t.completions}
            for t in page
        ],
        "next_after_id": page[-1].id if len(page) == limit else None,
    }


@router.get(
    "/tasks/{task_id}/predictions",
    response_model=list[resources.StoredPrediction],
    responses=errors(401, 403, 404),
)
def predictions(ctx: Ctx, user: CurrentUser, task_id: Id) -> list[dict[str, Any]]:
    """Every prediction version of the task, oldest first (predictions are never edited)."""
    require_role(ctx, user, _task_project(ctx, task_id), READ)
    return [p.as_dict() for p in ctx.store.predictions_for_task(task_id)]


@router.get(
    "/predictions/compare",
    response_model=resources.Comparison,
    responses=errors(400, 401, 403, 404),
)
def compare(ctx: Ctx, user: CurrentUser, a: Id, b: Id) -> dict[str, Any]:
    """What changed from prediction `a` to prediction `b`: added, removed, changed items."""
    for prediction_id in (a, b):
        task_id = ctx.store.get_prediction(prediction_id).task_id
        require_role(ctx, user, _task_project(ctx, task_id), READ)
    return ctx.store.compare_predictions(a, b)


@router.post(
    "/tasks/{task_id}/completions",
    status_code=201,
    response_model=resources.Completion,
    responses=errors(400, 401, 403, 404),
)
def create_completion(
    ctx: Ctx, user: CurrentUser, task_id: Id, body: CompletionRequest
) -> dict[str, Any]:
    """A human annotation; `from_prediction` makes an editable copy of that prediction."""
    require_role(ctx, user, _task_project(ctx, task_id), READ)
    if (
        body.from_prediction is not None
        and ctx.store.get_prediction(body.from_prediction).task_id != task_id
    ):
        raise InvalidInput(
            f"prediction {body.from_prediction} is not a prediction of task {task_id}"
        )
    completion = ctx.store.create_completion(
        task_id, body.result, copied_from=body.from_prediction, created_by=user.id
    )
    return completion.as_dict()


@router.get(
    "/tasks/{task_id}/completions",
    response_model=list[resources.Completion],
    responses=errors(401, 403, 404),
)
def completions(ctx: Ctx, user: CurrentUser, task_id: Id) -> list[dict[str, Any]]:
    require_role(ctx, user, _task_project(ctx, task_id), READ)
    return [c.as_dict() for c in ctx.store.completions_for_task(task_id)]


@router.get("/projects/{project_id}/export", responses=resources.EXPORT | errors(401, 403, 404))
def export(
    ctx: Ctx,
    user: CurrentUser,
    project_id: Id,
    format: Annotated[Literal["generative-ai-lab", "label-studio"], Query()] = "generative-ai-lab",
) -> StreamingResponse:
    """The project as one JSON list of tasks with predictions and completions, streamed."""
    require_role(ctx, user, project_id, READ)
    tasks = ctx.store.export_project(project_id, format)

    def body() -> Iterator[bytes]:  # Starlette iterates a sync body in its thread pool
        yield b"["
        for i, task in enumerate(tasks):
            yield (b"," if i else b"") + json.dumps(task).encode()
        yield b"]"

    return StreamingResponse(body(), media_type="application/json")
