"""Start and stop what every installation runs once: Serve's HTTP proxy, the scheduler
actor and the router application."""

import socket

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
