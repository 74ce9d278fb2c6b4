"""The Ray cluster as a resource: start a local head or join one, and read its nodes."""

import json
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import ray
from ray._private.state import available_resources_per_node, total_resources_per_node

from preannotate.cluster.capacity import NodeResources
from preannotate.cluster.license import License
from preannotate.configs.paths import data_dir

NAMESPACE = "preannotate"
"""Named actors (the scheduler) and Serve apps live in one namespace per installation."""


def ray_executable() -> str:
    """The `ray` command of this environment, even when its bin folder is not on PATH."""
    local = Path(sys.executable).parent / "ray"
    return str(local) if local.exists() else shutil.which("ray") or "ray"


def _state_file() -> Path:
    return data_dir() / "cluster.json"


def start_local_head(license: License | None, num_cpus: int | None = None) -> str:
    """`ray start --head` with the license's tokens; it outlives this process until `down`.
    Its dashboard (127.0.0.1:8265) accepts `ray job submit`."""
    resources = license.resources() if license else {}
    command = [
        ray_executable(),
        "start",
        "--head",
        "--disable-usage-stats",
        "--dashboard-host=127.0.0.1",
        f"--resources={json.dumps(resources)}",
    ]
    if num_cpus is not None:
        command.append(f"--num-cpus={num_cpus}")
    done = subprocess.run(command, capture_output=True, text=True, env=os.environ.copy())
    if done.returncode != 0:
        raise RuntimeError(f"`ray start --head` failed:\n{done.stderr or done.stdout}")
    return "auto"


def stop_local_head() -> None:
    subprocess.run([ray_executable(), "stop"], capture_output=True, text=True)


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


def connect(address: str | None) -> None:
    """Join the cluster at `address` ("auto" finds a local head) in our namespace."""
    if not ray.is_initialized():
        logging.getLogger("ray.serve").setLevel(logging.WARNING)
        ray.init(
            address=address, namespace=NAMESPACE, log_to_driver=False, logging_level=logging.WARNING
        )


def nodes() -> list[NodeResources]:
    """Every live node with its total and currently free resources."""
    totals = total_resources_per_node()
    available = available_resources_per_node()
    return [
        NodeResources(node_id=node, total=total, available=available.get(node, {}))
        for node, total in totals.items()
    ]
