"""The composition root: the one place that puts a running installation together.

It starts (or joins) Ray, then what every installation runs once on it: Serve's HTTP
proxy, the scheduler actor and the router application, wired to one store and one Models
Hub; and it takes them down again. It sits in `client` because it needs every layer below
(cluster, store, hub, scheduler, router) and nothing below may import upward. `preannotate
up`/`down`, the demo, tests and benchmarks start their clusters through it.
"""

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from urllib.parse import urlsplit

import ray
from ray import serve

from preannotate.client import kept_token
from preannotate.client.preflight import check_up
from preannotate.cluster.http_ingress import PYTHON, default_ingress, ingress_env
from preannotate.cluster.license import License
from preannotate.cluster.local_head import (
    ClusterError,
    HeadPorts,
    LocalHead,
    free_port,
    start_local_head,
)
from preannotate.cluster.ray_cluster import connect, other_machines, stop_head
from preannotate.cluster.up_state import remember, remembered
from preannotate.configs.paths import SEVERAL_MACHINES, database_url, hub_dir
from preannotate.deployments.router import Router
from preannotate.scheduler.actor import find_scheduler, start_scheduler
from preannotate.store import Store
from preannotate.store.db import sqlite_file

ROUTER_APP = "router"
ADMIN = "admin"
DATA_SETTINGS = (
    "PREANNOTATE_HOME",
    "PREANNOTATE_HUB_DIR",
    "PREANNOTATE_DATABASE_URL",
    "PREANNOTATE_FILES_DIR",
    "PREANNOTATE_FILES_ROOT",
)
"""The environment that chooses where an installation keeps its data (`configs/paths.py`)."""


def admin_token(store: Store) -> str:
    """The admin token of this data directory (`kept_token`): the kept one while it is an
    admin's valid token, so every `up` gives the same one; else (the first start, or after
    it was rotated or its user deleted) a new one for the `admin` user, created or brought
    back here, and kept for the next start."""
    kept = kept_token.read()
    if kept is not None:
        user = store.user_for_token(kept)
        if user is not None and user.is_admin:
            return kept
    token = store.issue_token(store.ensure_admin(ADMIN).id)
    kept_token.keep(token)
    return token


def start_control_plane(
    host: str, port: int, database_url: str, hub_root: str, license: License | None
) -> tuple[str, str]:
    """Bring up the API on an already connected Ray; returns its URL and an admin token.
    Refuses (ClusterError) a SQLite store that nodes on other machines would need."""
    check_store_reach(database_url, other_machines())
    store = Store(database_url)  # creates the tables before two actors open the database
    token = admin_token(store)
    store.close()
    serve.start(proxy_location="HeadOnly", http_options={"host": host, "port": port})
    start_scheduler(database_url, hub_root, license)
    serve.run(Router.bind(database_url, hub_root), name=ROUTER_APP, route_prefix="/")
    return f"http://{host}:{port}", token


def check_store_reach(database_url: str, elsewhere: list[str]) -> None:
    """A SQLite store is a file on this machine, which the processes on other machines
    (`elsewhere`: their host names) could not open: refuse at `up`, saying what such a
    cluster needs, rather than start servers that fail there. Nodes that join later fail
    their replicas with the same advice (`StoreNotHere`)."""
    if sqlite_file(database_url) is None or not elsewhere:
        return
    shown = ", ".join(elsewhere[:3]) + (", ..." if len(elsewhere) > 3 else "")
    raise ClusterError(
        f"the store is a SQLite file on this machine, but the cluster has nodes on "
        f"{len(elsewhere)} other machine(s) ({shown}) that could not open it: set "
        "PREANNOTATE_DATABASE_URL to a database every node reaches (PostgreSQL), and mount "
        "the hub (PREANNOTATE_HUB_DIR) and the files folder (PREANNOTATE_FILES_DIR) at the "
        f"same path on every node ({SEVERAL_MACHINES})"
    )


def stop_control_plane() -> None:
    """Remove the scheduler, then every Serve application (servers included). The
    scheduler goes first: its running jobs stay `running` in the store and the next start
    resumes them, where a scheduler that saw its servers vanish would cancel them."""
    scheduler = find_scheduler()
    if scheduler is not None:
        ray.kill(scheduler, no_restart=True)
    serve.shutdown()


@dataclass(frozen=True)
class Launched:
    """What `up` brought up: the API (URL, admin token), the Ray cluster it runs on, and
    whether this `up` started that cluster's head or found one that an earlier `up` here
    started."""

    url: str
    token: str
    ray_address: str
    head: LocalHead | None
    joined_running: bool = False


def launch(
    address: str | None,
    host: str,
    port: int,
    license: License | None,
    num_cpus: int | None,
    head_ports: HeadPorts,
    ingress: str = PYTHON,
) -> Launched:
    """`preannotate up`: start a local head (no address) or join one, then the API.

    Everything that can be checked is checked before anything starts (`preflight.check_up`);
    if a later step fails, what this call started is stopped again before the error goes on."""
    running = check_up(address, host, port, head_ports)
    if running is not None:
        return _join_running(running, host, port, license)
    head = None
    if address is None:
        resources = license.resources() if license else {}
        os.environ.update(ingress_env(ingress))  # the head's processes inherit it
        head = start_local_head(head_ports, resources, num_cpus)
    try:
        ray_address = connect(head.address if head else address)
        url, token = start_control_plane(host, port, database_url(), str(hub_dir()), license)
        remember(ray_address, head is not None, url, token)
    except BaseException:
        ray.shutdown()
        if head is not None:
            stop_head(head)
        raise
    return Launched(url, token, ray_address, head)


def _join_running(head: LocalHead, host: str, port: int, license: License | None) -> Launched:
    """`up --address ...` while the head an earlier `up` here started runs: join that head
    and (re)start the API on it, where it already serves if it does; `down` still stops
    the head."""
    state = remembered()
    if state is not None:
        serving = urlsplit(state["url"])
        host, port = serving.hostname or host, serving.port or port
    ray_address = connect(head.address)
    url, token = start_control_plane(host, port, database_url(), str(hub_dir()), license)
    remember(ray_address, True, url, token)
    return Launched(url, token, ray_address, head, joined_running=True)


def leave_cluster(address: str) -> None:
    """`preannotate down` on a cluster `up` only joined: remove the API and its servers,
    leave the cluster running."""
    connect(address)
    stop_control_plane()
    ray.shutdown()


def stop_own_ray() -> None:
    """End the Ray cluster this process started (`ray.init` with nothing to join), Serve
    and all: `ray.shutdown()` ends its processes. `serve.shutdown()` first would only add
    noise: Serve's controller kills itself under the driver's call, and Ray reports that as
    a task to retry ("(raylet) Task ServeController.graceful_shutdown failed ...") after a
    run that went well."""
    ray.shutdown()


@contextmanager
def _data_dir(path: str) -> Iterator[None]:
    """Point this process, and the Ray workers it starts, at `path` for all data (store,
    hub, rules), whatever the user's settings; they are restored afterwards."""
    saved = {name: os.environ.pop(name, None) for name in DATA_SETTINGS}
    os.environ["PREANNOTATE_HOME"] = path
    try:
        yield
    finally:
        for name, value in saved.items():
            os.environ.pop(name, None)
            if value is not None:
                os.environ[name] = value


@contextmanager
def throwaway_cluster() -> Iterator[tuple[str, str]]:
    """A whole installation that lives only as long as the block, for `preannotate demo`:
    a Ray cluster owned by this process (not a `ray start` head, so it cannot collide with
    one `up` started), the API on a free port, and a temporary data directory that is
    removed afterwards. The user's store, hub and cluster are never touched.
    Yields the API's URL and an admin token."""
    if ray.is_initialized():
        raise RuntimeError("a throwaway cluster needs a process not yet connected to Ray")
    home = tempfile.mkdtemp(prefix="preannotate-demo-")
    try:
        with _data_dir(home):
            os.environ.update(ingress_env(default_ingress()))
            connect("local")
            try:
                yield start_control_plane(
                    "127.0.0.1", free_port(), database_url(), str(hub_dir()), None
                )
            finally:
                stop_own_ray()
    finally:
        shutil.rmtree(home, ignore_errors=True)
