"""The Serve deployment of one pre-annotation server.

Each replica loads its pipeline for interactive calls (`interactive_lane.py`), which come
over HTTP straight from Serve's ingress (`server_ingress.py`) or through the router's
handle; bulk batches run in a child process of the replica with a pipeline of its own
(`bulk_process.py`), so an interactive call never waits for one.
"""

import asyncio
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from ray import serve
from ray.serve import Application
from starlette.requests import Request
from starlette.responses import Response

from preannotate.cluster.deploy_spec import DeploySpec
from preannotate.deployments.access_cache import AccessCache
from preannotate.deployments.bulk_process import BATCHES_AT_CHILD, BulkProcess, PipelineSetup
from preannotate.deployments.interactive_lane import InteractiveLane
from preannotate.deployments.latency import BULK, INTERACTIVE, LaneLatency
from preannotate.deployments.server_ingress import PredictIngress
from preannotate.hub.validation import ValidatedConfig
from preannotate.store import Store

REPLICA_ENV = {"RAY_SERVE_RUN_USER_CODE_IN_SEPARATE_THREAD": "0"}
"""Serve runs a replica's methods on its own event loop instead of a second loop in
another thread, so each request skips the hand-over between the two: about 3 ms of an
interactive call's p50 on a 2-core node (`bench/serve.py`). Safe here because no method
blocks the loop: tokens and roles are read from the store in threads, the pipeline runs
in the interactive lane's threads and bulk batches in the bulk process. The router keeps
Serve's default: its routes are many and not all of them are that careful."""

DRAIN_CHECK_S = 0.5
"""How often a stopping replica checks whether its requests are done. Serve's default,
2 s, made every delete on the Clusters page wait at least that long."""


MAX_ONGOING_REQUESTS = 64
"""Calls a replica takes at once, interactive and bulk together (Serve queues the rest)."""


@serve.deployment(
    name="model_server",
    health_check_period_s=10,
    max_ongoing_requests=MAX_ONGOING_REQUESTS,
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
        self.server_id = server_id
        store = Store(database_url, create_schema=False)  # the control plane made the schema
        self.ingress = PredictIngress(server_id, AccessCache(store))
        setup = PipelineSetup(project, hub_root, providers)
        self.pipeline = setup.build()
        self.interactive = InteractiveLane(
            lambda tasks: [p.as_json() for p in self.pipeline.annotate(tasks)]
        )
        self.bulk = BulkProcess(setup)
        self.bulk_lane = ThreadPoolExecutor(BATCHES_AT_CHILD, thread_name_prefix="bulk")
        """Each thread waits for one batch's answer: the bulk process holds as many."""
        self.latency = LaneLatency(server_id)

    async def __call__(self, request: Request) -> Response:
        """HTTP `POST /servers/{id}/predict`, sent here by Serve's ingress without the
        router (`server_ingress.py`): the token and role checked, then `predict`."""
        return await self.ingress.respond(request, self.predict)

    async def predict(self, tasks: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """The interactive lane: one prediction (or error) per task, in order. A call goes
        straight to a lane thread: no `@serve.batch` queue, which cost a few ms per call;
        calls that wait for the pipeline run together there (`InteractiveLane`)."""
        with self.latency.timed(INTERACTIVE):
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(self.interactive.threads, self.interactive, tasks)

    async def annotate(self, tasks: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """The bulk lane: a job's batch, run by the replica's bulk process; each result
        comes as JSON text (`TaskPrediction.as_encoded_json`)."""
        loop = asyncio.get_running_loop()
        with self.latency.timed(BULK):
            return await loop.run_in_executor(self.bulk_lane, self.bulk.annotate, tasks)

    def check_health(self) -> None:
        """Serve's periodic check (`health_check_period_s`): also hands back the bulk
        process's memory once no job has sent a batch for a while."""
        self.bulk.stop_if_idle()

    def __del__(self) -> None:
        self.bulk.close()


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
    options = spec.deployment_options()
    options["ray_actor_options"]["runtime_env"]["env_vars"].update(REPLICA_ENV)
    return ModelServer.options(**options).bind(
        server_id, project, hub_root, database_url, providers
    )


def inline_config(config: ValidatedConfig) -> dict[str, Any]:
    """The project config with its library rules and prompts written out, so replicas need
    no library."""
    return config.project.model_dump() | {
        "rules": [r.model_dump() for r in config.rules],
        "prompts": [p.model_dump() for p in config.prompts.values()],
    }
