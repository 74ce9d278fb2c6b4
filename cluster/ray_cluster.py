"""The Ray cluster as a resource: join one, remember what `up` did, and read its nodes.

Starting and stopping a local head is `local_head.py`'s; this module is what needs Ray.
"""

import json
import logging
from pathlib import Path
from typing import Any

import ray
from ray._common.utils import reset_ray_address
from ray._private.state import available_resources_per_node, total_resources_per_node
from ray._private.utils import read_ray_address

from preannotate.cluster.capacity import NodeResources
from preannotate.configs.paths import data_dir

NAMESPACE = "preannotate"
"""Named actors (the scheduler) and Serve apps live in one namespace per installation."""


def _state_file() -> Path:
    return data_dir() / "cluster.json"


def remember(address: str, started_head: bool, url: str, token: str) -> None:
    """What `up` did, so that `down` undoes exactly that (and leaves a joined cluster up);
    the URL and admin token let local CLI commands find the API. Readable by its owner only."""
    state = {"address": address, "started_head": started_head, "url": url, "token": token}
    file = _state_file()
    file.touch(mode=0o600)
    file.chmod(0o600)
    file.write_text(json.dumps(state))


def remembered() -> dict[str, Any] | None:
    file = _state_file()
    return json.loads(file.read_text()) if file.exists() else None


def forget() -> None:
    _state_file().unlink(missing_ok=True)


def connect(address: str | None) -> str:
    """Join the cluster at `address` ("auto" finds a local head) in our namespace; returns
    its GCS address, as other machines and `ray start --address` name it."""
    if not ray.is_initialized():
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


def nodes() -> list[NodeResources]:
    """Every live node with its total and currently free resources."""
    totals = total_resources_per_node()
    available = available_resources_per_node()
    return [
        NodeResources(node_id=node, total=total, available=available.get(node, {}))
        for node, total in totals.items()
    ]
