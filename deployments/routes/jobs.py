"""Bulk pre-annotation jobs: start one, watch it, cancel it."""

from datetime import UTC, datetime
from typing import Annotated, Any

import ray
from fastapi import APIRouter, Query
from pydantic import BaseModel, Field, StrictBool, StrictInt, model_validator

from preannotate.configs.training import TrainingSpec
from preannotate.deployments.routes import resources
from preannotate.deployments.routes.context import (
    MANAGE,
    MAX_ID,
    READ,
    BodyId,
    Ctx,
    CurrentUser,
    Id,
    caller_roles,
    errors,
    require_role,
)
from preannotate.deployments.routes.json_body import JsonBodyRoute
from preannotate.deployments.routes.refusals import refusals_for
from preannotate.deployments.routes.servers import require_server_use
from preannotate.store import JobState
from preannotate.store.models import Job

router = APIRouter(tags=["jobs"], route_class=JsonBodyRoute)


class PreannotateRequest(BaseModel):
    task_ids: list[BodyId] | None = Field(None, min_length=1, description="these tasks, or `all`")
    all: StrictBool = False
    server_id: str | None = Field(
        None,
        description="a server with the project's current configuration that the caller may "
        "use; default: the one serving it, deployed when `deploy_if_missing`",
    )
    deploy_if_missing: StrictBool = True
    token_budget: StrictInt | None = Field(
        None,
        ge=1,
        le=MAX_ID,
        description="stop the job (cancelled, with the reason) once its external LLM prompts "
        "used this many tokens, prompt and completion together; the tasks done keep their "
        "predictions",
    )

    @model_validator(mode="after")
    def _selection(self) -> "PreannotateRequest":
        if (self.task_ids is None) == (not self.all):
            raise ValueError("give either 'task_ids' or 'all': true")
        return self


def job_json(job: Job) -> dict[str, Any]:
    """The job with its rate in tasks/s since it started."""
    data = job.as_dict()
    rate = None
    if job.started_at is not None:
        end = job.finished_at or datetime.now(UTC)
        seconds = (end - job.started_at).total_seconds()
        rate = round((job.done + job.failed) / seconds, 2) if seconds > 0 else None
    return data | {"rate": rate}


@router.post(
    "/projects/{project_id}/preannotate",
    status_code=202,
    response_model=resources.Job,
    responses=errors(400, 401, 403, 404, 409),
)
def preannotate(
    ctx: Ctx, user: CurrentUser, project_id: Id, request: PreannotateRequest
) -> dict[str, Any]:
    """Pre-annotate the selected tasks (or all) as a job; a server with the project's
    configuration is used, or deployed when `deploy_if_missing`. A `server_id` given must
    be one the caller may use (403) and have the project's current configuration (409)."""
    require_role(ctx, user, project_id, MANAGE)
    if request.server_id is not None:
        require_server_use(ctx, user, request.server_id)
    with refusals_for(ctx, user):
        job_id = ray.get(
            ctx.scheduler.submit_preannotate.remote(
                project_id,
                request.task_ids,
                request.server_id,
                request.deploy_if_missing,
                request.token_budget,
            )
        )
    return job_json(ctx.store.get_job(job_id))


@router.post(
    "/projects/{project_id}/train",
    status_code=202,
    response_model=resources.Job,
    responses=errors(401, 403, 404, 409),
)
def train(ctx: Ctx, user: CurrentUser, project_id: Id, spec: TrainingSpec) -> dict[str, Any]:
    """Train a model on the project's completions as a job next to pre-annotation; the
    result is registered in the Models Hub as `<model_name>_v<n>`. Checked before any work:
    too few completions or labels the configuration lacks give 422."""
    require_role(ctx, user, project_id, MANAGE)
    with refusals_for(ctx, user):
        job_id = ray.get(ctx.scheduler.submit_training.remote(project_id, spec.model_dump()))
    return job_json(ctx.store.get_job(job_id))


@router.get("/jobs", response_model=list[resources.Job], responses=errors(401))
def list_jobs(
    ctx: Ctx,
    user: CurrentUser,
    project_id: Annotated[Id | None, Query()] = None,
    state: Annotated[JobState | None, Query()] = None,
) -> list[dict[str, Any]]:
    """Jobs of the projects the caller has a role in, oldest first."""
    jobs = ctx.store.list_jobs(project_id, [state] if state else None)
    roles = caller_roles(ctx, user)
    return [job_json(j) for j in jobs if roles is None or roles.get(j.project_id) in READ]


@router.get("/jobs/{job_id}", response_model=resources.Job, responses=errors(401, 403, 404))
def get_job(ctx: Ctx, user: CurrentUser, job_id: Id) -> dict[str, Any]:
    job = ctx.store.get_job(job_id)
    require_role(ctx, user, job.project_id, READ)
    return job_json(job)


@router.delete("/jobs/{job_id}", response_model=resources.Job, responses=errors(401, 403, 404, 409))
def cancel_job(ctx: Ctx, user: CurrentUser, job_id: Id) -> dict[str, Any]:
    """Cancel a job promptly; the predictions it already wrote stay."""
    job = ctx.store.get_job(job_id)
    require_role(ctx, user, job.project_id, MANAGE)
    ray.get(ctx.scheduler.cancel_job.remote(job_id, f"cancelled by {user.name}"))
    return job_json(ctx.store.get_job(job_id))
