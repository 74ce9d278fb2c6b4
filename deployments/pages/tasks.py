"""The Tasks page with its Pre-Annotate dialog and live job progress, and the Task page
(prediction versions, compare, completion from a prediction)."""

import io
from typing import Annotated

from fastapi import APIRouter, HTTPException, Query
from fastapi.responses import HTMLResponse, Response

from preannotate.deployments.pages.access import manages_project
from preannotate.deployments.pages.render import PageError, attempt, error_page, page, see
from preannotate.deployments.pages.session import PostedForm, SignedIn, first, form_ids
from preannotate.deployments.routes import jobs as jobs_api
from preannotate.deployments.routes import projects as projects_api
from preannotate.deployments.routes import tasks as tasks_api
from preannotate.deployments.routes.context import MANAGE, MAX_ID, Ctx, Id, require_role
from preannotate.store import JobState

router = APIRouter()
PAGE_SIZE = 50
FORMATS = ("jsonl", "json", "csv")
AfterId = Annotated[int, Query(ge=0, le=MAX_ID)]
Count = Annotated[int | None, Query(ge=0)]
PredictionId = Annotated[int | None, Query(ge=1, le=MAX_ID)]
FINISHED = {JobState.SUCCEEDED.value, JobState.FAILED.value, JobState.CANCELLED.value}


def _tasks_page(
    ctx: Ctx, who: SignedIn, project_id: int, after_id: int, message: str = "", status: int = 200
) -> Response:
    try:
        project = attempt(lambda: projects_api.get_project(ctx, who.user, project_id))
        listing = attempt(
            lambda: tasks_api.list_tasks(ctx, who.user, project_id, after_id, PAGE_SIZE)
        )
    except PageError as error:
        return error_page(who, error)
    return page(
        "tasks.html",
        who,
        status,
        project=project,
        tasks=listing["tasks"],
        after_id=after_id,
        next_after_id=listing["next_after_id"],
        manages=manages_project(ctx, who.user, project_id),
        shown=ctx.store.document_fields(project_id).shown,
        formats=FORMATS,
        message=message,
    )


@router.get("/projects/{project_id}/tasks", response_class=HTMLResponse)
def tasks_page(
    ctx: Ctx, who: SignedIn, project_id: Id, after_id: AfterId = 0, imported: Count = None
) -> Response:
    message = f"Imported {imported} tasks." if imported is not None else ""
    return _tasks_page(ctx, who, project_id, after_id, message)


@router.post("/projects/{project_id}/tasks", response_class=HTMLResponse)
def import_tasks(ctx: Ctx, who: SignedIn, project_id: Id, form: PostedForm) -> Response:
    """Import pasted (or file-read) tasks, all or nothing, as the JSON API does; then the
    browser loads the Tasks page anew, so reloading it imports nothing twice."""
    fmt = first(form, "format")
    name = first(form, "filename").strip() or "pasted tasks"

    def run() -> int:
        require_role(ctx, who.user, project_id, MANAGE)
        if fmt not in FORMATS:
            raise HTTPException(400, f"format must be one of {', '.join(FORMATS)}, not {fmt!r}")
        source = io.StringIO(first(form, "tasks"))
        return ctx.store.import_tasks(project_id, source, fmt, name[:200]).count

    try:
        count = attempt(run)
    except PageError as error:
        return _tasks_page(ctx, who, project_id, 0, "; ".join(error.problems), error.status)
    return see(f"/ui/projects/{project_id}/tasks?imported={count}")


def _dialog(ctx: Ctx, who: SignedIn, project_id: int, refused: PageError | None) -> Response:
    """The dialog's body; `refused` is what the caller's last action got, shown on top with
    its status (htmx swaps 4xx answers too: see `base.html`)."""
    problems, status = (refused.problems, refused.status) if refused else ([], 200)
    try:
        options = attempt(lambda: projects_api.preannotate_options(ctx, who.user, project_id))
    except PageError as error:
        problems, options = problems + error.problems, None
        status = status if refused else error.status
    if options is not None:
        options["servers"] = [s for s in options["servers"] if s["status"] != "deleted"]
    busy = options is not None and any(
        s["status"] in ("deploying", "loading") for s in options["servers"]
    )
    return page(
        "preannotate_dialog.html",
        who,
        status,
        project_id=project_id,
        options=options,
        problems=problems,
        busy=busy,
    )


@router.get("/projects/{project_id}/preannotate", response_class=HTMLResponse)
def preannotate_dialog(ctx: Ctx, who: SignedIn, project_id: Id) -> Response:
    """The dialog's body: servers usable for the project, and whether one can be deployed."""
    return _dialog(ctx, who, project_id, None)


@router.post("/projects/{project_id}/deploy", response_class=HTMLResponse)
def deploy(ctx: Ctx, who: SignedIn, project_id: Id, _: PostedForm) -> Response:
    try:
        attempt(lambda: projects_api.deploy(ctx, who.user, project_id))
    except PageError as error:
        return _dialog(ctx, who, project_id, error)
    return _dialog(ctx, who, project_id, None)


@router.post("/projects/{project_id}/preannotate", response_class=HTMLResponse)
def preannotate(ctx: Ctx, who: SignedIn, project_id: Id, form: PostedForm) -> Response:
    """Start the job on the chosen server for the selected tasks (or all of them)."""
    everything = first(form, "all") == "on"
    selected = form_ids(form, "task")

    def start() -> dict:
        request = jobs_api.PreannotateRequest(
            task_ids=None if everything else selected,
            all=everything,
            server_id=first(form, "server_id") or None,
            deploy_if_missing=False,
        )
        return jobs_api.preannotate(ctx, who.user, project_id, request)

    if not everything and not selected:
        return _dialog(ctx, who, project_id, PageError(400, ["select some tasks, or all"]))
    try:
        job = attempt(start)
    except PageError as error:
        return _dialog(ctx, who, project_id, error)
    return page("job_progress.html", who, job=job, finished=FINISHED, manages=True)


@router.get("/jobs/{job_id}/progress", response_class=HTMLResponse)
def job_progress(ctx: Ctx, who: SignedIn, job_id: Id) -> Response:
    try:
        job = attempt(lambda: jobs_api.get_job(ctx, who.user, job_id))
    except PageError as error:
        return error_page(who, error)
    manages = manages_project(ctx, who.user, job["project_id"])
    return page("job_progress.html", who, job=job, finished=FINISHED, manages=manages)


@router.post("/jobs/{job_id}/cancel", response_class=HTMLResponse)
def cancel_job(ctx: Ctx, who: SignedIn, job_id: Id, _: PostedForm) -> Response:
    try:
        job = attempt(lambda: jobs_api.cancel_job(ctx, who.user, job_id))
    except PageError as error:
        return error_page(who, error)
    return page("job_progress.html", who, job=job, finished=FINISHED, manages=True)


@router.get("/tasks/{task_id}", response_class=HTMLResponse)
def task_page(
    ctx: Ctx, who: SignedIn, task_id: Id, a: PredictionId = None, b: PredictionId = None
) -> Response:
    """The task's text, its prediction versions (read-only), its completions, and the
    comparison of two versions when `a` and `b` are given."""
    try:
        predictions = attempt(lambda: tasks_api.predictions(ctx, who.user, task_id))
        completions = attempt(lambda: tasks_api.completions(ctx, who.user, task_id))
        comparison = (
            attempt(lambda: tasks_api.compare(ctx, who.user, a, b))
            if a is not None and b is not None
            else None
        )
    except PageError as error:
        return error_page(who, error)
    task = ctx.store.get_task(task_id)  # its project's role was checked just above
    return page(
        "task.html",
        who,
        task=task,
        shown=ctx.store.document_fields(task.project_id).shown,
        predictions=predictions,
        completions=completions,
        comparison=comparison,
        a=a,
        b=b,
    )


@router.post("/tasks/{task_id}/completions", response_class=HTMLResponse)
def create_completion(ctx: Ctx, who: SignedIn, task_id: Id, form: PostedForm) -> Response:
    """An editable copy of a prediction, as the caller's completion (Annotators too)."""
    prediction = form_ids(form, "from_prediction")

    def create() -> dict:
        body = tasks_api.CompletionRequest(from_prediction=prediction[0])
        return tasks_api.create_completion(ctx, who.user, task_id, body)

    if not prediction:
        return error_page(who, PageError(400, ["choose a prediction to copy"]))
    try:
        attempt(create)
    except PageError as error:
        return error_page(who, error)
    return see(f"/ui/tasks/{task_id}#completions")
