"""The Serve deployment of one pre-annotation server.

Each replica loads its pipeline once; interactive calls and bulk jobs share that one load
through two lanes (`lanes.py`), interactive first.
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


@serve.deployment(name="model_server", health_check_period_s=10, max_ongoing_requests=64)
class ModelServer:
    def __init__(self, server_id: str, project: dict[str, Any], hub_root: str):
        self.server_id = server_id
        hub = Hub(Path(hub_root))
        self.config = validate_config(ProjectConfig.model_validate(project), hub)
        self.pipeline = Pipeline(self.config, hub)
        self.lanes = Lanes(lambda tasks: [p.as_json() for p in self.pipeline.annotate(tasks)])
        self.latency = LaneLatency(server_id)

    async def predict(self, tasks: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """The interactive lane: one prediction (or error) per task, in order, ahead of bulk
        work. A call goes straight to the lane's thread: no `@serve.batch` queue, which cost
        a few ms per call and gained little, as concurrent calls wait for the pipeline
        anyway."""
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


def model_server_app(
    server_id: str, spec: DeploySpec, project: dict[str, Any], hub_root: str
) -> Application:
    """Bind a server's replicas with the resources its deploy spec asks for; `project` is
    the configuration with its library rules written out (`inline_config`)."""
    return ModelServer.options(**spec.deployment_options()).bind(server_id, project, hub_root)


def inline_config(config: ValidatedConfig) -> dict[str, Any]:
    """The project config with its library rules written out, so replicas need no library."""
    return config.project.model_dump() | {"rules": [r.model_dump() for r in config.rules]}
