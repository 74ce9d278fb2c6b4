"""What Ray Serve runs now, read from Serve's controller: applications and their replicas.

The scheduler learns where replicas run and what state they are in by pulling this
snapshot, the way Serve's own controller observes its replicas, instead of replicas calling
the scheduler back: a replica that died, was replaced or scaled to zero simply no longer
appears, so nothing counts resources that nobody holds (docs/architecture.md, "State is
pulled").
"""

import re
from dataclasses import dataclass, field

import ray
from ray.serve._private.common import ReplicaState
from ray.serve._private.constants import SERVE_NAMESPACE
from ray.serve.context import _get_global_client
from ray.serve.schema import ApplicationStatus, DeploymentDetails, ServeInstanceDetails

HOLDING = {
    state.value
    for state in (
        ReplicaState.STARTING,
        ReplicaState.UPDATING,
        ReplicaState.RECOVERING,
        ReplicaState.RUNNING,
        ReplicaState.STOPPING,
        ReplicaState.PENDING_MIGRATION,
    )
}
"""Replica states whose actor, once placed on a node, holds its resources there."""

_COLOURS = re.compile(r"\x1b\[[0-9;]*m")
_SERVE_ERROR = " Error:\n"
"""How Serve's message for a replica that did not start runs on into its traceback."""
_EXCEPTION = re.compile(r"^[A-Za-z_][\w.]*: ", re.MULTILINE)
_LONGEST = 1000


def readable(message: str) -> str:
    """Serve's status message with a replica's traceback cut to the exception it ends with
    (its type and text, however many lines): the Clusters page and `servers show` say why
    a replica did not start (the store not on its machine, a model missing), not Ray's
    frames. Other messages pass as they are."""
    text = _COLOURS.sub("", message)
    said, found, trace = text.partition(_SERVE_ERROR)
    if not found:
        return text.strip()
    starts = [match.start() for match in _EXCEPTION.finditer(trace)]
    raised = " ".join(trace[starts[-1] :].split()) if starts else ""
    return f"{said.strip()} {raised}"[:_LONGEST].strip()


def failure(message: str) -> bool:
    """Whether Serve's message says a replica did not start (and why)."""
    return _SERVE_ERROR in _COLOURS.sub("", message)


def starting_fails(deployment: DeploymentDetails) -> bool:
    """Whether a replica the deployment is starting does not start: Serve says so, and
    fewer replicas run than its target. Once they all run, a message Serve still shows
    is over."""
    running = sum(r.state == ReplicaState.RUNNING for r in deployment.replicas)
    return failure(deployment.message) and running < deployment.target_num_replicas


@dataclass(frozen=True)
class Replica:
    replica_id: str
    node_id: str | None
    """None while Ray has not placed the replica's actor (it holds nothing yet)."""
    state: str
    actor_name: str | None = None


@dataclass(frozen=True)
class AppState:
    status: ApplicationStatus
    message: str
    replicas: list[Replica] = field(default_factory=list)
    failure: str = ""
    """Why a replica did not start, while Serve retries it (else empty): of Serve's
    messages, only those that report a failure (`starting_fails`), not its notes on slow
    starts."""

    @property
    def placed(self) -> list[Replica]:
        """The replicas that hold resources on a node now."""
        return [r for r in self.replicas if r.node_id and r.state in HOLDING]


@dataclass(frozen=True)
class ServeSnapshot:
    apps: dict[str, AppState] = field(default_factory=dict)

    def app(self, name: str) -> AppState | None:
        return self.apps.get(name)


def serve_snapshot() -> ServeSnapshot:
    """One consistent read of every application and replica (one call to Serve's
    controller, the same one `serve.status()` makes); empty when Serve is not running."""
    client = _get_global_client(raise_if_no_controller_running=False)
    if client is None:
        return ServeSnapshot()
    details = ServeInstanceDetails(**client.get_serve_details())
    apps = {}
    for name, app in details.applications.items():
        said = [(readable(d.message), starting_fails(d)) for d in app.deployments.values()]
        messages = [app.message] + [message for message, _ in said]
        failures = [message for message, failed in said if failed]
        replicas = [
            Replica(r.replica_id, r.node_id, r.state.value, r.actor_name)
            for deployment in app.deployments.values()
            for r in deployment.replicas
        ]
        apps[name] = AppState(
            status=app.status,
            message=" ".join(m for m in messages if m),
            replicas=replicas,
            failure=" ".join(failures),
        )
    return ServeSnapshot(apps)


def actors_alive(replicas: list[Replica]) -> bool:
    """Whether any of these replicas' actors still lives (and so holds its resources):
    Serve forgets a stopped replica a little before Ray has ended its actor."""
    for replica in replicas:
        if replica.actor_name is None:
            continue
        try:
            ray.get_actor(replica.actor_name, namespace=SERVE_NAMESPACE)
        except ValueError:
            continue
        return True
    return False
