"""The Serve deployment of one pre-annotation server.

Each replica loads its pipeline once, then batches documents from concurrent requests
(`@serve.batch`) so that interactive calls and bulk jobs share one model load.
"""

import asyncio
from pathlib import Path
from typing import Any

from ray import serve
from ray.serve import Application

from preannotate.annotators.pipeline import Pipeline
from preannotate.cluster.deploy_spec import DeploySpec
from preannotate.configs.project import ProjectConfig
from preannotate.deployments.lanes import Lanes
from preannotate.deployments.latency import BULK, INTERACTIVE, LaneLatency
from preannotate.hub.catalog import Hub
from preannotate.hub.validation import ValidatedConfig, validate_config

MAX_BATCH_SIZE = 32


@serve.deployment(name="model_server", health_check_period_s=10, max_ongoing_requests=64)
class ModelServer:
    def __init__(self, server_id: str, project: dict[str, Any], hub_root: str):
        self.server_id = server_id
        hub = Hub(Path(hub_root))
        self.config = validate_config(ProjectConfig.model_validate(project), hub)
        self.pipeline = Pipeline(self.config, hub)
        self.lanes = Lanes(lambda tasks: [p.as_json() for p in self.pipeline.annotate(tasks)])
        self.latency = LaneLatency(server_id)

    # No wait for a batch to fill: a lone call runs at once, and calls that arrive while
    # the pipeline is busy queue up and run together as the next batch.
    @serve.batch(max_batch_size=MAX_BATCH_SIZE, batch_wait_timeout_s=0)
    async def _interactive(self, tasks: list[dict[str, Any]]) -> list[dict[str, Any]]:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(
            self.lanes.interactive_lane, self.lanes.interactive, tasks
        )

    async def predict(self, tasks: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """The interactive lane: one prediction (or error) per task, in order; documents of
        concurrent calls are batched together, ahead of bulk work."""
        with self.latency.timed(INTERACTIVE):
            return list(await asyncio.gather(*(self._interactive(task) for task in tasks)))

    async def annotate(self, tasks: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """The bulk lane: a job's batch, in slices that yield to interactive calls."""
        loop = asyncio.get_running_loop()
        with self.latency.timed(BULK):
            return await loop.run_in_executor(self.lanes.bulk_lane, self.lanes.bulk, tasks)


def model_server_app(
    server_id: str, spec: DeploySpec, project: dict[str, Any], hub_root: str
) -> Application:
    """Bind a server's replicas with the resources its deploy spec asks for; `project` is
    the configuration with its library rules written out (`inline_config`)."""
    return ModelServer.options(**spec.deployment_options()).bind(server_id, project, hub_root)


def inline_config(config: ValidatedConfig) -> dict[str, Any]:
    """The project config with its library rules written out, so replicas need no library."""
    return config.project.model_dump() | {"rules": [r.model_dump() for r in config.rules]}
