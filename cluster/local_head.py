"""The local Ray head that `preannotate up` starts: its ports, its processes, and how `down`
stops exactly those.

The head runs as `ray start --head --block` in a session of its own. That one process owns
every process of the head (GCS, raylet, dashboard, Ray Client server, ...; through the
raylet, every worker), and Ray makes them share its fate. On SIGTERM it stops them all, so
`down` ends this head and leaves every other Ray on the machine running (a notebook's
`ray.init()`, another user's cluster), which `ray stop` would end too.

`<data dir>/ray-head.json` records the process (pid and start time, so that a reused pid is
never taken for it) as soon as it runs: even an `up` that died half-way leaves a head that
`down` finds. No Ray imports here, so the CLI reads this module cheaply.
"""

import errno
import json
import os
import random
import re
import shutil
import socket
import subprocess
import sys
import time
from contextlib import suppress
from dataclasses import asdict, dataclass
from pathlib import Path

import psutil

from preannotate.configs.paths import data_dir

READY = "Ray runtime started."
"""What `ray start` prints once the head's raylet has registered with its GCS."""
START_TIMEOUT_S = 180.0
STOP_TIMEOUT_S = 30.0
RECORD = "ray-head.json"
LOG = "ray-head.log"
_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_ERROR_LINE = re.compile(r"^\w+(Error|Exception)\b")


class ClusterError(Exception):
    """The local cluster cannot be started or stopped as asked, for a reason the user can fix
    (a port in use, a cluster already running here); the message says what to do."""


def ray_executable() -> str:
    """The `ray` command of this environment, even when its bin folder is not on PATH."""
    local = Path(sys.executable).parent / "ray"
    return str(local) if local.exists() else shutil.which("ray") or "ray"


def free_port() -> int:
    """A TCP port nobody listens on now, for a listener that must not collide with others."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def free_port_block(size: int, low: int, high: int) -> int:
    """The first of `size` consecutive ports in [low, high) that nobody listens on now, at
    a random place, so that two installations on one machine get different blocks."""
    starts = list(range(low, high - size + 1, size))
    random.shuffle(starts)
    for start in starts:
        if all(_unused(port) for port in range(start, start + size)):
            return start
    raise ClusterError(f"no {size} free consecutive ports between {low} and {high}")


def _unused(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("0.0.0.0", port))
        except OSError:
            return False
        return True


def ensure_free(host: str, port: int, what: str, option: str) -> None:
    """Refuse (ClusterError) unless something could listen on `host:port` now; `what` names
    the port's use and `option` the setting that changes it."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
    except socket.gaierror as exc:
        raise ClusterError(f"cannot listen on {host}:{port} ({what}): {exc.strerror}") from None
    with socket.socket(family, kind, proto) as sock:
        # As the servers themselves do: a port left in TIME_WAIT is free, a listener is not.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(address)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise ClusterError(
                    f"port {port} ({what}) is already in use on this machine; "
                    f"choose another with {option}"
                ) from None
            raise ClusterError(f"cannot listen on {host}:{port} ({what}): {exc.strerror}") from None


WORKER_PORTS = range(10002, 20000)
"""The ports `ray start` gives its workers (its default `--min-worker-port` to
`--max-worker-port`), which it refuses for its own listeners."""


@dataclass(frozen=True)
class HeadPorts:
    """The fixed ports of a local head (its other ports Ray picks free by itself)."""

    gcs: int = 6379
    dashboard: int = 8265
    client_server: int = 10001

    def check(self, api_port: int) -> None:
        """Refuse before anything starts: a port taken, or one port asked for twice."""
        uses = [
            (self.gcs, "Ray's GCS port", "--ray-port"),
            (self.dashboard, "Ray's dashboard port", "--dashboard-port"),
            (self.client_server, "Ray's client server port", "--ray-client-server-port"),
        ]
        taken = {api_port: "the API's HTTP port"}
        _outside_worker_ports(api_port, taken[api_port], "--port")  # workers would take it
        for port, what, option in uses:
            if port in taken:
                raise ClusterError(f"port {port} is both {taken[port]} and {what}: change {option}")
            taken[port] = what
            _outside_worker_ports(port, what, option)
            ensure_free("0.0.0.0", port, what, option)  # Ray listens on every interface


def _outside_worker_ports(port: int, what: str, option: str) -> None:
    if port in WORKER_PORTS:
        raise ClusterError(
            f"port {port} ({what}) is among the ports Ray gives its workers "
            f"({WORKER_PORTS.start} to {WORKER_PORTS.stop - 1}); choose another with {option}"
        )


@dataclass(frozen=True)
class LocalHead:
    """A head that `up` started: the `ray start --block` process that owns it."""

    pid: int
    started_at: float
    port: int
    auth_mode: str = "disabled"
    """Ray's token authentication on it (`RAY_AUTH_MODE`: "token" or "disabled"), which
    whoever joins it must use too."""

    @property
    def address(self) -> str:
        """Where a driver on this machine connects to it."""
        return f"127.0.0.1:{self.port}"

    def process(self) -> psutil.Process | None:
        """The head's process while it runs (never another that got the same pid)."""
        with suppress(psutil.Error):
            process = psutil.Process(self.pid)
            if process.create_time() == self.started_at and process.status() not in (
                psutil.STATUS_ZOMBIE,
                psutil.STATUS_DEAD,
            ):
                return process
        return None

    def stop(self) -> int:
        """Stop the head and every process it started, then forget it; returns how many
        processes there were (0: it was no longer running)."""
        process = self.process()
        family: list[psutil.Process] = []
        if process is not None:
            family.append(process)
            with suppress(psutil.Error):
                family.extend(process.children(recursive=True))
                process.terminate()  # Ray's own shutdown: raylet first, then the rest
            _, alive = psutil.wait_procs(family, timeout=STOP_TIMEOUT_S)
            for straggler in alive:
                with suppress(psutil.Error):
                    straggler.kill()
            psutil.wait_procs(alive, timeout=5)
        _record_file().unlink(missing_ok=True)
        return len(family)


def head_auth_mode() -> str:
    """The token authentication a head started here gets, decided once, as `ray start`
    decides it: `RAY_AUTH_MODE`, else "token" where this user has a token (`RAY_AUTH_TOKEN`,
    `RAY_AUTH_TOKEN_PATH` or `~/.ray/auth_token`, as Ray looks for one), else "disabled"."""
    if mode := os.environ.get("RAY_AUTH_MODE"):
        return mode
    paths = [os.environ.get("RAY_AUTH_TOKEN_PATH"), Path.home() / ".ray" / "auth_token"]
    found = os.environ.get("RAY_AUTH_TOKEN") or any(p and Path(p).is_file() for p in paths)
    return "token" if found else "disabled"


def _record_file() -> Path:
    return data_dir() / RECORD


def recorded_head() -> LocalHead | None:
    """The head `up` started from this data directory, running or not; None if none."""
    file = _record_file()
    return LocalHead(**json.loads(file.read_text())) if file.is_file() else None


def _last_error(log: Path) -> str:
    """The line of `ray start`'s output that says why it failed."""
    lines = [_ANSI.sub("", line).strip() for line in log.read_text(errors="replace").splitlines()]
    lines = [line for line in lines if line]
    errors = [line for line in lines if _ERROR_LINE.match(line)]
    return (errors or lines or ["it printed nothing"])[-1]


def start_local_head(
    ports: HeadPorts, resources: dict[str, float], num_cpus: int | None
) -> LocalHead:
    """Start a head on this machine with these custom resources; it outlives this process
    until `down`. Returns once its raylet is up; raises ClusterError (and leaves nothing
    running) when it does not come up."""
    log = data_dir() / LOG
    command = [
        ray_executable(),
        "start",
        "--head",
        "--block",
        "--disable-usage-stats",
        f"--port={ports.gcs}",
        "--dashboard-host=127.0.0.1",
        f"--dashboard-port={ports.dashboard}",
        f"--ray-client-server-port={ports.client_server}",
        f"--resources={json.dumps(resources)}",
    ]
    if num_cpus is not None:
        command.append(f"--num-cpus={num_cpus}")
    # One node has nowhere to move its work to: on SIGTERM, stop at once instead of draining.
    auth_mode = head_auth_mode()
    env = os.environ | {"RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S": "0", "RAY_AUTH_MODE": auth_mode}
    with log.open("w") as output:
        process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,  # Ctrl-C in this terminal, or closing it, leaves it be
        )
    head = LocalHead(process.pid, psutil.Process(process.pid).create_time(), ports.gcs, auth_mode)
    _record_file().write_text(json.dumps(asdict(head)))
    try:
        _wait_until_ready(process, log)
    except BaseException:
        head.stop()
        raise
    return head


def _wait_until_ready(process: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while READY not in log.read_text(errors="replace"):
        if process.poll() is not None:
            raise ClusterError(f"the Ray head did not start: {_last_error(log)} (output: {log})")
        if time.monotonic() > deadline:
            raise ClusterError(
                f"the Ray head did not start within {START_TIMEOUT_S:.0f} s (output: {log})"
            )
        time.sleep(0.25)
