"""Settings → Clusters (servers and the cluster's free resources, Delete) and the Jobs page.

The free resources are Ray's own count per node, read again on every refresh, so the CPUs,
GPUs and license tokens a deleted server held show as free as soon as Ray frees them.
"""

from typing import Any

from fastapi import APIRouter
from fastapi.responses import HTMLResponse, Response

from preannotate.cluster.capacity import NodeResources
from preannotate.cluster.ray_cluster import nodes
from preannotate.deployments.pages.access import controls_server, manages_project
from preannotate.deployments.pages.render import PageError, attempt, error_page, page
from preannotate.deployments.pages.session import PostedForm, SignedIn
from preannotate.deployments.routes import jobs as jobs_api
from preannotate.deployments.routes import servers as servers_api
from preannotate.deployments.routes.context import Ctx, Id
from preannotate.store import JobState

router = APIRouter()
SHOWN_RESOURCES = (("CPU", "CPUs"), ("GPU", "GPUs"), ("license_token", "license tokens"))
UNFINISHED = {JobState.QUEUED.value, JobState.RUNNING.value}


def resource_rows(found: list[NodeResources]) -> list[dict[str, Any]]:
    """Free and total CPUs, GPUs and license tokens per node, and their sums."""
    rows = [
        {
            "node": node.node_id,
            "cells": [
                (node.available.get(k, 0.0), node.total.get(k, 0.0)) for k, _ in SHOWN_RESOURCES
            ],
        }
        for node in sorted(found, key=lambda n: n.node_id)
    ]
    total = [
        (sum(r["cells"][i][0] for r in rows), sum(r["cells"][i][1] for r in rows))
        for i in range(len(SHOWN_RESOURCES))
    ]
    return rows + [{"node": "all nodes", "cells": total}]


def _clusters(ctx: Ctx, who: SignedIn, message: str, problems: list[str], status: int) -> Response:
    try:
        servers = attempt(lambda: servers_api.list_servers(ctx, who.user))
    except PageError as error:
        return error_page(who, error)
    live = [s for s in servers if s["status"] != "deleted"]
    return page(
        "clusters.html",
        who,
        status,
        servers=live,
        deletable={s["id"] for s in live if controls_server(ctx, who.user, s["id"])},
        resources=resource_rows(nodes()),
        names=[label for _, label in SHOWN_RESOURCES],
        message=message,
        problems=problems,
    )


@router.get("/settings/clusters", response_class=HTMLResponse)
def clusters_page(ctx: Ctx, who: SignedIn) -> Response:
    return _clusters(ctx, who, "", [], 200)


@router.get("/settings/clusters/resources", response_class=HTMLResponse)
def resources_panel(_: SignedIn) -> Response:
    """The free-resources table alone, which the Clusters page refreshes while open."""
    names = [label for _, label in SHOWN_RESOURCES]
    return page("resources.html", None, resources=resource_rows(nodes()), names=names)


@router.post("/servers/{server_id}/delete", response_class=HTMLResponse)
def delete_server(ctx: Ctx, who: SignedIn, server_id: str, _: PostedForm) -> Response:
    """Delete after the page's confirmation; the page comes back with the freed resources."""
    try:
        attempt(lambda: servers_api.delete_server(ctx, who.user, server_id))
    except PageError as error:
        return _clusters(ctx, who, "", error.problems, error.status)
    return _clusters(ctx, who, f"Deleted {server_id}; its resources are free again.", [], 200)


@router.get("/jobs", response_class=HTMLResponse)
def jobs_page(ctx: Ctx, who: SignedIn) -> Response:
    """Every job of the caller's projects with state, progress and errors; the table
    refreshes itself while any job is unfinished."""
    jobs = jobs_api.list_jobs(ctx, who.user, None, None)
    managed = {p: manages_project(ctx, who.user, p) for p in {j["project_id"] for j in jobs}}
    return page(
        "jobs.html",
        who,
        jobs=list(reversed(jobs)),
        managed=managed,
        live=any(j["state"] in UNFINISHED for j in jobs),
    )


@router.get("/jobs/{job_id}", response_class=HTMLResponse)
def job_page(ctx: Ctx, who: SignedIn, job_id: Id) -> Response:
    try:
        job = attempt(lambda: jobs_api.get_job(ctx, who.user, job_id))
    except PageError as error:
        return error_page(who, error)
    return page("job.html", who, job=job, manages=manages_project(ctx, who.user, job["project_id"]))
