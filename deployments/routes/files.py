"""Documents: PDFs and images uploaded to a project become its tasks; a predicted page is
drawn as a PNG.

An upload is checked whole before anything is kept (size, what the bytes really are,
encryption, corruption, page count, pixels per page: `annotators/documents.py`), so a bad
file is a 400 naming it and the project is left as it was. Each file becomes one task
whose data names it by hash under the project's `<Image>` key (`store/files.py`); a file
the project already has is answered with the task it is.
Uploading needs the role importing tasks needs; drawing needs the role reading them does.
"""

from dataclasses import replace
from typing import Annotated, Any

from fastapi import APIRouter, File, Query, UploadFile
from fastapi.responses import Response
from pydantic import BaseModel, Field

from preannotate.annotators.documents import (
    DEFAULT_LIMITS,
    DocumentError,
    DocumentLimits,
    inspect_document,
)
from preannotate.annotators.task_pages import rendered_pages
from preannotate.annotators.visual_pipeline import visual_image
from preannotate.configs.labeling import ObjectTag, parse_labeling_config
from preannotate.configs.project import DocumentOptions
from preannotate.deployments.routes.context import (
    MANAGE,
    READ,
    Context,
    Ctx,
    CurrentUser,
    Id,
    require_role,
)
from preannotate.deployments.routes.errors import errors
from preannotate.store import InvalidInput, NotFound
from preannotate.store.files import NewFile

router = APIRouter(tags=["files"])
MAX_FILES = 100
MAX_NAME = 200
PNG = {200: {"description": "the page as a PNG", "content": {"image/png": {}}}}


class ProjectFile(BaseModel):
    id: int
    task_id: int
    sha256: str
    name: str
    kind: str
    size: int
    pages: int


class ProjectFiles(BaseModel):
    files: list[ProjectFile]


class UploadedFile(ProjectFile):
    duplicate: bool = Field(
        False,
        description="the project already had these bytes as a task: that task is answered "
        "(with the name it was first uploaded under) and no second one is made",
    )


class UploadedFiles(BaseModel):
    files: list[UploadedFile]


def _documents(ctx: Context, project_id: int) -> tuple[ObjectTag, DocumentLimits]:
    """The `<Image>` uploads are tasks of (the one the configuration pre-annotates, else
    its only `<Image>`), and the project's document limits."""
    version = ctx.store.current_config(project_id)
    config = version.config if version else {"labeling_config": "<View/>"}
    options = DocumentOptions.model_validate(config.get("documents", {}))
    limits = replace(DEFAULT_LIMITS, **options.model_dump())
    labeling = parse_labeling_config(config["labeling_config"])
    images = [o for o in labeling.objects if o.kind == "image"]
    chosen = visual_image(labeling) or (images[0] if len(images) == 1 else None)
    if chosen is None:
        raise InvalidInput(
            f"project {project_id}'s labeling config needs one <Image> object for files "
            f'(e.g. <Image name="image" value="$image"/>); it has {len(images)}'
        )
    return chosen, limits


def _name(upload: UploadFile, position: int) -> str:
    name = (upload.filename or "").replace("\\", "/").rsplit("/", 1)[-1][:MAX_NAME]
    return name if name and name.isprintable() else f"file {position}"


def _checked(upload: UploadFile, position: int, limits: DocumentLimits) -> NewFile:
    """The upload's bytes, once they passed every check; `InvalidInput` names the file."""
    name = _name(upload, position)
    content = upload.file.read(limits.max_bytes + 1)
    try:
        info = inspect_document(content, name, limits)
    except DocumentError as exc:
        raise InvalidInput(f"{name}: {exc}") from None
    return NewFile(name, info.kind, info.pages, content)


@router.post(
    "/projects/{project_id}/files",
    status_code=201,
    response_model=UploadedFiles,
    responses={
        200: {
            "model": UploadedFiles,
            "description": "the project already had every file: no task was made",
        }
    }
    | errors(400, 401, 403, 404),
)
def upload_files(
    ctx: Ctx,
    user: CurrentUser,
    project_id: Id,
    files: Annotated[list[UploadFile], File(description="PDFs or PNG, JPEG, TIFF images")],
    response: Response,
) -> dict[str, Any]:
    """Upload documents; each becomes a task (one per image, one per PDF with its pages),
    all or nothing. Files are kept by content hash, so the same bytes are stored once, and
    a file the project already has answers with its task (`duplicate`) instead of a new one;
    when every file is one, nothing was created and the answer is 200, not 201."""
    require_role(ctx, user, project_id, MANAGE)
    if len(files) > MAX_FILES:
        raise InvalidInput(f"{len(files)} files in one upload; the limit is {MAX_FILES}")
    image, limits = _documents(ctx, project_id)
    checked = [_checked(upload, i, limits) for i, upload in enumerate(files, 1)]
    stored = ctx.store.add_files(project_id, image.value, image.value_list, checked)
    if all(row.duplicate for row in stored):
        response.status_code = 200
    return {"files": [row.as_dict() for row in stored]}


@router.get(
    "/projects/{project_id}/files",
    response_model=ProjectFiles,
    responses=errors(401, 403, 404),
)
def list_files(ctx: Ctx, user: CurrentUser, project_id: Id) -> dict[str, Any]:
    """The documents uploaded to the project, with the task each became."""
    require_role(ctx, user, project_id, READ)
    return {"files": [row.as_dict() for row in ctx.store.project_files(project_id)]}


@router.get(
    "/projects/{project_id}/tasks/{task_id}/render",
    response_class=Response,
    responses=PNG | errors(400, 401, 403, 404),
)
def render(
    ctx: Ctx,
    user: CurrentUser,
    project_id: Id,
    task_id: Id,
    page: Annotated[int, Query(ge=1, le=100_000, description="the page, from 1")] = 1,
    version: Annotated[int | None, Query(ge=1, le=1_000_000)] = None,
) -> Response:
    """A page of the task's document with the boxes and labels of a prediction version
    (default: the latest) drawn on it."""
    require_role(ctx, user, project_id, READ)
    task = ctx.store.get_task(task_id)
    if task.project_id != project_id:
        raise NotFound(f"task {task_id} is not a task of project {project_id}")
    predictions = ctx.store.predictions_for_task(task_id)
    chosen = [p for p in predictions if version is None or p.version == version]
    if not chosen:
        which = f"version {version}" if version else "any"
        raise NotFound(f"task {task_id} has no prediction ({which})")
    image, limits = _documents(ctx, project_id)
    try:
        [(_, png)] = rendered_pages(image, task.data, chosen[-1].result, limits=limits, page=page)
    except ValueError as exc:
        raise InvalidInput(str(exc)) from None
    return Response(png, media_type="image/png")
