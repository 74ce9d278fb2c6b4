"""The named, detached scheduler actor. Thin: it serializes deploys and deletes (the Serve
controller is one actor anyway) and delegates the work to `cluster.servers`."""

import asyncio
from pathlib import Path
from typing import Any

import ray
from ray.actor import ActorHandle

from cluster.license import License
from cluster.ray_cluster import NAMESPACE
from cluster.servers import ServerManager
from hub.catalog import Hub
from store import Store

SCHEDULER_NAME = "preannotate-scheduler"


@ray.remote(num_cpus=0, max_restarts=-1)
class Scheduler:
    def __init__(self, database_url: str, hub_root: str, license: License | None):
        self.servers = ServerManager(Store(database_url), Hub(Path(hub_root)), license)
        self.lock = asyncio.Lock()

    async def deploy(self, project_id: int) -> dict[str, Any]:
        async with self.lock:
            return await self.servers.deploy(project_id)

    async def delete_server(self, server_id: str) -> dict[str, Any]:
        async with self.lock:
            return await self.servers.delete(server_id)

    async def list_servers(self) -> list[dict[str, Any]]:
        return await self.servers.list()

    async def get_server(self, server_id: str) -> dict[str, Any]:
        return await self.servers.describe(server_id)

    async def preannotate_options(self, project_id: int) -> dict[str, Any]:
        return await self.servers.options(project_id)

    async def replica_event(
        self, server_id: str, replica_id: str, node_id: str, state: str
    ) -> None:
        self.servers.replica_event(server_id, replica_id, node_id, state)


def start_scheduler(database_url: str, hub_root: str, license: License | None) -> ActorHandle:
    """Create the scheduler, or return the one already running in this cluster."""
    return Scheduler.options(
        name=SCHEDULER_NAME, namespace=NAMESPACE, lifetime="detached", get_if_exists=True
    ).remote(database_url, hub_root, license)


def find_scheduler() -> ActorHandle | None:
    try:
        return ray.get_actor(SCHEDULER_NAME, namespace=NAMESPACE)
    except ValueError:
        return None
