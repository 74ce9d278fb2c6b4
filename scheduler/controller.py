"""The deploy controller: the server registry that deploys a project's configuration as one
Serve application, reports its state, deletes it and restores it after a restart.

It runs inside the scheduler actor, which calls it one deploy, delete or restore at a time
and always in a worker thread: its store, hub and Serve calls block. What runs where is
pulled from Serve's controller (`cluster.serve_state`), never reported by replicas, so the
resources counted as held are those of live replicas only (docs/architecture.md, "Deploy").
The license's seats are counted here for the whole cluster: each live replica of a
licensed server and each licensed training run the scheduler started holds one.
"""

import time
from collections.abc import Callable, Sequence
from typing import Any

from ray import serve
from ray.serve.schema import ApplicationStatus

from preannotate.annotators.pipeline import check_runnable
from preannotate.cluster.capacity import (
    LICENSE_TOKEN,
    SEATS,
    FitResult,
    NodeResources,
    ResourceRequest,
    Resources,
    SeatUse,
    ServerHolding,
    check_fit,
    shows_free,
)
from preannotate.cluster.deploy_spec import DeploySpec
from preannotate.cluster.license import License, LicenseError, require_scope
from preannotate.cluster.ray_cluster import nodes
from preannotate.cluster.serve_state import (
    Replica,
    ServeSnapshot,
    actors_alive,
    serve_snapshot,
)
from preannotate.configs.errors import ConfigError
from preannotate.configs.project import parse_project_config
from preannotate.deployments.model_server import inline_config, model_server_app
from preannotate.deployments.server_ingress import predict_route
from preannotate.hub.catalog import Hub
from preannotate.hub.validation import ValidatedConfig, validate_config
from preannotate.scheduler.errors import DeployRefused
from preannotate.store import NotFound, ServerStatus, Store
from preannotate.store.models import Server
from preannotate.store.secrets import SecretKeyError, require_secret_key

PLACEMENT_TIMEOUT_S = 60.0
"""How long a deploy waits for Ray to place its replicas before giving the resources back."""
POLL_S = 0.2
DELETE_TIMEOUT_S = 60
RELEASE_TIMEOUT_S = 5
"""How long a delete (or a training run's end) waits, after the replicas (or the trainer)
ended, for Ray to count their resources free; other Ray work on the cluster may have
taken them meanwhile, so it then goes on."""
GONE = "its Serve application is gone (the cluster stopped or Serve was shut down)"
UNUSABLE = (ServerStatus.FAILED, ServerStatus.DELETING)


def holding(server: Server, placed: list[Replica]) -> ServerHolding:
    """What a server's placed replicas hold, in all and on each node."""
    per_node: dict[str, dict[str, float]] = {}
    for replica in placed:
        held = per_node.setdefault(replica.node_id or "", {})
        for key, amount in server.resources.items():
            held[key] = held.get(key, 0.0) + amount
    total = {key: amount * len(placed) for key, amount in server.resources.items()}
    return ServerHolding(server_id=server.id, resources=total, per_node=per_node)


def poll_until(condition: Callable[[], bool], timeout_s: float) -> bool:
    """Whether `condition` came true within `timeout_s`, asked every `POLL_S`."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(POLL_S)
    return True


def wait_freed(held: dict[str, Resources], while_held: Sequence[NodeResources]) -> bool:
    """Whether Ray counted what was held on each node (node_id -> resources) free again
    within RELEASE_TIMEOUT_S, measured against the view taken `while_held`: a deploy checked
    right after a delete or a training run's end is then not refused against the older view."""
    return poll_until(lambda: shows_free(nodes(), held, while_held), RELEASE_TIMEOUT_S)


def deployed_snapshot(config: ValidatedConfig) -> dict[str, Any]:
    """What a server shows on the Clusters page for as long as it lives: its models with
    their labels and versions, and its rules, as validated when it was deployed."""
    return {
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
        "rules": [{"name": r.name, "version": r.version, "label": r.label} for r in config.rules],
        "prompts": [
            {"name": p.name, "version": p.version, "type": p.type, "labels": p.labels}
            for p in config.prompts.values()
        ],
    }


class DeployController:
    def __init__(self, store: Store, hub: Hub, license: License | None):
        self.store = store
        self.hub = hub
        self.license = license
        self.deleting: set[str] = set()
        self.closing: set[str] = set()
        """Servers whose delete has begun (the scheduler marks them before it cancels their
        jobs): no job picks them any more."""
        self.restoring: set[str] = set()
        """Servers recorded as live whose Serve apps are being brought back after a restart."""
        self.licensed_runs: set[int] = set()
        """Job ids of the licensed training runs under way; each holds a seat until it ends."""

    def project_config(self, project_id: int) -> ValidatedConfig:
        record = self.store.current_config(project_id)
        if record is None:
            raise ConfigError([f"project {project_id} has no configuration yet; set one first"])
        return validate_config(parse_project_config(record.config), self.hub)

    # -- capacity --------------------------------------------------------------------------

    def usage(self, snapshot: ServeSnapshot) -> tuple[list[ServerHolding], SeatUse | None]:
        """What each server holds now: its per-replica resources on each node where Serve
        has a live replica of it (scaled-to-zero or dead replicas hold nothing); and the
        license's seats in use, when a license is loaded."""
        holdings = []
        seats: dict[str, int] = {}
        for server in self.store.list_servers():
            app = snapshot.app(server.id)
            placed = app.placed if app else []
            holdings.append(holding(server, placed))
            if server.resources.get(LICENSE_TOKEN) and placed:
                seats[server.id] = len(placed)
        if self.license is None:
            return holdings, None
        in_use = SeatUse(
            seats=self.license.seats, servers=seats, training_jobs=sorted(self.licensed_runs)
        )
        return holdings, in_use

    def fit(self, request: ResourceRequest) -> FitResult:
        """Whether `request` can be placed now, within the license's seats if it is licensed,
        and if not, which servers to delete."""
        holdings, seats = self.usage(serve_snapshot())
        return check_fit(request, nodes(), holdings, seats)

    def license_problem(self, scopes: dict[str, str]) -> str | None:
        """Why the license does not cover these models (name -> Models Hub scope), if so."""
        try:
            for name, scope in scopes.items():
                require_scope(self.license, name, scope)
        except LicenseError as exc:
            return str(exc)
        return None

    def _config_license_problem(self, config: ValidatedConfig) -> str | None:
        return self.license_problem({n: m.license_scope for n, m in config.models.items()})

    # -- deploy ----------------------------------------------------------------------------

    def join_shared(self, project_id: int, config_hash: str) -> str | None:
        """The id of a live server with this configuration, which the project now uses
        instead of a new one (so its members see it), or None. Called under a lock that a
        delete takes to mark its server `closing` (the scheduler's), so the server found is
        not going."""
        for server in self.store.list_servers():
            live = server.status not in UNUSABLE and server.id not in self.closing
            if server.config_hash == config_hash and live:
                self.store.attach_project(server.id, project_id)
                return server.id
        return None

    def deploy(self, project_id: int) -> dict[str, Any]:
        """Deploy (or share) a server for the project's current configuration, or refuse now."""
        config = self.project_config(project_id)
        if (shared := self.join_shared(project_id, config.hash)) is not None:
            return self.describe(shared)
        check_runnable(config)
        providers = self.providers(config)
        problem = self._config_license_problem(config)
        if problem:
            raise DeployRefused(f"Cannot deploy: {problem}")
        spec = DeploySpec.from_config(config)
        fit = self.fit(spec.request)
        if not fit.fits:
            raise DeployRefused(fit.message, fit.delete_candidates)
        server = self.store.record_server(
            config=inline_config(config),
            config_hash=config.hash,
            project_ids=[project_id],
            resources=spec.request.per_replica(),
            replicas=spec.request.replicas,
            snapshot=deployed_snapshot(config),
        )
        self._run(server, spec, providers)
        return self.describe(server.id)

    def providers(self, config: ValidatedConfig) -> dict[str, dict[str, Any]]:
        """The providers the configuration's external prompts call, with their keys still
        sealed (they are opened only in the replicas); refused at once when one is not
        registered or there is no secret key to open them with."""
        wanted = {p.provider: p.name for p in config.external_prompts()}
        if not wanted:
            return {}
        known = {p.name for p in self.store.list_providers()}
        missing = [f"prompt '{wanted[n]}' calls provider '{n}'" for n in wanted if n not in known]
        if missing:
            raise DeployRefused(
                f"Cannot deploy: {'; '.join(missing)}, which is not registered; add it with "
                "`preannotate providers add` (admins)"
            )
        try:
            require_secret_key()
        except SecretKeyError as exc:
            raise DeployRefused(f"Cannot deploy: {exc}") from None
        return self.store.sealed_providers(wanted)

    def _run(self, server: Server, spec: DeploySpec, providers: dict[str, dict[str, Any]]) -> None:
        """Start the server's Serve app without blocking on it, then hold the deploy lock
        until Ray has placed its replicas, so the next capacity check sees them as taken."""
        app = model_server_app(
            server.id, spec, server.config, str(self.hub.root), self.store.url, providers
        )
        target = serve.RunTarget(target=app, name=server.id, route_prefix=predict_route(server.id))
        serve.run_many(
            [target],
            wait_for_ingress_deployment_creation=False,
            wait_for_applications_running=False,
        )

        def placed() -> bool:
            snapshot = serve_snapshot()
            state, _ = self.state(server.id, snapshot)
            app_state = snapshot.app(server.id)
            count = len(app_state.placed) if app_state else 0
            return state in (ServerStatus.READY, ServerStatus.FAILED) or (
                count >= spec.replicas_to_place
            )

        if poll_until(placed, PLACEMENT_TIMEOUT_S):
            return
        self.delete(server.id)
        raise DeployRefused(
            f"Cannot deploy: Ray could not place the replicas of {server.id} within "
            f"{PLACEMENT_TIMEOUT_S:.0f} s (other work holds the resources); it was removed."
        )

    def restore(self, server_id: str) -> None:
        """Bring back a server the store records as live after the cluster restarted: the
        same id and configuration, capacity permitting; otherwise it is marked failed with
        the reason, and jobs on it end instead of calling an app that does not exist."""
        try:
            server = self.store.get_server(server_id)
            if serve_snapshot().app(server_id) is not None:
                return
            config = validate_config(parse_project_config(server.config), self.hub)
            providers = self.providers(config)
            problem = self._config_license_problem(config)
            spec = DeploySpec.from_config(config)
            fit = None if problem else self.fit(spec.request)
            if problem or (fit is not None and not fit.fits):
                reason = problem or (fit.message if fit.never_fits else _no_room(fit))
                self.store.set_server_status(
                    server_id, ServerStatus.FAILED, f"not restored: {reason}"
                )
                return
            self.store.set_server_status(server_id, ServerStatus.DEPLOYING)
            self._run(server, spec, providers)
        except (ConfigError, DeployRefused) as exc:
            self.store.set_server_status(server_id, ServerStatus.FAILED, f"not restored: {exc}")
        finally:
            self.restoring.discard(server_id)

    # -- state -----------------------------------------------------------------------------

    def state(self, server_id: str, snapshot: ServeSnapshot) -> tuple[str, str | None]:
        """deploying / loading / ready / failed / deleting, with Serve's message if any."""
        if server_id in self.deleting:
            return ServerStatus.DELETING, None
        if server_id in self.restoring:
            return ServerStatus.DEPLOYING, "being restored after a restart"
        app = snapshot.app(server_id)
        if app is None:
            return ServerStatus.FAILED, GONE
        if app.status == ApplicationStatus.RUNNING:  # a replica it adds may not start
            return ServerStatus.READY, app.failure or None
        if app.status in (ApplicationStatus.DEPLOY_FAILED, ApplicationStatus.UNHEALTHY):
            return ServerStatus.FAILED, app.message or None
        if app.placed:  # while Serve retries a replica that did not start, say why
            return ServerStatus.LOADING, app.failure or None
        return ServerStatus.DEPLOYING, app.failure or None

    def server_state(self, server_id: str) -> tuple[str, str | None]:
        """The state of one server now (one read of Serve's state)."""
        return self.state(server_id, serve_snapshot())

    def describe(self, server_id: str, snapshot: ServeSnapshot | None = None) -> dict[str, Any]:
        """What the Clusters page shows for one server; `snapshot` is shared by a listing."""
        server = self.store.get_server(server_id)
        snapshot = snapshot or serve_snapshot()
        app = snapshot.app(server_id)
        if server.deleted_at is not None:
            state, message = ServerStatus.DELETED.value, None
        else:
            state, message = self.state(server_id, snapshot)
            if app is None and server.status == ServerStatus.FAILED and server.message:
                message = server.message
            if state != server.status:
                server = self.store.set_server_status(server_id, state, message)
        placed = app.placed if app and server.deleted_at is None else []
        return {
            "id": server.id,
            "config_hash": server.config_hash,
            "projects": server.project_ids,
            "models": (server.snapshot or {}).get("models", []),
            "rules": (server.snapshot or {}).get("rules", []),
            "prompts": (server.snapshot or {}).get("prompts", []),
            "status": state,
            "message": message,
            "replicas": {"target": server.replicas, "running": len(placed)},
            "resources_per_replica": server.resources,
            "nodes": sorted({r.node_id for r in placed if r.node_id}),
            "deployed_at": server.deployed_at.isoformat(),
        }

    def list(self) -> list[dict[str, Any]]:
        servers = self.store.list_servers()
        snapshot = serve_snapshot() if servers else ServeSnapshot()
        return [self.describe(s.id, snapshot) for s in servers]

    # -- delete ----------------------------------------------------------------------------

    def delete(self, server_id: str) -> dict[str, Any]:
        """Delete the Serve app and wait until its replicas (and their resources) are gone."""
        server = self.store.get_server(server_id)
        if server.deleted_at is not None:
            raise NotFound(f"server {server_id!r} was already deleted")
        self.deleting.add(server_id)
        try:
            self.store.set_server_status(server_id, ServerStatus.DELETING)
            app = serve_snapshot().app(server_id)
            replicas = app.replicas if app else []
            held = holding(server, app.placed if app else [])
            while_held = nodes()
            serve.delete(server_id, _blocking=False)  # Serve's own wait polls once a second

            def gone() -> bool:
                return serve_snapshot().app(server_id) is None and not actors_alive(replicas)

            if not poll_until(gone, DELETE_TIMEOUT_S):
                raise TimeoutError(f"{server_id} was not deleted within {DELETE_TIMEOUT_S} s")
            # a moment more, until Ray counts the resources free (unless other work took them)
            wait_freed(held.per_node, while_held)
            self.store.mark_server_deleted(server_id)
        finally:
            self.deleting.discard(server_id)
        return self.describe(server_id, ServeSnapshot())

    # -- the Pre-Annotate dialog -----------------------------------------------------------

    def options(self, project_id: int) -> dict[str, Any]:
        """What the Pre-Annotate dialog shows for a project."""
        config = self.project_config(project_id)
        snapshot = serve_snapshot()
        usable = [
            self.describe(s.id, snapshot)
            for s in self.store.list_servers()
            if s.config_hash == config.hash
        ]
        problem = self._config_license_problem(config)
        fit = None if problem else self.fit(DeploySpec.from_config(config).request)
        reason = f"Cannot deploy: {problem}" if problem else (None if fit.fits else fit.message)
        return {
            "project_id": project_id,
            "config_hash": config.hash,
            "servers": usable,
            "can_deploy": reason is None,
            "reason": reason,
            "delete_candidates": fit.delete_candidates if fit and not fit.fits else [],
        }


def _no_room(fit: FitResult) -> str:
    """Why a server was not restored, naming no other server: the message stays on the
    server, whose members may have no role in the projects of those that hold the room."""
    named = {"node": "nodes", SEATS: "license seats"}
    resources = ", ".join(dict.fromkeys(named.get(s.resource, s.resource) for s in fit.shortfalls))
    return (
        f"not enough free {resources} in the cluster for it now; deploy the project again "
        "once there is room"
    )
