"""`preannotate up` and `down` as a newcomer meets them, on real Ray heads started by the
console script: an `up` that is refused starts nothing, one that fails half-way stops what
it started, a second `up` here is refused (or joins with `--address auto`), and `down`
stops exactly the head `up` started while another Ray on this machine keeps running; a job
that `down` interrupts is resumed by the next `up`. A worker node that plays one on
another machine (a host name and a data directory of its own) makes `up` refuse a SQLite
store, and serves with PostgreSQL.

Every `up` gets its own data directory and free ports, so these tests run beside any other
Ray on the machine and never touch it.
"""

import json
import os
import re
import select
import shlex
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import httpx
import psutil
import pytest

from preannotate.client.api import ApiError, Client
from preannotate.cluster.local_head import ray_executable
from preannotate.configs.project import load_project_config
from tests.conftest import EXAMPLES, labels_xml
from tests.test_store import postgres_database  # noqa: F401

pytestmark = pytest.mark.own_ray_head
PREANNOTATE = str(Path(sys.executable).parent / "preannotate")
NOTEBOOK = """
import sys, ray
ray.init(address="local", num_cpus=1, include_dashboard=False, log_to_driver=False)

@ray.remote
def ping():
    return "pong"

print("ready", flush=True)
for _ in sys.stdin:
    print(ray.get(ping.remote()), flush=True)
"""
"""A notebook's own Ray (`ray.init()`): it answers each line on stdin by running a task."""


def free_ports(count: int, *taken: int) -> list[int]:
    """`count` different ports nobody listens on now, none of `taken` (ports picked
    earlier, which the system may hand out again once they were let go)."""
    found: list[int] = []
    with ExitStack() as held:
        while len(found) < count:
            sock = held.enter_context(socket.socket())
            sock.bind(("127.0.0.1", 0))
            if (port := sock.getsockname()[1]) not in taken:
                found.append(port)
    return found


def preannotate(
    home: Path, *args: str, ray_token: Path | None = None, **settings: str
) -> subprocess.CompletedProcess:
    """The console script with its own data directory (and other `PREANNOTATE_...`
    settings), joining no Ray that this process knows of. With `ray_token`, a home folder
    holding `.ray/auth_token`, Ray's token authentication is on as `ray start` turns it on
    by default (`RAY_AUTH_MODE` unset); else it is off."""
    env = os.environ | {"PREANNOTATE_HOME": str(home), "RAY_AUTH_MODE": "disabled"} | settings
    env.pop("RAY_ADDRESS", None)
    if ray_token is not None:
        env.pop("RAY_AUTH_MODE")
        env["HOME"] = str(ray_token)
    return subprocess.run(
        [PREANNOTATE, *args], capture_output=True, text=True, env=env, timeout=600
    )


def up_options(api: int, gcs: int) -> list[str]:
    dashboard, client_server = free_ports(2, api, gcs)
    return [
        "--port",
        str(api),
        "--ray-port",
        str(gcs),
        "--dashboard-port",
        str(dashboard),
        "--ray-client-server-port",
        str(client_server),
        "--num-cpus",
        "2",
    ]


def naming_port(port: int) -> list[psutil.Process]:
    """Processes whose command line names `port`: a head's `ray start`, GCS, raylet, ..."""
    found = []
    for process in psutil.process_iter(["cmdline"]):
        cmdline = " ".join(process.info["cmdline"] or [])
        if re.search(rf"[=:]{port}\b", cmdline):
            found.append(process)
    return found


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("error:")]


@pytest.fixture(scope="module")
def notebook() -> Iterator[subprocess.Popen]:
    """An unrelated Ray on this machine, as a notebook's `ray.init()` starts one."""
    process = subprocess.Popen(
        [sys.executable, "-c", NOTEBOOK],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=os.environ | {"RAY_AUTH_MODE": "disabled"},
    )
    try:
        assert _answer(process, timeout=240) == "ready"
        yield process
    finally:
        process.terminate()
        process.wait(timeout=60)


def _answer(process: subprocess.Popen, timeout: float) -> str:
    ready, _, _ = select.select([process.stdout], [], [], timeout)
    return process.stdout.readline().strip() if ready else ""


def test_up_on_a_taken_port_refuses_at_once_and_starts_nothing(tmp_path: Path) -> None:
    home = tmp_path / "home"
    api, gcs = free_ports(2)
    for taken, what, option in (
        (api, "the API's HTTP port", "--port"),
        (gcs, "Ray's GCS port", "--ray-port"),
    ):
        with socket.socket() as busy:
            busy.bind(("127.0.0.1", taken))
            busy.listen()
            refused = preannotate(home, "up", *up_options(api, gcs))
        assert refused.returncode == 2, refused.stderr
        assert refused.stderr == (
            f"error: port {taken} ({what}) is already in use on this machine; "
            f"choose another with {option}\n"
        )
        assert naming_port(gcs) == []
        assert not (home / "ray-head.json").exists()
    workers = preannotate(home, "up", *up_options(api, gcs), "--ray-client-server-port", "11101")
    assert (workers.returncode, workers.stderr) == (
        2,
        "error: port 11101 (Ray's client server port) is among the ports Ray gives its "
        "workers (10002 to 19999); choose another with --ray-client-server-port\n",
    )
    nothing = preannotate(home, "down")
    assert nothing.returncode == 2
    assert error_lines(nothing.stderr) == [
        "error: nothing to stop: `preannotate up` has not run here"
    ]


def test_an_up_that_fails_after_starting_ray_stops_it_and_says_where_the_traceback_is(
    tmp_path: Path,
) -> None:
    home = tmp_path / "home"
    home.mkdir()
    (home / "preannotate.sqlite").write_bytes(b"not a database, " * 512)
    api, gcs = free_ports(2)
    failed = preannotate(home, "up", *up_options(api, gcs))
    assert failed.returncode == 1, failed.stderr
    assert "Traceback" not in failed.stderr and "File " not in failed.stderr
    [line] = error_lines(failed.stderr)
    assert line.startswith("error: unexpected DatabaseError: ")
    written = re.search(r"traceback in (\S+);", line)
    assert written, line
    traceback = Path(written.group(1)).read_text()
    assert traceback.startswith("Traceback") and "file is not a database" in traceback
    assert naming_port(gcs) == []  # the head it had started is gone again
    assert not (home / "ray-head.json").exists() and not (home / "cluster.json").exists()
    assert preannotate(home, "down").returncode == 2


def _can_play_another_machine() -> bool:
    """Whether this process may start one with a host name and mounts of its own
    (`unshare -u -m`), which is how a node on another machine differs from one here."""
    if shutil.which("unshare") is None:
        return False
    with tempfile.TemporaryDirectory() as folder:
        tried = subprocess.run(
            ["unshare", "-u", "-m", "sh", "-c", f"hostname other && mount -t tmpfs none {folder}"],
            capture_output=True,
        )
    return tried.returncode == 0


@contextmanager
def node_on_another_machine(home: Path, gcs: int, log: Path) -> Iterator[subprocess.Popen]:
    """A worker node with a host name of its own and an empty data directory (a tmpfs over
    `home`), as a node on another machine has, joined to the head at port `gcs`; its output
    goes to `log`. It stops at once on leaving, and none of its processes outlive it."""
    agent, metrics = free_ports(2)
    start = (
        f"mount -t tmpfs none {shlex.quote(str(home))} && hostname gpu-worker-1 && exec "
        f"{shlex.quote(ray_executable())} start --address=127.0.0.1:{gcs} --num-cpus=1 "
        f"--dashboard-agent-listen-port={agent} --metrics-export-port={metrics} --block"
    )
    with log.open("w") as output:
        worker = subprocess.Popen(
            ["unshare", "-u", "-m", "sh", "-c", start],
            stdout=output,
            stderr=subprocess.STDOUT,
            env=os.environ
            | {"RAY_AUTH_MODE": "disabled", "RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S": "0"},
            start_new_session=True,
        )
    try:
        yield worker
    finally:
        started = [psutil.Process(worker.pid), *psutil.Process(worker.pid).children(recursive=True)]
        worker.terminate()
        _, left = psutil.wait_procs(started, timeout=60)
        for process in left:
            process.kill()
        assert left == [], f"the worker node's processes outlived it: {left}"


def two_replica_server(admin: Client, worker: subprocess.Popen, log: Path) -> str:
    """A server of two 1-CPU replicas: on a 1-CPU head, one of them lands on the worker,
    so it is refused (409) until the worker has joined."""
    xml = labels_xml('value="GPE" model="ner_general_en_sm"')
    config = {"name": "far", "labeling_config": xml, "resources": {"num_cpus": 1, "replicas": 2}}
    project = admin.create_project(config)["id"]
    deadline = time.monotonic() + 120
    while True:
        try:
            return admin.deploy(project)["id"]
        except ApiError as refused:
            assert refused.status_code == 409, refused
            assert worker.poll() is None, f"the worker node ended: {log.read_text()}"
            assert time.monotonic() < deadline, f"the worker never joined: {log.read_text()}"
            time.sleep(2)


def head_options(api: int, gcs: int) -> list[str]:
    """A 1-CPU head on free ports."""
    dashboard, client_server = free_ports(2, api, gcs)
    return [
        *("--port", str(api), "--ray-port", str(gcs), "--dashboard-port", str(dashboard)),
        *("--ray-client-server-port", str(client_server), "--num-cpus", "1"),
    ]


ANOTHER_MACHINE = pytest.mark.skipif(
    not _can_play_another_machine(),
    reason="no second machine to play here: `unshare -u -m` is missing or not permitted",
)


@ANOTHER_MACHINE
@pytest.mark.timeout(600)
def test_a_node_on_another_machine_is_told_what_it_cannot_reach(tmp_path: Path) -> None:
    """With a SQLite store, the next `up` refuses the cluster once it has a node on
    another machine, before it starts anything; and a server whose replica lands on that
    node says why the replica does not start."""
    home = tmp_path / "home"
    api, gcs = free_ports(2)
    assert preannotate(home, "up", *head_options(api, gcs)).returncode == 0
    try:
        log = tmp_path / "worker.log"
        with node_on_another_machine(home, gcs, log) as worker:
            token = (home / "admin-token").read_text().strip()
            with Client(f"http://127.0.0.1:{api}", token) as admin:
                server = two_replica_server(admin, worker, log)  # deployed: the worker joined
                refused = preannotate(home, "up", "--address", "auto")
                assert refused.returncode == 2, refused.stdout + refused.stderr
                [line] = error_lines(refused.stderr)
                assert "nodes on 1 other machine(s) (gpu-worker-1)" in line
                assert "set PREANNOTATE_DATABASE_URL to a database every node reaches" in line
                deadline = time.monotonic() + 180
                while "is not on this machine (gpu-worker-1)" not in (
                    message := admin.server(server)["message"] or ""
                ):
                    assert time.monotonic() < deadline, admin.server(server)
                    time.sleep(1)
            assert "StoreNotHere: the store" in message and "PREANNOTATE_DATABASE_URL" in message
            assert "Traceback" not in message and "File " not in message
    finally:
        assert preannotate(home, "down").returncode == 0
    _, left = psutil.wait_procs(naming_port(gcs), timeout=30)
    assert left == []  # neither node's processes outlive the test


@ANOTHER_MACHINE
@pytest.mark.timeout(600)
def test_with_postgresql_a_node_on_another_machine_serves(
    tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """The same cluster with a store every node reaches: `up` takes it, both replicas of a
    server start, one on each machine, and the server answers predictions."""
    home = tmp_path / "home"
    api, gcs = free_ports(2)
    store = {"PREANNOTATE_DATABASE_URL": request.getfixturevalue("postgres_database")}
    assert preannotate(home, "up", *head_options(api, gcs), **store).returncode == 0
    try:
        log = tmp_path / "worker.log"
        with node_on_another_machine(home, gcs, log) as worker:
            token = (home / "admin-token").read_text().strip()
            with Client(f"http://127.0.0.1:{api}", token) as admin:
                deployed = two_replica_server(admin, worker, log)
                server = admin.wait_until_ready(deployed, timeout=240)
                assert len(server["nodes"]) == 2, server
                rejoined = preannotate(home, "up", "--address", "auto", **store)
                assert rejoined.returncode == 0, rejoined.stderr
                tasks = [{"data": {"text": "Angela Merkel flew to Paris."}}]
                found = {
                    item["value"]["text"]
                    for _ in range(8)
                    for item in admin.predict(server["id"], tasks)[0]["result"]
                }
                assert found == {"Paris"}
    finally:
        assert preannotate(home, "down", **store).returncode == 0
    _, left = psutil.wait_procs(naming_port(gcs), timeout=30)
    assert left == []


@pytest.mark.timeout(600)  # three `up`s, two `down`s and a 10,000-task job
def test_up_twice_then_down_stops_exactly_the_head_up_started(
    tmp_path: Path, notebook: subprocess.Popen
) -> None:
    """With Ray's token authentication on (as `ray start` turns it on where a token
    exists): `up`, `up` again refused, `up --address auto`, `down`, and `up` resuming the
    job that `down` interrupted."""
    home = tmp_path / "home"
    token_home = tmp_path / "user"
    (token_home / ".ray").mkdir(parents=True)
    (token_home / ".ray" / "auth_token").write_text(uuid.uuid4().hex + uuid.uuid4().hex)

    def cli(*args: str) -> subprocess.CompletedProcess:
        return preannotate(home, *args, ray_token=token_home)

    api, gcs = free_ports(2)
    url = f"http://127.0.0.1:{api}"
    first = cli("up", *up_options(api, gcs))
    assert first.returncode == 0, first.stderr
    assert f"API at {url} (docs at {url}/docs)" in first.stdout

    again = cli("up", *up_options(*free_ports(2)))
    assert again.returncode == 2
    assert again.stderr == (
        f"error: a cluster is already running here: API at {url}; use it, or "
        "`preannotate down` first (`preannotate up --address auto` joins it)\n"
    )
    joined = cli("up", "--address", "auto")
    assert joined.returncode == 0, joined.stderr
    assert "joined the cluster that `preannotate up` started here" in joined.stdout
    assert f"API at {url} " in joined.stdout
    assert httpx.get(f"{url}/health", timeout=30).status_code == 200

    client = Client(url, (home / "admin-token").read_text().strip(), timeout=120)
    project, job = _job_in_progress(client, tmp_path)

    head = psutil.Process(json.loads((home / "ray-head.json").read_text())["pid"])
    started = [head, *head.children(recursive=True)]
    names = {process.name() for process in started}
    assert {"gcs_server", "raylet"} <= names, names
    assert client.job(job["id"])["state"] == "running", "raise FAULT_JOB_TASKS: it finished"
    down = cli("down")
    assert down.returncode == 0, down.stderr
    assert "stopped the API, its servers and the Ray head at " in down.stdout
    assert f":{gcs} that `preannotate up` started ({len(started)} processes)" in down.stdout
    _, left = psutil.wait_procs(started, timeout=10)
    assert left == [] and naming_port(gcs) == []
    with pytest.raises(httpx.TransportError):
        httpx.get(f"{url}/health", timeout=5)

    assert notebook.poll() is None, "down stopped a Ray that up did not start"
    notebook.stdin.write("ping\n")
    notebook.stdin.flush()
    assert _answer(notebook, timeout=60) == "pong"
    assert cli("down").returncode == 2

    # The job that `down` interrupted is resumed by the next `up`, and each task gets
    # exactly one prediction of it.
    assert cli("up", *up_options(api, gcs)).returncode == 0
    try:
        with Client(url, client.token, timeout=120) as again:
            final = again.wait_for_job(job["id"])
            assert (final["state"], final["done"], final["failed"]) == (
                "succeeded",
                FAULT_JOB_TASKS,
                0,
            )
            assert _prediction_counts(again, project) == [1] * FAULT_JOB_TASKS
    finally:
        assert cli("down").returncode == 0


FAULT_JOB_TASKS = 4_000


def _job_in_progress(client: Client, tmp_path: Path) -> tuple[int, dict]:
    """A bulk job over FAULT_JOB_TASKS tasks of the news example, some of them done."""
    config = load_project_config(EXAMPLES / "news" / "project.json").model_dump()
    project = client.create_project(config)["id"]
    tasks = tmp_path / "tasks.jsonl"
    tasks.write_text(
        "\n".join(
            json.dumps({"text": f"Angela Merkel met Tim Cook in Paris on day {i}."})
            for i in range(FAULT_JOB_TASKS)
        )
    )
    client.import_tasks(project, tasks)
    job = client.preannotate(project)
    deadline = time.monotonic() + 300
    while client.job(job["id"])["done"] < 200:
        assert time.monotonic() < deadline, "the job made no progress"
        time.sleep(0.2)
    return project, job


def _prediction_counts(client: Client, project: int) -> list[int]:
    counts, after = [], 0
    while after is not None:
        page = client.tasks(project, after_id=after, limit=1000)
        counts += [task["predictions"] for task in page["tasks"]]
        after = page["next_after_id"]
    return counts
