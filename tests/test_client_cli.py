"""The API client and the `preannotate` commands that talk to a running cluster.

Pure parts (task formats, project references, connection settings, error messages) run
without Ray; the rest drive the CLI against the session's real two-node cluster.
"""

import json
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner, Result

from preannotate.client.api import ApiError, Client, Json, connection_settings, task_format
from preannotate.client.cli import app
from preannotate.cluster.local_head import free_port
from preannotate.configs.project import load_project_config
from tests.conftest import EXAMPLES, RayCluster

runner = CliRunner()
NEWS = EXAMPLES / "news"
NEWS_TASKS = sum(1 for _ in (NEWS / "tasks.jsonl").open())

Cli = Callable[..., Result]


# -- without a cluster ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "fmt"),
    [
        ("a.json", "json"),
        ("a.jsonl", "jsonl"),
        ("A.JSONL", "jsonl"),
        ("a.ndjson", "jsonl"),
        ("dir.v2/a.csv", "csv"),
    ],
)
def test_task_format_comes_from_the_suffix(name: str, fmt: str) -> None:
    assert task_format(Path(name)) == fmt


def test_a_task_file_of_unknown_format_is_refused_before_sending() -> None:
    with pytest.raises(ApiError, match="cannot tell the format") as refused:
        task_format(Path("tasks.txt"))
    assert refused.value.status_code == 400


def test_connection_settings_fall_back_to_what_up_remembered(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("PREANNOTATE_URL", raising=False)
    monkeypatch.delenv("PREANNOTATE_TOKEN", raising=False)
    assert connection_settings() == ("http://127.0.0.1:8000", None)
    home.mkdir(parents=True, exist_ok=True)
    (home / "cluster.json").write_text(json.dumps({"url": "http://up:1", "token": "secret"}))
    assert connection_settings() == ("http://up:1", "secret")
    assert connection_settings(url="http://other:2") == ("http://other:2", None)
    monkeypatch.setenv("PREANNOTATE_URL", "http://env:3")
    monkeypatch.setenv("PREANNOTATE_TOKEN", "from-env")
    assert connection_settings() == ("http://env:3", "from-env")
    assert connection_settings("http://given:4", "given") == ("http://given:4", "given")


def test_an_unreachable_api_is_a_user_error() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    result = runner.invoke(app, ["projects", "list", "--url", url, "--token", "t"])
    assert result.exit_code == 2
    assert f"cannot reach the API at {url}" in result.stderr
    assert "preannotate up" in result.stderr


# -- against the cluster -------------------------------------------------------------------


@pytest.fixture
def cli(ray_cluster: RayCluster, api: httpx.Client) -> Cli:
    """Run `preannotate ARGS` against the cluster as its admin (`api` cleans up servers)."""

    def invoke(*args: str | Path, token: str | None = None) -> Result:
        connection = ["--url", ray_cluster.url, "--token", token or ray_cluster.admin_token]
        return runner.invoke(app, [*map(str, args), *connection])

    return invoke


@pytest.fixture
def admin(ray_cluster: RayCluster) -> Iterator[Client]:
    with Client(ray_cluster.url, ray_cluster.admin_token) as client:
        yield client


def news_project(tmp_path: Path, **resources: float) -> tuple[str, Path]:
    """The news example under a name of its own, as a project file with inline XML."""
    name = f"news-{uuid.uuid4().hex[:8]}"
    config = load_project_config(NEWS / "project.json")
    data = config.model_dump() | {"name": name}
    data["resources"] |= resources
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps(data))
    return name, path


def created(cli: Cli, tmp_path: Path, **resources: float) -> str:
    """A new news project with the example tasks, made through the CLI; returns its name."""
    name, path = news_project(tmp_path, **resources)
    made = cli("projects", "create", path)
    assert made.exit_code == 0, made.output
    imported = cli("tasks", "import", name, NEWS / "tasks.jsonl")
    assert imported.exit_code == 0, imported.output
    assert f"imported {NEWS_TASKS} tasks" in imported.stdout
    return name


def test_a_project_goes_from_file_to_export_through_the_cli(
    cli: Cli, admin: Client, tmp_path: Path
) -> None:
    name = created(cli, tmp_path)
    listed = cli("projects", "list")
    assert listed.exit_code == 0 and name in listed.stdout

    deployed = cli("deploy", name)
    assert deployed.exit_code == 0, deployed.output
    server_id = re.search(r"server (\S+) ready", deployed.stdout).group(1)

    ran = cli("run", name)
    assert ran.exit_code == 0, ran.output
    assert re.search(rf"succeeded: {NEWS_TASKS} predicted, 0 failed in [\d.]+ s", ran.stdout)
    project_id = admin.resolve_project(name)
    tasks = list(admin.iter_tasks(project_id))
    assert len(tasks) == NEWS_TASKS
    assert all(len(admin.predictions(task["id"])) == 1 for task in tasks)

    jobs = cli("jobs", "list", "--project", name, "--state", "succeeded", "--json")
    assert jobs.exit_code == 0, jobs.output
    [job] = json.loads(jobs.stdout)
    assert (job["project_id"], job["kind"], job["done"]) == (project_id, "preannotate", NEWS_TASKS)
    assert f"{NEWS_TASKS}/{NEWS_TASKS}" in cli("jobs", "list", "--project", name).stdout

    for fmt in ("generative-ai-lab", "label-studio"):
        exported = cli("export", name, "--format", fmt, "--out", tmp_path / f"{fmt}.json")
        assert exported.exit_code == 0, exported.output
        data = json.loads((tmp_path / f"{fmt}.json").read_text())
        assert len(data) == NEWS_TASKS
        assert all(len(task["predictions"]) == 1 for task in data)

    servers = cli("servers", "list", "--json")
    assert servers.exit_code == 0 and server_id in {s["id"] for s in json.loads(servers.stdout)}
    assert server_id in cli("servers", "list").stdout
    assert json.loads(cli("servers", "show", server_id).stdout)["status"] == "ready"
    deleted = cli("servers", "delete", server_id)
    assert deleted.exit_code == 0 and f"deleted server {server_id}" in deleted.stdout
    assert server_id not in {s["id"] for s in json.loads(cli("servers", "list", "--json").stdout)}


def test_tasks_import_from_every_format_and_a_bad_file_imports_nothing(
    cli: Cli, admin: Client, tmp_path: Path
) -> None:
    name = created(cli, tmp_path)
    (tmp_path / "more.json").write_text(json.dumps([{"text": "One."}, {"data": {"text": "Two."}}]))
    (tmp_path / "more.csv").write_text("text\nThree.\nFour.\n")
    (tmp_path / "bad.jsonl").write_text('{"text": "fine"}\n{"text": ""}\n')
    for file in ("more.json", "more.csv"):
        imported = cli("tasks", "import", name, tmp_path / file)
        assert imported.exit_code == 0 and "imported 2 tasks" in imported.stdout, imported.output
    bad = cli("tasks", "import", name, tmp_path / "bad.jsonl")
    assert bad.exit_code == 2 and "line 2" in bad.stderr
    missing = cli("tasks", "import", name, tmp_path / "missing.jsonl")
    assert (missing.exit_code, missing.stderr) == (
        2,
        f"error: tasks file {tmp_path / 'missing.jsonl'} does not exist\n",
    )
    texts = [task["data"]["text"] for task in admin.iter_tasks(admin.resolve_project(name))]
    assert len(texts) == NEWS_TASKS + 4 and texts[-4:] == ["One.", "Two.", "Three.", "Four."]


def test_export_defaults_to_a_file_named_after_the_project(
    cli: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    name = created(cli, tmp_path)
    monkeypatch.chdir(tmp_path)
    exported = cli("export", name, "--format", "label-studio")
    assert exported.exit_code == 0, exported.output
    folder = cli("export", name, "--out", str(tmp_path))
    assert (folder.exit_code, folder.stderr) == (
        2,
        f"error: output {tmp_path} is a folder; give a file\n",
    )
    assert not list(tmp_path.parent.glob("*.part"))
    data = json.loads((tmp_path / f"{name}-label-studio.json").read_text())
    assert [task["predictions"] for task in data] == [[]] * NEWS_TASKS


def test_a_detached_run_prints_its_job_and_jobs_show_follows_it(
    cli: Cli, admin: Client, tmp_path: Path
) -> None:
    name = created(cli, tmp_path)
    project_id = admin.resolve_project(name)
    first_task = next(admin.iter_tasks(project_id))["id"]
    detached = cli("run", name, "--task-id", str(first_task), "--detach")
    assert detached.exit_code == 0, detached.output
    job_id = int(detached.stdout.strip())
    job = admin.wait_for_job(job_id, poll_s=0.2)
    assert (job["state"], job["total"], job["done"]) == ("succeeded", 1, 1)
    shown = cli("jobs", "show", str(job_id))
    assert shown.exit_code == 0 and json.loads(shown.stdout)["id"] == job_id


def test_a_second_run_adds_a_prediction_version_a_completion_can_copy(
    cli: Cli, admin: Client, tmp_path: Path
) -> None:
    project_id = admin.resolve_project(created(cli, tmp_path))
    task_id = next(admin.iter_tasks(project_id))["id"]
    for _ in range(2):
        job = admin.preannotate(project_id, task_ids=[task_id])
        assert admin.wait_for_job(job["id"], poll_s=0.2)["state"] == "succeeded"
    first, second = admin.predictions(task_id)
    assert second["version"] > first["version"]
    assert set(admin.compare(first["id"], second["id"])) == {
        "added",
        "removed",
        "changed",
        "unchanged",
    }
    completion = admin.create_completion(task_id, from_prediction=second["id"])
    assert completion["copied_from_prediction_id"] == second["id"]
    assert completion["result"] == second["result"]
    assert [c["id"] for c in admin.completions(task_id)] == [completion["id"]]


def many_tasks(cli: Cli, name: str, tmp_path: Path, count: int = 3000) -> None:
    """Enough tasks that a job is still running when a test acts on it."""
    lines = "".join(
        json.dumps({"text": f"Angela Merkel met Tim Cook in Paris, {i}."}) + "\n"
        for i in range(count)
    )
    (tmp_path / "many.jsonl").write_text(lines)
    assert cli("tasks", "import", name, tmp_path / "many.jsonl").exit_code == 0


def wait_for_progress(admin: Client, project_id: int, done: int = 100) -> Json:
    deadline = time.monotonic() + 120
    while not (jobs := admin.jobs(project_id)) or jobs[0]["done"] < done:
        assert time.monotonic() < deadline
        time.sleep(0.2)
    return jobs[0]


AS_FROM_A_TERMINAL = [
    sys.executable,
    "-c",
    "import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_DFL); "
    "os.execv(sys.argv[1], sys.argv[1:])",
]
"""Runs a command with Ctrl-C's default action, as a terminal starts it, also when the
tests run as a background job of a shell (which ignores SIGINT, and children inherit that)."""


def test_ctrl_c_cancels_the_job(
    cli: Cli, admin: Client, ray_cluster: RayCluster, tmp_path: Path
) -> None:
    name = created(cli, tmp_path)
    many_tasks(cli, name, tmp_path, count=6000)  # still running when the cancel arrives
    command = [
        *AS_FROM_A_TERMINAL,
        str(Path(sys.executable).parent / "preannotate"),
        "run",
        name,
        "--url",
        ray_cluster.url,
        "--token",
        ray_cluster.admin_token,
    ]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    job = wait_for_progress(admin, admin.resolve_project(name))
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 130, stderr
    assert f"cancelled job {job['id']}" in stderr
    final = admin.wait_for_job(job["id"], poll_s=0.2)
    assert final["state"] == "cancelled" and final["done"] < final["total"]


def test_a_job_cancelled_by_deleting_its_server_exits_1(
    cli: Cli, admin: Client, tmp_path: Path
) -> None:
    name = created(cli, tmp_path)
    many_tasks(cli, name, tmp_path)
    outcome: list[Result] = []
    running = threading.Thread(target=lambda: outcome.append(cli("run", name)))
    running.start()
    job = wait_for_progress(admin, admin.resolve_project(name))
    admin.delete_server(job["server_id"])
    running.join(timeout=120)
    [result] = outcome
    assert result.exit_code == 1
    assert f"server {job['server_id']} was deleted" in result.stderr


def test_client_resolves_projects_follows_pages_and_reports_server_messages(
    cli: Cli, admin: Client, tmp_path: Path
) -> None:
    name = created(cli, tmp_path)
    project_id = admin.resolve_project(name)
    assert admin.resolve_project(str(project_id)) == project_id == admin.resolve_project(project_id)
    with pytest.raises(ApiError, match="no project named 'sports-nowhere'") as unknown:
        admin.resolve_project("sports-nowhere")
    assert unknown.value.status_code == 404
    tasks = list(admin.iter_tasks(project_id, limit=3))
    assert len(tasks) == NEWS_TASKS and len({t["id"] for t in tasks}) == NEWS_TASKS
    with pytest.raises(ApiError) as invalid:
        admin.tasks(project_id, limit=0)
    assert invalid.value.status_code == 422 and "limit" in invalid.value.detail
    with pytest.raises(ApiError) as missing:
        admin.project(999_999)
    assert missing.value.status_code == 404 and "999999" in missing.value.detail


def test_api_errors_are_reported_as_user_errors(cli: Cli, admin: Client, tmp_path: Path) -> None:
    unknown = cli("deploy", "no-such-project")
    assert unknown.exit_code == 2
    assert "error: no project named 'no-such-project'" in unknown.stderr

    name = created(cli, tmp_path)
    made = cli("users", "create", f"annotator-{uuid.uuid4().hex[:8]}")
    assert made.exit_code == 0, made.output
    user_id = int(re.search(r"created user (\d+)", made.stdout).group(1))
    token = re.search(r"token \(shown only once\): (\S+)", made.stdout).group(1)
    member = cli("members", "set", name, str(user_id), "Annotator")  # as the README writes roles
    assert member.exit_code == 0 and "is annotator of project" in member.stdout

    with Client(admin.url, token) as annotator:
        assert annotator.me()["id"] == user_id
    refused = cli("deploy", name, token=token)
    assert refused.exit_code == 2
    assert "error:" in refused.stderr and "annotator" in refused.stderr
    project_id = admin.resolve_project(name)
    assert all(project_id not in server["projects"] for server in admin.servers())

    not_admin = cli("users", "create", "someone", token=token)
    assert not_admin.exit_code == 2 and "not an admin" in not_admin.stderr
