"""The Serve deployment of one pre-annotation server.

Each replica loads its pipeline once, then batches documents from concurrent requests
(`@serve.batch`) so that interactive calls and bulk jobs share one model load.
"""

import asyncio
from pathlib import Path
from typing import Any

import ray
from ray import serve
from ray.serve import Application

from preannotate.annotators.pipeline import Pipeline
from preannotate.cluster.license import LICENSE_TOKEN
from preannotate.configs.project import ProjectConfig
from preannotate.deployments.lanes import Lanes
from preannotate.hub.catalog import Hub
from preannotate.hub.validation import ValidatedConfig, validate_config

MAX_BATCH_SIZE = 32


def report(server_id: str, state: str) -> None:
    """Tell the scheduler where this replica runs and what it is doing (best effort)."""
    from preannotate.scheduler.actor import find_scheduler

    scheduler = find_scheduler()
    if scheduler is not None:
        context = serve.get_replica_context()
        scheduler.replica_event.remote(
            server_id, context.replica_id.unique_id, ray.get_runtime_context().get_node_id(), state
        )


@serve.deployment(name="model_server", health_check_period_s=10, max_ongoing_requests=64)
class ModelServer:
    def __init__(self, server_id: str, project: dict[str, Any], hub_root: str):
        self.server_id = server_id
        report(server_id, "loading")
        hub = Hub(Path(hub_root))
        self.config = validate_config(ProjectConfig.model_validate(project), hub)
        self.pipeline = Pipeline(self.config, hub)
        self.lanes = Lanes(lambda tasks: [p.as_json() for p in self.pipeline.annotate(tasks)])
        report(server_id, "ready")

    @serve.batch(max_batch_size=MAX_BATCH_SIZE, batch_wait_timeout_s=0.001)
    async def _interactive(self, tasks: list[dict[str, Any]]) -> list[dict[str, Any]]:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(
            self.lanes.interactive_lane, self.lanes.interactive, tasks
        )

    async def predict(self, tasks: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """The interactive lane: one prediction (or error) per task, in order; documents of
        concurrent calls are batched together, ahead of bulk work."""
        return list(await asyncio.gather(*(self._interactive(task) for task in tasks)))

    async def annotate(self, tasks: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """The bulk lane: a job's batch, in slices that yield to interactive calls."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.lanes.bulk_lane, self.lanes.bulk, tasks)

    def describe(self) -> dict[str, Any]:
        """What this server has deployed: its models with their labels, and its rules."""
        return {
            "server_id": self.server_id,
            "config_hash": self.config.hash,
            "models": [
                {"name": m.name, "version": m.version, "kind": m.kind, "labels": m.labels}
                for m in self.config.models.values()
            ],
            "rules": [
                {"name": r.name, "version": r.version, "label": r.label} for r in self.config.rules
            ],
        }

    def check_health(self) -> None:
        if self.pipeline is None:
            raise RuntimeError("the pipeline is not loaded")


def model_server_app(server_id: str, config: ValidatedConfig, hub_root: str) -> Application:
    """Bind a server's replicas with the resources its configuration asks for."""
    need = config.replica_resources()
    actor: dict[str, Any] = {"num_cpus": need["num_cpus"], "num_gpus": need["num_gpus"]}
    if need["memory_mb"]:
        actor["memory"] = int(need["memory_mb"] * 2**20)
    if need["license_tokens"]:
        actor["resources"] = {LICENSE_TOKEN: need["license_tokens"]}
    resources = config.project.resources
    options: dict[str, Any] = {"ray_actor_options": actor}
    if resources.autoscaling is not None:
        options["autoscaling_config"] = resources.autoscaling.model_dump()
    else:
        options["num_replicas"] = resources.replicas
    return ModelServer.options(**options).bind(server_id, inline_config(config), hub_root)


def inline_config(config: ValidatedConfig) -> dict[str, Any]:
    """The project config with its library rules written out, so replicas need no library."""
    return config.project.model_dump() | {"rules": [r.model_dump() for r in config.rules]}
