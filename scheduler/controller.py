"""The server registry: deploy a project's configuration as one Serve application, report
its state, delete it. Runs inside the scheduler actor, which calls it one deploy or delete
at a time (ARCHITECTURE.md, decisions 1-3)."""

import asyncio
import time
from typing import Any

from ray import serve
from ray.serve.schema import ApplicationStatus, ServeStatus

from preannotate.annotators.pipeline import check_runnable
from preannotate.cluster.capacity import FitResult, ResourceRequest, ServerHolding, check_fit
from preannotate.cluster.license import License, LicenseError, require_scope
from preannotate.cluster.ray_cluster import nodes
from preannotate.configs.errors import ConfigError
from preannotate.configs.project import parse_project_config
from preannotate.deployments.model_server import inline_config, model_server_app
from preannotate.hub.catalog import Hub
from preannotate.hub.validation import ValidatedConfig, validate_config
from preannotate.scheduler.errors import DeployRefused
from preannotate.store import NotFound, ServerStatus, Store
from preannotate.store.models import Server

PLACEMENT_TIMEOUT_S = 60.0
"""How long a deploy waits for Ray to place its replicas before giving the resources back."""


def resource_request(config: ValidatedConfig) -> ResourceRequest:
    """What Ray will be asked for; autoscaled servers are checked for their first replica."""
    need = config.replica_resources()
    res = config.project.resources
    replicas = max(1, res.autoscaling.min_replicas) if res.autoscaling else res.replicas
    return ResourceRequest(
        num_cpus=need["num_cpus"],
        num_gpus=need["num_gpus"],
        memory_bytes=int(need["memory_mb"] * 2**20),
        license_tokens=need["license_tokens"],
        replicas=replicas,
    )


class ServerManager:
    def __init__(self, store: Store, hub: Hub, license: License | None):
        self.store = store
        self.hub = hub
        self.license = license
        self.replicas: dict[str, dict[str, tuple[str, str]]] = {}
        """server id -> replica id -> (node id, state), as replicas report themselves."""
        self.deleting: set[str] = set()

    def project_config(self, project_id: int) -> ValidatedConfig:
        record = self.store.current_config(project_id)
        if record is None:
            raise ConfigError([f"project {project_id} has no configuration yet; set one first"])
        return validate_config(parse_project_config(record.config), self.hub)

    def replica_event(self, server_id: str, replica_id: str, node_id: str, state: str) -> None:
        if server_id not in self.deleting:
            self.replicas.setdefault(server_id, {})[replica_id] = (node_id, state)

    def _holdings(self) -> list[ServerHolding]:
        holdings = []
        for server in self.store.list_servers():
            placed = self.replicas.get(server.id, {})
            count = len(placed) or server.replicas
            per_node: dict[str, dict[str, float]] = {}
            for node, _ in placed.values():
                held = per_node.setdefault(node, {})
                for key, amount in server.resources.items():
                    held[key] = held.get(key, 0.0) + amount
            total = {key: amount * count for key, amount in server.resources.items()}
            holdings.append(ServerHolding(server_id=server.id, resources=total, per_node=per_node))
        return holdings

    def _license_problem(self, config: ValidatedConfig) -> str | None:
        try:
            for name, manifest in config.models.items():
                require_scope(self.license, name, manifest.license_scope)
        except LicenseError as exc:
            return str(exc)
        return None

    def fit(self, config: ValidatedConfig) -> FitResult:
        return self.fit_request(resource_request(config))

    def fit_request(self, request: ResourceRequest) -> FitResult:
        return check_fit(request, nodes(), self._holdings())

    def _shared_server(self, config_hash: str) -> Server | None:
        for server in self.store.list_servers():
            usable = server.status not in (ServerStatus.FAILED, ServerStatus.DELETING)
            if server.config_hash == config_hash and usable:
                return server
        return None

    async def deploy(self, project_id: int) -> dict[str, Any]:
        """Deploy (or share) a server for the project's current configuration, or refuse now."""
        config = self.project_config(project_id)
        shared = self._shared_server(config.hash)
        if shared is not None:
            self.store.attach_project(shared.id, project_id)
            return await self.describe(shared.id)
        check_runnable(config)
        problem = self._license_problem(config)
        if problem:
            raise DeployRefused(f"Cannot deploy: {problem}")
        fit = self.fit(config)
        if not fit.fits:
            raise DeployRefused(fit.message, fit.delete_candidates)
        request = resource_request(config)
        server = self.store.record_server(
            config=inline_config(config),
            config_hash=config.hash,
            project_ids=[project_id],
            resources=request.per_replica(),
            replicas=request.replicas,
        )
        app = model_server_app(server.id, config, str(self.hub.root))
        target = serve.RunTarget(target=app, name=server.id, route_prefix=None)
        await asyncio.to_thread(
            serve.run_many,
            [target],
            wait_for_ingress_deployment_creation=False,
            wait_for_applications_running=False,
        )
        await self._wait_until_placed(
            server.id, 0 if config.project.resources.autoscaling else request.replicas
        )
        return await self.describe(server.id)

    async def _wait_until_placed(self, server_id: str, replicas: int) -> None:
        """Hold the deploy lock until Ray has placed the replicas, so the next capacity check
        sees their resources as taken; give everything back if they cannot be placed."""
        deadline = time.monotonic() + PLACEMENT_TIMEOUT_S
        while time.monotonic() < deadline:
            state, _ = await self.state(server_id)
            if state in (ServerStatus.READY, ServerStatus.FAILED):
                return
            if len(self.replicas.get(server_id, {})) >= replicas:
                return
            await asyncio.sleep(0.2)
        await self.delete(server_id)
        raise DeployRefused(
            f"Cannot deploy: Ray could not place the replicas of {server_id} within "
            f"{PLACEMENT_TIMEOUT_S:.0f} s (other work holds the resources); it was removed."
        )

    async def state(
        self, server_id: str, status: ServeStatus | None = None
    ) -> tuple[str, str | None]:
        """deploying / loading / ready / failed / deleting, with Serve's message if any.
        `status` is a snapshot of `serve.status()` shared by a listing of many servers."""
        if server_id in self.deleting:
            return ServerStatus.DELETING, None
        status = status or await asyncio.to_thread(serve.status)
        app = status.applications.get(server_id)
        if app is None:
            return ServerStatus.FAILED, "the Serve application is gone (was the cluster restarted?)"
        if app.status == ApplicationStatus.RUNNING:
            return ServerStatus.READY, None
        if app.status in (ApplicationStatus.DEPLOY_FAILED, ApplicationStatus.UNHEALTHY):
            messages = [app.message] + [d.message for d in app.deployments.values() if d.message]
            return ServerStatus.FAILED, " ".join(m for m in messages if m)
        if self.replicas.get(server_id):
            return ServerStatus.LOADING, None
        return ServerStatus.DEPLOYING, None

    async def describe(self, server_id: str, status: ServeStatus | None = None) -> dict[str, Any]:
        """What the Clusters page shows for one server."""
        server = self.store.get_server(server_id)
        if server.deleted_at is not None:
            state, message = ServerStatus.DELETED.value, None
        else:
            state, message = await self.state(server_id, status)
            if state != server.status:
                server = self.store.set_server_status(server_id, state)
        config = validate_config(parse_project_config(server.config), self.hub)
        placed = self.replicas.get(server_id, {})
        return {
            "id": server.id,
            "config_hash": server.config_hash,
            "projects": server.project_ids,
            "models": [
                {
                    "name": m.name,
                    "version": m.version,
                    "kind": m.kind,
                    "labels": m.labels,
                    "license_scope": m.license_scope,
                }
                for m in config.models.values()
            ],
            "rules": [
                {"name": r.name, "version": r.version, "label": r.label} for r in config.rules
            ],
            "status": state,
            "message": message,
            "replicas": {"target": server.replicas, "running": len(placed)},
            "resources_per_replica": server.resources,
            "nodes": sorted({node for node, _ in placed.values()}),
            "deployed_at": server.deployed_at.isoformat(),
        }

    async def _describe_all(self, servers: list[Server]) -> list[dict[str, Any]]:
        """Describe several servers from one `serve.status()` snapshot."""
        status = await asyncio.to_thread(serve.status) if servers else None
        return [await self.describe(s.id, status) for s in servers]

    async def list(self) -> list[dict[str, Any]]:
        return await self._describe_all(self.store.list_servers())

    async def delete(self, server_id: str) -> dict[str, Any]:
        """Delete the Serve app and wait until its replicas (and their resources) are gone."""
        server = self.store.get_server(server_id)
        if server.deleted_at is not None:
            raise NotFound(f"server {server_id!r} was already deleted")
        self.deleting.add(server_id)
        try:
            self.store.set_server_status(server_id, ServerStatus.DELETING)
            await asyncio.to_thread(serve.delete, server_id)
            self.store.mark_server_deleted(server_id)
        finally:
            self.deleting.discard(server_id)
            self.replicas.pop(server_id, None)
        return await self.describe(server_id)

    async def options(self, project_id: int) -> dict[str, Any]:
        """What the Pre-Annotate dialog shows for a project."""
        config = self.project_config(project_id)
        usable = await self._describe_all(
            [s for s in self.store.list_servers() if s.config_hash == config.hash]
        )
        problem = self._license_problem(config)
        fit = None if problem else self.fit(config)
        reason = f"Cannot deploy: {problem}" if problem else (None if fit.fits else fit.message)
        return {
            "project_id": project_id,
            "config_hash": config.hash,
            "servers": usable,
            "can_deploy": reason is None,
            "reason": reason,
            "delete_candidates": fit.delete_candidates if fit and not fit.fits else [],
        }
