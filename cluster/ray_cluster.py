"""The Ray cluster as a resource: join one, and read its nodes.

Starting and stopping a local head is `local_head.py`'s, and what `up` did is
`up_state.py`'s; this module is what needs Ray.
"""

import logging
import os
import socket

import ray
from ray._common.utils import reset_ray_address
from ray._private.state import available_resources_per_node, total_resources_per_node
from ray._private.utils import read_ray_address
from ray._raylet import Config

from preannotate.cluster.capacity import NodeResources
from preannotate.cluster.local_head import LocalHead, recorded_head

NAMESPACE = "preannotate"
"""Named actors (the scheduler) and Serve apps live in one namespace per installation."""

ON_THE_HEAD = {"node:__internal_head__": 0.001}
"""Resources that place an actor on the head node: Ray gives this resource to the head
alone. The scheduler and the router stay there, beside Serve's controller, while workers
come and go, and a SQLite store is a file on the head's machine."""


def connect(address: str | None) -> str:
    """Join the cluster at `address` ("auto" finds a local head) in our namespace; returns
    its GCS address, as other machines and `ray start --address` name it.

    A head that `up` started here is joined with the token authentication it was started
    with (`LocalHead.auth_mode`), unless `RAY_AUTH_MODE` says otherwise: `ray.init` given
    an address would not turn it on by itself, and would be refused by a head that has it."""
    if not ray.is_initialized():
        head = recorded_head()
        ours = head is not None and (
            address in (None, "auto") or address.rsplit(":", 1)[-1] == str(head.port)
        )
        if ours and "RAY_AUTH_MODE" not in os.environ:
            os.environ["RAY_AUTH_MODE"] = head.auth_mode
            Config.initialize("")  # Ray read its settings when imported: read them again
        logging.getLogger("ray.serve").setLevel(logging.WARNING)
        ray.init(
            address=address, namespace=NAMESPACE, log_to_driver=False, logging_level=logging.WARNING
        )
    return ray.get_runtime_context().gcs_address


def forget_ray_address(port: int) -> None:
    """After a local head on `port` stopped: `ray start` wrote its address where a plain
    `ray.init()` on this machine looks for a cluster to join; remove it (as `ray stop` does),
    unless it already names another cluster."""
    address = read_ray_address()
    if address is not None and address.rsplit(":", 1)[-1] == str(port):
        reset_ray_address()


def stop_head(head: LocalHead) -> int:
    """Stop a head `up` started (its processes; see `LocalHead.stop`), and make a plain
    `ray.init()` here stop looking for it."""
    stopped = head.stop()
    forget_ray_address(head.port)
    return stopped


def nodes() -> list[NodeResources]:
    """Every live node with its total and currently free resources."""
    totals = total_resources_per_node()
    available = available_resources_per_node()
    return [
        NodeResources(node_id=node, total=total, available=available.get(node, {}))
        for node, total in totals.items()
    ]


def other_machines() -> list[str]:
    """The host names of the machines with live nodes other than this process's (all of
    them for a Ray Client driver on a laptop). Host names, not addresses: a machine's
    node may listen on another of its addresses than the one this process would pick."""
    here = socket.gethostname()
    return sorted({n["NodeManagerHostname"] for n in ray.nodes() if n["Alive"]} - {here})
