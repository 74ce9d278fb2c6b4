"""The composition root: the one place that puts a running installation together.

It starts (or joins) Ray, then what every installation runs once on it: Serve's HTTP
proxy, the scheduler actor and the router application, wired to one store and one Models
Hub; and it takes them down again. It sits in `client` because it needs every layer below
(cluster, store, hub, scheduler, router) and nothing below may import upward. `preannotate
up`/`down`, the demo, tests and benchmarks start their clusters through it.
"""

import os
import shutil
import socket
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager

import ray
from ray import serve

from preannotate.cluster.license import License
from preannotate.cluster.ray_cluster import (
    connect,
    forget,
    remember,
    remembered,
    start_local_head,
    stop_local_head,
)
from preannotate.configs.paths import database_url, hub_dir
from preannotate.deployments.router import Router
from preannotate.scheduler.actor import find_scheduler, start_scheduler
from preannotate.store import NotFound, Store

ROUTER_APP = "router"
ADMIN = "admin"
DATA_SETTINGS = ("PREANNOTATE_HOME", "PREANNOTATE_HUB_DIR", "PREANNOTATE_DATABASE_URL")
"""The environment that chooses where an installation keeps its data (`configs/paths.py`)."""


def free_port() -> int:
    """A TCP port nobody listens on now, for an API that must not collide with others."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def admin_token(store: Store) -> str:
    """A new token for the `admin` user (created on first start); tokens are stored hashed,
    so each start prints a fresh one."""
    try:
        admin = store.get_user_by_name(ADMIN)
    except NotFound:
        admin = store.create_user(ADMIN, is_admin=True)
    return store.issue_token(admin.id)


def start_control_plane(
    host: str, port: int, database_url: str, hub_root: str, license: License | None
) -> tuple[str, str]:
    """Bring up the API on an already connected Ray; returns its URL and an admin token."""
    store = Store(database_url)  # creates the tables before two actors open the database
    token = admin_token(store)
    store.close()
    serve.start(http_options={"host": host, "port": port})
    start_scheduler(database_url, hub_root, license)
    serve.run(Router.bind(database_url, hub_root), name=ROUTER_APP, route_prefix="/")
    return f"http://{host}:{port}", token


def stop_control_plane() -> None:
    """Remove every Serve application (servers included) and the scheduler."""
    scheduler = find_scheduler()
    serve.shutdown()
    if scheduler is not None:
        ray.kill(scheduler, no_restart=True)


def launch(
    address: str | None, host: str, port: int, license: License | None, num_cpus: int | None
) -> tuple[str, str]:
    """`preannotate up`: start a local head (no address) or join one, then the API.
    Returns the API's URL and an admin token."""
    started_head = address is None
    if address is None:
        address = start_local_head(license, num_cpus)
    connect(address)
    url, token = start_control_plane(host, port, database_url(), str(hub_dir()), license)
    remember(address, started_head, url, token)
    return url, token


def shutdown() -> bool:
    """`preannotate down`: undo what `launch` did; False when it has not run here."""
    state = remembered()
    if state is None:
        return False
    connect(state["address"])
    stop_control_plane()
    ray.shutdown()
    if state["started_head"]:
        stop_local_head()
    forget()
    return True


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
            connect("local")
            try:
                yield start_control_plane(
                    "127.0.0.1", free_port(), database_url(), str(hub_dir()), None
                )
            finally:
                stop_control_plane()
                ray.shutdown()
    finally:
        shutil.rmtree(home, ignore_errors=True)
