"""`GET /metrics`: the whole cluster's figures for Prometheus (docs/metrics.md).

The scheduler gathers them at scrape time (`scheduler/metrics.py`), so every router
replica answers with the same, cluster-wide page. The page names every server and shows
every project's activity, so only admins may read it: Prometheus sends an admin's API
token (`authorization: {type: Bearer, credentials_file: ...}` in its scrape config).
The page is in text format 0.0.4, which every Prometheus version reads.
"""

import ray
from fastapi import APIRouter, HTTPException, Response
from prometheus_client import CONTENT_TYPE_PLAIN_0_0_4

from preannotate.deployments.routes.context import Ctx, CurrentUser
from preannotate.deployments.routes.errors import errors

router = APIRouter(tags=["metrics"])


@router.get(
    "/metrics",
    response_class=Response,
    responses={200: {"content": {CONTENT_TYPE_PLAIN_0_0_4: {}}}} | errors(401, 403, 409),
)
def metrics(ctx: Ctx, user: CurrentUser) -> Response:
    """Jobs, tasks, bulk throughput, request latency, replicas, license seats and tokens,
    training epochs, in the Prometheus text format. Admins only."""
    if not user.is_admin:
        raise HTTPException(
            403, f"user '{user.name}' is not an admin; only admins may read the cluster's metrics"
        )
    page = ray.get(ctx.scheduler.metrics.remote())
    return Response(page, media_type=CONTENT_TYPE_PLAIN_0_0_4)
