"""The Serve deployment of one pre-annotation server.

Each replica loads its pipeline once; interactive calls and bulk jobs share that one load
through two lanes (`lanes.py`), interactive first. Interactive calls come over HTTP
straight from Serve's ingress (`server_ingress.py`) or through the router's handle.
"""

import asyncio
import sys
from pathlib import Path
from typing import Any

from ray import serve
from ray.serve import Application
from starlette.requests import Request
from starlette.responses import Response

from preannotate.annotators.llm import CONCURRENCY, REQUEST_TIMEOUT_S, ProviderAccess
from preannotate.annotators.visual_pipeline import pipeline_for
from preannotate.cluster.deploy_spec import DeploySpec
from preannotate.configs.project import ProjectConfig
from preannotate.deployments.access_cache import AccessCache
from preannotate.deployments.lanes import Lanes
from preannotate.deployments.latency import BULK, INTERACTIVE, LaneLatency
from preannotate.deployments.server_ingress import PredictIngress
from preannotate.hub.catalog import Hub
from preannotate.hub.validation import ValidatedConfig, validate_config
from preannotate.store import Store
from preannotate.store.providers import open_key

SWITCH_INTERVAL_S = 0.001
"""How long the bulk lane's thread may hold the GIL while an interactive request waits for
it (Python's default is 5 ms, paid several times per request during a bulk job)."""


DRAIN_CHECK_S = 0.5
"""How often a stopping replica checks whether its requests are done. Serve's default,
2 s, made every delete on the Clusters page wait at least that long."""


@serve.deployment(
    name="model_server",
    health_check_period_s=10,
    max_ongoing_requests=64,
    graceful_shutdown_wait_loop_s=DRAIN_CHECK_S,
)
class ModelServer:
    def __init__(
        self,
        server_id: str,
        project: dict[str, Any],
        hub_root: str,
        database_url: str,
        providers: dict[str, dict[str, Any]] | None = None,
    ):
        sys.setswitchinterval(SWITCH_INTERVAL_S)
        self.server_id = server_id
        store = Store(database_url, create_schema=False)  # the control plane made the schema
        self.ingress = PredictIngress(server_id, AccessCache(store))
        hub = Hub(Path(hub_root))
        self.config = validate_config(ProjectConfig.model_validate(project), hub)
        self.pipeline = pipeline_for(self.config, hub)
        if providers:
            self.pipeline.connect_providers(open_providers(providers))
        self.lanes = Lanes(lambda tasks: [p.as_json() for p in self.pipeline.annotate(tasks)])
        self.latency = LaneLatency(server_id)

    async def __call__(self, request: Request) -> Response:
        """HTTP `POST /servers/{id}/predict`, sent here by Serve's ingress without the
        router (`server_ingress.py`): the token and role checked, then `predict`."""
        return await self.ingress.respond(request, self.predict)

    async def predict(self, tasks: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """The interactive lane: one prediction (or error) per task, in order, ahead of bulk
        work. A call goes straight to a lane thread: no `@serve.batch` queue, which cost a
        few ms per call; calls that wait for the pipeline run together there (`Lanes`)."""
        with self.latency.timed(INTERACTIVE):
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(
                self.lanes.interactive_lane, self.lanes.interactive, tasks
            )

    async def annotate(self, tasks: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """The bulk lane: a job's batch, in slices that yield to interactive calls."""
        loop = asyncio.get_running_loop()
        with self.latency.timed(BULK):
            return await loop.run_in_executor(self.lanes.bulk_lane, self.lanes.bulk, tasks)


def open_providers(sealed: dict[str, dict[str, Any]]) -> dict[str, ProviderAccess]:
    """The providers the server's external prompts call, their keys opened here, in the
    replica, with the operator's secret key from its environment: only the sealed keys
    cross Ray. `ProviderAccess` leaves the key out of its repr, so no log line shows it."""
    return {
        name: ProviderAccess(
            name=name,
            kind=p["kind"],
            base_url=p["base_url"],
            api_key=open_key(p["sealed_key"], name),
            api_version=p["api_version"],
            timeout_s=p["timeout_s"] or REQUEST_TIMEOUT_S,
            concurrency=p["concurrency"] or CONCURRENCY,
        )
        for name, p in sealed.items()
    }


def model_server_app(
    server_id: str,
    spec: DeploySpec,
    project: dict[str, Any],
    hub_root: str,
    database_url: str,
    providers: dict[str, dict[str, Any]] | None = None,
) -> Application:
    """Bind a server's replicas with the resources its deploy spec asks for; `project` is
    the configuration with its library rules written out (`inline_config`); the store at
    `database_url` holds the tokens and roles its HTTP route checks; `providers` those
    its external prompts call, keys sealed (`Store.sealed_providers`)."""
    return ModelServer.options(**spec.deployment_options()).bind(
        server_id, project, hub_root, database_url, providers
    )


def inline_config(config: ValidatedConfig) -> dict[str, Any]:
    """The project config with its library rules and prompts written out, so replicas need
    no library."""
    return config.project.model_dump() | {
        "rules": [r.model_dump() for r in config.rules],
        "prompts": [p.model_dump() for p in config.prompts.values()],
    }
