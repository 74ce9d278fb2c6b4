"""Will a server fit on the cluster, and if not, why: the check behind "never hang on deploy".

Ray Serve waits forever for replicas it cannot place (docs/architecture.md, "Deploy"), so
before deploying we compare the request with what each node has and, when it cannot fit,
say at once what is missing and which servers could be deleted to free it.

Everything here is plain data in, plain data out, with no Ray imports: the Ray-facing code
reads `ray.nodes()` (or the state API) into `NodeResources` and the server registry into
`ServerHolding`, and tests exercise every case in milliseconds.

License seats are counted here too, across the whole cluster (`SeatUse`): a node's
`license_token` only says that licensed work may run there, so a licensed request must
also fit in the seats the license has left.

Rules mirrored from Ray:
- a replica must fit on ONE node; the replicas of one server may spread over nodes;
- Ray drops a key from a node's available resources when it is fully used, so a missing
  key means zero;
- resources are fractional (`num_cpus=0.5`), so comparisons allow a small epsilon.
"""

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, computed_field

CPU, GPU, MEMORY, LICENSE_TOKEN = "CPU", "GPU", "memory", "license_token"
SEATS = "seats"
"""The `Shortfall.resource` of a request the license's seats cannot take."""

EPSILON = 1e-6
"""Slack for float sums: 0.1 + 0.2 CPUs must fit where 0.3 are free."""

_GIB = 1024**3
_MIB = 1024**2

_NO_NODES = "the cluster has no nodes (is Ray running?)"

_HINTS = {
    LICENSE_TOKEN: " (start with --license FILE, or declare license_token on the nodes; "
    "see docs/cluster.md)",
}
"""What to do about a resource the cluster lacks entirely, where that is not obvious."""

Resources = dict[str, float]

ONLY_ITS_GPUS = {"RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO": "1"}
"""Ray sets `CUDA_VISIBLE_DEVICES` to the GPUs it gave an actor, but Ray 2.60 leaves it as
the node has it when the actor asked for none (ray-project/ray#54868): a CPU server's
zero-shot model on a GPU node would then load onto a GPU that Ray counts as free for the
servers that ask for one. This makes Ray set an empty list for zero GPUs, so the actor,
and the bulk process it starts, see none (`tests/test_gpu.py`)."""


class ResourceRequest(BaseModel):
    """What one server asks for: the replica's `ray_actor_options`, and how many replicas.

    Defaults are zero on purpose: Serve's implicit 1 CPU per replica is the caller's
    business to pass explicitly, so this check sees exactly what Ray will be asked for.
    """

    model_config = ConfigDict(frozen=True)

    num_cpus: float = Field(default=0.0, ge=0)
    num_gpus: float = Field(default=0.0, ge=0)
    memory_bytes: int = Field(default=0, ge=0)
    license_tokens: float = Field(default=0.0, ge=0)
    replicas: int = Field(default=1, ge=1)

    @classmethod
    def of(
        cls,
        *,
        num_cpus: float,
        num_gpus: float = 0.0,
        memory_mb: float = 0.0,
        license_tokens: float = 0.0,
        replicas: int = 1,
    ) -> "ResourceRequest":
        """A request in the units configurations use (memory in MiB)."""
        return cls(
            num_cpus=num_cpus,
            num_gpus=num_gpus,
            memory_bytes=int(memory_mb * _MIB),
            license_tokens=license_tokens,
            replicas=replicas,
        )

    @property
    def seats(self) -> int:
        """License seats it takes: one per licensed replica (a training run is one)."""
        return self.replicas if self.license_tokens > 0 else 0

    def actor_options(self) -> dict[str, Any]:
        """The `ray_actor_options` of one replica (or trainer, or Spark's pipeline actor)
        asking for exactly this, and seeing no more GPUs than it asked for (`ONLY_ITS_GPUS`)."""
        options: dict[str, Any] = {
            "num_cpus": self.num_cpus,
            "num_gpus": self.num_gpus,
            "runtime_env": {"env_vars": dict(ONLY_ITS_GPUS)},
        }
        if self.memory_bytes:
            options["memory"] = self.memory_bytes
        if self.license_tokens:
            options["resources"] = {LICENSE_TOKEN: self.license_tokens}
        return options

    def per_replica(self) -> Resources:
        """The nonzero resources of one replica, under Ray's resource names."""
        wanted = {
            CPU: self.num_cpus,
            GPU: self.num_gpus,
            MEMORY: float(self.memory_bytes),
            LICENSE_TOKEN: self.license_tokens,
        }
        return {key: amount for key, amount in wanted.items() if amount > 0}


class NodeResources(BaseModel):
    """One Ray node as `ray.nodes()` reports it (only the keys named in a request matter)."""

    node_id: str
    total: Resources
    available: Resources
    """Free now. Ray omits a fully used key, so an absent key means 0, never "unlimited"."""


class ServerHolding(BaseModel):
    """What a deployed server holds, so the check can suggest deleting it.

    `resources` is summed over its replicas. `per_node` (node_id -> resources held there)
    makes suggestions exact; without it the server is assumed to sit on whichever single
    node its release would help, which is right for the common one-replica server.
    """

    server_id: str
    resources: Resources
    per_node: dict[str, Resources] = Field(default_factory=dict)

    def holds(self, key: str) -> bool:
        return self.resources.get(key, 0.0) > EPSILON


def shows_free(
    nodes: Sequence[NodeResources],
    held: dict[str, Resources],
    while_held: Sequence[NodeResources],
) -> bool:
    """Whether every node shows what was held there (node_id -> resources) freed: free on
    top of what it showed free `while_held`, up to the node's total. Ray's view of free
    resources follows an actor's end by a moment; a node with room to spare already
    showed the held amount free before the release, so only the rise tells it came."""
    by_id = {node.node_id: node for node in nodes}
    before = {node.node_id: node.available for node in while_held}
    for node_id, resources in held.items():
        node = by_id.get(node_id)
        if node is None:  # the node left the cluster: nothing on it to wait for
            continue
        for key, amount in resources.items():
            wanted = before.get(node_id, {}).get(key, 0.0) + amount
            if node.available.get(key, 0.0) + EPSILON < min(wanted, node.total.get(key, 0.0)):
                return False
    return True


class SeatUse(BaseModel):
    """A license's seats and what holds them now, counted across the whole cluster.

    Every live replica of a licensed server and every licensed training run holds one
    seat, on whichever node it runs, so adding nodes adds no seats.
    """

    model_config = ConfigDict(frozen=True)

    seats: int = Field(ge=0)
    servers: dict[str, int] = Field(default_factory=dict)
    """server id -> how many of its licensed replicas are live."""
    training_jobs: list[int] = Field(default_factory=list)
    """Job ids of the licensed training runs, one seat each."""

    @property
    def used(self) -> int:
        return sum(self.servers.values()) + len(self.training_jobs)

    @property
    def free(self) -> int:
        return max(0, self.seats - self.used)

    def freed_by(self, deleted: Sequence[ServerHolding]) -> int:
        """Seats that deleting these servers gives back."""
        return sum(self.servers.get(holding.server_id, 0) for holding in deleted)

    def holders(self) -> str:
        """Who holds the seats, e.g. "server-3 (2 licensed replicas), training job 7"."""
        servers = [
            f"{server_id} ({_count(held, 'licensed replica')})"
            for server_id, held in self.servers.items()
            if held
        ]
        jobs = [f"training job {job_id}" for job_id in self.training_jobs]
        return ", ".join(servers + jobs) or "nothing"


class Shortfall(BaseModel):
    """One reason a request does not fit, worded for a list and for a sentence."""

    resource: str
    detail: str
    """Short line for `FitResult.missing`, e.g. "GPU: need 1 per replica, no node has any"."""
    sentence: str
    """Clause for `FitResult.message`, e.g. "no node in the cluster has any GPU"."""


class FitResult(BaseModel):
    """The answer of `check_fit`; `message` is what the user sees when it does not fit."""

    fits: bool
    placement: list[str] = Field(default_factory=list)
    """One node id per replica, when it fits."""
    shortfalls: list[Shortfall] = Field(default_factory=list)
    never_fits: bool = False
    """Even an empty cluster could not hold it: deleting servers will not help."""
    delete_candidates: list[str] = Field(default_factory=list)
    delete_together: bool = False
    """True when no single server frees enough and ALL candidates must go."""

    @computed_field  # type: ignore[prop-decorator]
    @property
    def missing(self) -> list[str]:
        """What is missing, one human-readable line per resource."""
        return [shortfall.detail for shortfall in self.shortfalls]

    @computed_field  # type: ignore[prop-decorator]
    @property
    def message(self) -> str:
        """One explanation combining what is missing with what the user can do about it."""
        return self.explain("deploy")

    def explain(self, action: str) -> str:
        """`message` for another action than a deploy (e.g. "train")."""
        if self.fits:
            return f"Fits: {_count(len(self.placement), 'replica')} on {', '.join(self.placement)}."
        reasons = "; ".join(shortfall.sentence for shortfall in self.shortfalls)
        return f"Cannot {action}: {reasons}. {self._advice()}"

    def _advice(self) -> str:
        if self.never_fits and all(s.resource == SEATS for s in self.shortfalls):
            return (
                "Deleting servers will not help: ask for fewer replicas, "
                "or for a license with more seats."
            )
        if self.never_fits:
            return "Deleting servers will not help: add nodes that can hold it, or ask for less."
        servers = ", ".join(self.delete_candidates)
        if self.delete_candidates and self.delete_together:
            return f"Delete all of these servers on the Clusters page to free it: {servers}."
        if self.delete_candidates:
            return f"Delete one of these servers on the Clusters page to free it: {servers}."
        # Seats held by training runs come back when they end; more nodes bring no seats.
        if any(s.resource != SEATS for s in self.shortfalls):
            wait = "running jobs to finish or add nodes"
        else:
            wait = "running training jobs to finish"
        return f"No deployed server holds enough of it; wait for {wait}."


def check_fit(
    request: ResourceRequest,
    nodes: Sequence[NodeResources],
    holdings: Sequence[ServerHolding] = (),
    seats: SeatUse | None = None,
) -> FitResult:
    """Decide whether `request` can be placed now, and if not, why and what would help.

    `seats`, when a license is loaded, also limits licensed requests cluster-wide.
    Placement is greedy: each replica goes to the node that can still take the most
    replicas, subtracting as it places. Replicas of one request are identical, so a node's
    room does not depend on where the others went and greedy placement is exact.
    """
    need = request.per_replica()
    free = {node.node_id: dict(node.available) for node in nodes}
    placement = _place(need, request.replicas, free)
    seats_fit = seats is None or request.seats <= seats.free
    if placement is not None and seats_fit:
        return FitResult(fits=True, placement=placement)

    total = {node.node_id: dict(node.total) for node in nodes}
    never = [] if seats is None else _seat_limit(request.seats, seats)
    if placement is None:
        never += _shortfalls(need, request.replicas, total, empty_cluster=True, holders={})
    if never:
        return FitResult(fits=False, shortfalls=never, never_fits=True)

    holders = {key: [h.server_id for h in holdings if h.holds(key)] for key in need}
    now = [] if seats_fit or seats is None else [_seats_in_use(request.seats, seats)]
    if placement is None:
        now += _shortfalls(need, request.replicas, free, empty_cluster=False, holders=holders)

    def frees_enough(deleted: Sequence[ServerHolding]) -> bool:
        if seats is not None and request.seats > seats.free + seats.freed_by(deleted):
            return False
        return placement is not None or _freeing_fits(need, request, nodes, deleted)

    singles = [h.server_id for h in holdings if frees_enough([h])]
    if singles:
        return FitResult(fits=False, shortfalls=now, delete_candidates=singles)
    group = _group_to_delete(need, holdings, frees_enough)
    return FitResult(
        fits=False, shortfalls=now, delete_candidates=group, delete_together=bool(group)
    )


def _seat_limit(wanted: int, seats: SeatUse) -> list[Shortfall]:
    """A request for more seats than the license has at all."""
    if wanted <= seats.seats:
        return []
    return [
        Shortfall(
            resource=SEATS,
            detail=f"seats: need {wanted}, the license has {seats.seats}",
            sentence=f"it needs {_count(wanted, 'license seat')} (one per licensed replica) "
            f"but the license has {_count(seats.seats, 'seat')}",
        )
    ]


def _seats_in_use(wanted: int, seats: SeatUse) -> Shortfall:
    """Seats the license has, but that licensed servers and training runs hold now."""
    in_use = f"in use by {seats.holders()}"
    if seats.free == 0:
        sentence = (
            f"no license seat is free (the license has {_count(seats.seats, 'seat')}, {in_use})"
        )
    else:
        sentence = (
            f"it needs {_count(wanted, 'license seat')} but only {seats.free} of the license's "
            f"{seats.seats} seats {'is' if seats.free == 1 else 'are'} free ({in_use})"
        )
    return Shortfall(
        resource=SEATS,
        detail=f"seats: need {wanted}, {seats.free} of {seats.seats} free ({in_use})",
        sentence=sentence,
    )


def _room(need: Mapping[str, float], have: Mapping[str, float], cap: int) -> int:
    """How many replicas (at most `cap`) fit in `have`; a request of nothing fits `cap`."""
    counts = (math.floor(have.get(key, 0.0) / amount + EPSILON) for key, amount in need.items())
    return max(0, min([cap, *counts]))


def _place(need: Resources, replicas: int, pool: dict[str, Resources]) -> list[str] | None:
    """Node ids for each replica, subtracting from a copy of `pool`; None if they don't fit."""
    pool = {node_id: dict(have) for node_id, have in pool.items()}
    placement: list[str] = []
    for _ in range(replicas):
        rooms = {node_id: _room(need, have, replicas) for node_id, have in pool.items()}
        best = max(rooms, key=rooms.__getitem__, default=None)
        if best is None or rooms[best] == 0:
            return None
        placement.append(best)
        for key, amount in need.items():
            pool[best][key] = pool[best].get(key, 0.0) - amount
    return placement


def _shortfalls(
    need: Resources,
    replicas: int,
    pool: dict[str, Resources],
    *,
    empty_cluster: bool,
    holders: dict[str, list[str]],
) -> list[Shortfall]:
    """Why `replicas` replicas do not fit `pool`: node totals (an empty cluster) or free now.

    Per resource first; if each resource alone would do, the problem is that no node has
    them all together.
    """
    if not pool:
        return [Shortfall(resource="node", detail="cluster: no nodes", sentence=_NO_NODES)]
    found = []
    for key, amount in need.items():
        largest = max(have.get(key, 0.0) for have in pool.values())
        room = sum(_room({key: amount}, have, replicas) for have in pool.values())
        if empty_cluster:
            shortfall = _capacity_shortfall(key, amount, replicas, largest, room)
        else:
            shortfall = _free_shortfall(key, amount, replicas, largest, room, holders.get(key))
        if shortfall:
            found.append(shortfall)
    if found or _place(need, replicas, pool) is not None:
        return found
    return [_not_together(need, replicas, pool, empty_cluster)]


def _capacity_shortfall(
    key: str, amount: float, replicas: int, largest: float, room: int
) -> Shortfall | None:
    """A resource the cluster's nodes lack even when nothing runs on them."""
    need = _amount(key, amount)
    if largest <= EPSILON:
        return Shortfall(
            resource=key,
            detail=f"{key}: need {need} per replica, no node has any",
            sentence=f"it asks for {need} {key} per replica "
            f"but no node in the cluster has any {key}{_HINTS.get(key, '')}",
        )
    if largest + EPSILON < amount:
        return Shortfall(
            resource=key,
            detail=f"{key}: need {need} per replica, the largest node has {_amount(key, largest)}",
            sentence=f"it asks for {need} {key} per replica "
            f"but the largest node has {_amount(key, largest)} {key}",
        )
    if room < replicas:
        return Shortfall(
            resource=key,
            detail=f"{key}: need {need} per replica for {replicas} replicas, "
            f"the cluster has room for {room}",
            sentence=f"its {replicas} replicas need {need} {key} each "
            f"but the cluster's nodes have room for only {room}",
        )
    return None


def _free_shortfall(
    key: str, amount: float, replicas: int, largest: float, room: int, holders: list[str] | None
) -> Shortfall | None:
    """A resource the nodes have, but that running servers or jobs hold right now."""
    need = _amount(key, amount)
    held = [f"held by {', '.join(holders)}"] if holders else []
    if largest + EPSILON < amount:
        if largest <= EPSILON:
            sentence, notes = f"no node has a free {key}", [f"need {need} per replica", *held]
        else:
            sentence = f"no node has {need} {key} free"
            notes = [f"at most {_amount(key, largest)} on one node", *held]
        return Shortfall(
            resource=key,
            detail=f"{key}: need {need} per replica, {_amount(key, largest)} free{_aside(held)}",
            sentence=f"{sentence} ({'; '.join(notes)})",
        )
    if room < replicas:
        return Shortfall(
            resource=key,
            detail=f"{key}: need {need} per replica for {replicas} replicas, "
            f"free room for {room}{_aside(held)}",
            sentence=f"its {replicas} replicas need {need} {key} each "
            f"but the free {key} has room for only {room}{_aside(held)}",
        )
    return None


def _aside(notes: list[str]) -> str:
    return f" ({'; '.join(notes)})" if notes else ""


def _not_together(
    need: Resources, replicas: int, pool: dict[str, Resources], empty_cluster: bool
) -> Shortfall:
    """Each resource exists somewhere, but not enough of them on the same node."""
    wanted = " and ".join(f"{_amount(key, amount)} {key}" for key, amount in need.items())
    state = "" if empty_cluster else " free"
    room = sum(_room(need, have, replicas) for have in pool.values())
    if room:
        return Shortfall(
            resource="node",
            detail=f"node: {replicas} replicas of {wanted}, room for {room}",
            sentence=f"a replica needs {wanted}{state} on one node "
            f"and the nodes have room for only {room} of {replicas} replicas",
        )
    return Shortfall(
        resource="node",
        detail=f"node: no node has {wanted}{state} together",
        sentence=f"a replica needs {wanted}{state} on one node and no node has them together",
    )


def _freeing_fits(
    need: Resources,
    request: ResourceRequest,
    nodes: Sequence[NodeResources],
    deleted: Sequence[ServerHolding],
) -> bool:
    """Whether the request fits once `deleted` release what they hold (any guessed spot)."""
    return any(
        _place(need, request.replicas, _after_release(nodes, release)) is not None
        for release in _release_options(deleted, nodes)
    )


def _release_options(
    deleted: Sequence[ServerHolding], nodes: Sequence[NodeResources]
) -> list[dict[str, list[Resources]]]:
    """Where the deleted servers' resources may come back: node_id -> amounts.

    A server with `per_node` comes back exactly there. A single server without it is tried
    on each node in turn; several such servers are only combined on a one-node cluster,
    where there is nothing to guess, rather than trying every way to spread them.
    """
    known: dict[str, list[Resources]] = {}
    unknown: list[ServerHolding] = []
    for holding in deleted:
        if holding.per_node:
            for node_id, held in holding.per_node.items():
                known.setdefault(node_id, []).append(held)
        else:
            unknown.append(holding)
    if not unknown:
        return [known]
    if len(unknown) == 1 or len(nodes) == 1:
        return [
            {**known, node.node_id: [*known.get(node.node_id, []), *(h.resources for h in unknown)]}
            for node in nodes
        ]
    return []


def _after_release(
    nodes: Sequence[NodeResources], release: dict[str, list[Resources]]
) -> dict[str, Resources]:
    """Free resources per node after a release, never above the node's total."""
    pool: dict[str, Resources] = {}
    for node in nodes:
        have = dict(node.available)
        for held in release.get(node.node_id, []):
            for key, amount in held.items():
                have[key] = min(node.total.get(key, 0.0), have.get(key, 0.0) + amount)
        pool[node.node_id] = have
    return pool


def _group_to_delete(
    need: Resources,
    holdings: Sequence[ServerHolding],
    frees_enough: Callable[[Sequence[ServerHolding]], bool],
) -> list[str]:
    """A small set of servers that only together free enough; empty if none does.

    Start from every server holding something the request needs, then drop servers whose
    deletion turns out unnecessary, smallest holders first, so the big holders remain.
    """
    group = [h for h in holdings if any(h.holds(key) for key in need)]
    if not group or not frees_enough(group):
        return []
    for holding in sorted(group, key=lambda h: _weight(h, need)):
        rest = [h for h in group if h is not holding]
        if frees_enough(rest):
            group = rest
    return [h.server_id for h in group]


def _weight(holding: ServerHolding, need: Resources) -> float:
    """How many replicas' worth of the needed resources a server holds."""
    return sum(holding.resources.get(key, 0.0) / amount for key, amount in need.items())


def _amount(key: str, value: float) -> str:
    """A resource amount as people write it: "0.5", "2", "512 MiB", "4 GiB"."""
    if key != MEMORY:
        return f"{round(value, 4):g}"
    if value >= _GIB:
        return f"{round(value / _GIB, 2):g} GiB"
    return f"{round(value / _MIB, 2):g} MiB"


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}" if number == 1 else f"{number} {noun}s"
