"""The `preannotate` commands that talk to the HTTP API of a running cluster.

`commands` holds them (top-level ones such as `deploy` and `run`, and groups such as
`projects`); `cli.py` adds it to the `preannotate` app. Every one takes
`--url` and `--token` (or PREANNOTATE_URL / PREANNOTATE_TOKEN; by default what `preannotate
up` started) and names projects by id or by name. Answers the user can act on (a 4xx, an API
that is not running) become `error:` lines and exit status 2, like the offline commands.
"""

import math
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from enum import StrEnum
from operator import itemgetter
from pathlib import Path
from typing import Annotated, Any

import httpx
import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
)
from rich.table import Column, Table
from rich.text import Text

from preannotate.client import kept_token
from preannotate.client.api import TOKEN_ENV, URL_ENV, ApiError, Client, Json, job_seconds
from preannotate.client.console import USER_ERROR, err, error, out, user_errors
from preannotate.client.inputs import OutputFormat, checked_input, run_input
from preannotate.configs.project import load_project_config
from preannotate.configs.textfiles import existing_file, output_file

EXIT_INTERRUPTED = 130
"""What a shell reports for a command stopped with Ctrl-C."""
ERRORS_SHOWN = 5
"""Failed tasks listed after a job; the rest are counted (all are in `jobs show`)."""

projects_app = typer.Typer(help="Projects on the cluster.", no_args_is_help=True)
tasks_app = typer.Typer(help="Tasks of a project.", no_args_is_help=True)
files_app = typer.Typer(help="Documents (PDFs, images) of a project.", no_args_is_help=True)
servers_app = typer.Typer(help="Pre-annotation servers (the Clusters page).", no_args_is_help=True)
jobs_app = typer.Typer(help="Bulk pre-annotation and training jobs.", no_args_is_help=True)
users_app = typer.Typer(help="Users and their API tokens.", no_args_is_help=True)
members_app = typer.Typer(help="Who may work on a project, and how.", no_args_is_help=True)
models_app = typer.Typer(help="Models and their trained versions.", no_args_is_help=True)
providers_app = typer.Typer(
    help="External LLM providers that external prompts call (admins only).", no_args_is_help=True
)
commands = typer.Typer()
"""Every command of this module; added without a name, its commands and groups become
top-level ones of the app that adds it."""
commands.add_typer(projects_app, name="projects")
commands.add_typer(tasks_app, name="tasks")
commands.add_typer(files_app, name="files")
commands.add_typer(servers_app, name="servers")
commands.add_typer(jobs_app, name="jobs")
commands.add_typer(users_app, name="users")
commands.add_typer(members_app, name="members")
commands.add_typer(models_app, name="models")
commands.add_typer(providers_app, name="providers")


class ExportFormat(StrEnum):
    generative_ai_lab = "generative-ai-lab"
    label_studio = "label-studio"


class JobState(StrEnum):
    queued = "queued"
    running = "running"
    succeeded = "succeeded"
    failed = "failed"
    cancelled = "cancelled"


class ProviderKind(StrEnum):
    openai = "openai"
    azure_openai = "azure-openai"


class Role(StrEnum):
    owner = "owner"
    manager = "manager"
    annotator = "annotator"


Url = Annotated[
    str | None,
    typer.Option(
        envvar=URL_ENV,
        help="API address (default: what `preannotate up` started, else http://127.0.0.1:8000)",
    ),
]
Token = Annotated[str | None, typer.Option(envvar=TOKEN_ENV, help="API token")]
ProjectRef = Annotated[str, typer.Argument(help="project id or name")]
UserId = Annotated[int, typer.Argument(help="user id, as `users create` printed it")]
AsJson = Annotated[bool, typer.Option("--json", help="print the API's JSON instead of a table")]


@contextmanager
def api_errors(url: str) -> Iterator[None]:
    """Turn what the API refuses into `error:` lines: exit 2 for a 4xx or an API that is not
    there (the user can fix both), 1 for a server-side failure."""
    try:
        yield
    except ApiError as exc:
        for problem in exc.body.get("problems") or [exc.detail]:
            error(problem)
        raise typer.Exit(USER_ERROR if exc.status_code < 500 else 1) from None
    except (httpx.ConnectError, httpx.ConnectTimeout):
        error(f"cannot reach the API at {url}: is `preannotate up` running?")
        raise typer.Exit(USER_ERROR) from None
    except httpx.TransportError as exc:
        error(f"talking to the API at {url} failed: {exc}")
        raise typer.Exit(1) from None


@contextmanager
def connected(url: str | None, token: str | None) -> Iterator[Client]:
    """A client for the command's API, with user and API errors reported the CLI's way."""
    with Client.from_env(url, token) as client, user_errors(), api_errors(client.url):
        yield client


def _say(text: str, console: Console = out) -> None:
    """Print a line as it is: names and messages from the API are not rich markup, and
    a long line is not broken, so a path or an id in it stays whole for whoever reads it."""
    console.print(text, markup=False, highlight=False, soft_wrap=True)


def _when(timestamp: str | None) -> str:
    """An API timestamp to the second, short enough for a table."""
    return datetime.fromisoformat(timestamp).strftime("%Y-%m-%d %H:%M:%S") if timestamp else ""


def _text(value: Any) -> str:
    return "" if value is None else str(value)


def _listing(items: list[Json], as_json: bool, columns: dict[str, Callable[[Json], Any]]) -> None:
    """A table for people, or the API's JSON for scripts. Long cells fold onto more lines
    rather than being cut, so no id is ever shown truncated."""
    if as_json:
        out.print_json(data=items)
        return
    table = Table(*(Column(header, overflow="fold") for header in columns))
    for item in items:
        table.add_row(*(Text(_text(cell(item))) for cell in columns.values()))
    out.print(table)


# -- projects, tasks, users ----------------------------------------------------------------


PROJECT_COLUMNS: dict[str, Callable[[Json], Any]] = {
    "ID": itemgetter("id"),
    "Name": itemgetter("name"),
    "Config": lambda p: f"v{p['config_version']} {p['config_hash']}",
    "Created": lambda p: _when(p["created_at"]),
}


@projects_app.command("list")
def projects_list(as_json: AsJson = False, url: Url = None, token: Token = None) -> None:
    """Projects you have a role in, with their configuration version and hash."""
    with connected(url, token) as client:
        _listing(client.projects(), as_json, PROJECT_COLUMNS)


@projects_app.command("create")
def projects_create(
    file: Annotated[Path, typer.Argument(help="project file (.json) or labeling config (.xml)")],
    url: Url = None,
    token: Token = None,
) -> None:
    """Create a project from a project file; the server validates it against its hub."""
    with connected(url, token) as client:
        project = client.create_project(load_project_config(file).model_dump())
    _say(
        f"created project {project['id']} {project['name']} "
        f"(configuration {project['config_hash']})"
    )


@tasks_app.command("import")
def tasks_import(
    project: ProjectRef,
    file: Annotated[Path, typer.Argument(help="tasks as .json, .jsonl or .csv")],
    url: Url = None,
    token: Token = None,
) -> None:
    """Add the tasks of a file to a project; a bad file imports nothing."""
    with user_errors():
        file = existing_file(file, "tasks file")
    with connected(url, token) as client:
        project_id = client.resolve_project(project)
        imported = client.import_tasks(project_id, file)
    ids = f" (ids {imported['first_id']}..{imported['last_id']})" if imported["count"] else ""
    _say(f"imported {imported['count']} tasks into project {project_id}{ids}")


@files_app.command("import")
def files_import(
    project: ProjectRef,
    files: Annotated[list[Path], typer.Argument(help="PDFs or PNG, JPEG, TIFF images")],
    url: Url = None,
    token: Token = None,
) -> None:
    """Upload documents to a project, one task each; a file the project already has is
    not made a second task, and a file the server refuses stops the import there (the
    files before it stay imported)."""
    missing = [str(f) for f in files if not f.is_file()]
    if missing:
        error(f"no such file: {', '.join(missing)}")
        raise typer.Exit(USER_ERROR)
    with connected(url, token) as client:
        project_id = client.resolve_project(project)
        progress = Progress(TextColumn("uploading"), BarColumn(), MofNCompleteColumn(), console=err)
        uploaded = []
        with progress:
            bar = progress.add_task("", total=len(files))
            for file in files:
                uploaded += client.upload_files(project_id, [file])["files"]
                progress.advance(bar)
    new = [f for f in uploaded if not f.get("duplicate")]
    if new:
        pages = sum(f["pages"] for f in new)
        first, last = new[0]["task_id"], new[-1]["task_id"]
        _say(
            f"imported {len(new)} files ({pages} pages) into project {project_id} "
            f"as tasks {first}..{last}"
        )
    for path, file in zip(files, uploaded, strict=True):
        if file.get("duplicate"):
            _say(f"{path} was already uploaded: task {file['task_id']} of project {project_id}")


@users_app.command("create")
def users_create(
    name: str,
    admin: Annotated[bool, typer.Option("--admin", help="may create users")] = False,
    url: Url = None,
    token: Token = None,
) -> None:
    """Create a user and print its API token: it is shown this once only."""
    with connected(url, token) as client:
        user = client.create_user(name, is_admin=admin)
    kind = "admin" if user["is_admin"] else "user"
    _say(f"created {kind} {user['id']} {user['name']}")
    _say(f"token (shown only once): {user['token']}")


@users_app.command("delete")
def users_delete(user_id: UserId, url: Url = None, token: Token = None) -> None:
    """Delete a user: their tokens and roles are revoked at once (admins only)."""
    with connected(url, token) as client:
        user = client.delete_user(user_id)
    _say(f"deleted user {user['id']} {user['name']}")


@users_app.command("rotate-token")
def users_rotate_token(
    user_id: Annotated[
        int | None, typer.Argument(help="user id (default: yours; admins: anyone's)")
    ] = None,
    url: Url = None,
    token: Token = None,
) -> None:
    """Give a user a new API token and revoke their earlier ones; where this machine kept
    the old one (for `up` and the local CLI), the new one replaces it."""
    with connected(url, token) as client:
        target = client.me()["id"] if user_id is None else user_id
        rotated = client.rotate_token(target)
        kept = client.token is not None and kept_token.replace(client.token, rotated["token"])
    _say(f"new token of user {target} (shown only once; the earlier ones are revoked):")
    _say(rotated["token"])
    if kept:
        _say("it replaces the old one kept on this machine", err)


@members_app.command("set")
def members_set(
    project: ProjectRef,
    user_id: UserId,
    role: Annotated[Role, typer.Argument(case_sensitive=False)],
    url: Url = None,
    token: Token = None,
) -> None:
    """Give a user a role in a project (replacing the one it had)."""
    with connected(url, token) as client:
        member = client.set_member(client.resolve_project(project), user_id, role.value)
    _say(f"user {member['user_id']} is {member['role']} of project {member['project_id']}")


@members_app.command("remove")
def members_remove(
    project: ProjectRef, user_id: UserId, url: Url = None, token: Token = None
) -> None:
    """Take a user's role in a project away, from their next request on."""
    with connected(url, token) as client:
        project_id = client.resolve_project(project)
        client.remove_member(project_id, user_id)
    _say(f"user {user_id} has no role in project {project_id} any more")


# -- servers -------------------------------------------------------------------------------


@commands.command()
def deploy(
    project: ProjectRef,
    wait: Annotated[bool, typer.Option(help="wait until the server is ready")] = True,
    url: Url = None,
    token: Token = None,
) -> None:
    """Deploy a project's configuration as a server (or share one that already has it)."""
    with connected(url, token) as client:
        server = client.deploy(client.resolve_project(project))
        if wait:
            with err.status(f"waiting for server {server['id']} to be ready"):
                server = client.wait_until_ready(server["id"])
    _say(f"server {server['id']} {server['status']}")


SERVER_COLUMNS: dict[str, Callable[[Json], Any]] = {
    "ID": itemgetter("id"),
    "Status": itemgetter("status"),
    "Projects": lambda s: ", ".join(map(str, s["projects"])),
    "Models": lambda s: ", ".join(f"{m['name']} {m['version']}" for m in s["models"]),
    "Prompts": lambda s: ", ".join(
        f"{p['name']} v{p['version']} ({', '.join(p['labels'])})" for p in s.get("prompts", [])
    ),
    "Replicas": lambda s: f"{s['replicas']['running']}/{s['replicas']['target']}",
    "Deployed at": lambda s: _when(s["deployed_at"]),
}


@servers_app.command("list")
def servers_list(as_json: AsJson = False, url: Url = None, token: Token = None) -> None:
    """Servers with their status, projects, models and replicas (the Clusters page)."""
    with connected(url, token) as client:
        _listing(client.servers(), as_json, SERVER_COLUMNS)


@servers_app.command("show")
def servers_show(server_id: str, url: Url = None, token: Token = None) -> None:
    """One server as JSON."""
    with connected(url, token) as client:
        out.print_json(data=client.server(server_id))


@servers_app.command("delete")
def servers_delete(server_id: str, url: Url = None, token: Token = None) -> None:
    """Delete a server: its replicas, resources and license tokens are freed at once."""
    with connected(url, token) as client:
        client.delete_server(server_id)
    _say(f"deleted server {server_id}")


# -- jobs ----------------------------------------------------------------------------------


def _rate(job: Json) -> str:
    return f"{job['rate']:.1f}/s" if job["rate"] else ""


def _progress_bar(job_id: int) -> tuple[Progress, Callable[[Json], None]]:
    """A live bar of tasks done (predicted or failed) of all, and the callback to update it."""
    progress = Progress(
        TextColumn(f"job {job_id}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]}"),
        TimeRemainingColumn(),
        console=err,
    )
    bar = progress.add_task("", total=None, rate="")

    def show(job: Json) -> None:
        progress.update(
            bar, total=job["total"], completed=job["done"] + job["failed"], rate=_rate(job)
        )

    return progress, show


def _follow(client: Client, job_id: int) -> Json:
    """Show the job's progress until it ends; Ctrl-C cancels the job, not just the watching."""
    progress, show = _progress_bar(job_id)
    try:
        with progress:
            return client.wait_for_job(job_id, on_progress=show)
    except KeyboardInterrupt:
        try:
            client.cancel_job(job_id)
        except ApiError as exc:
            if exc.status_code != 409:
                raise
            return client.job(job_id)  # it ended before the cancel arrived: report that
        _say(f"cancelled job {job_id}", err)
        raise typer.Exit(EXIT_INTERRUPTED) from None


def _llm_usage(job: Json) -> str:
    budget = job["params"].get("token_budget")
    used = (job.get("prompt_tokens") or 0) + (job.get("completion_tokens") or 0)
    return (
        f"external LLM: {job['llm_requests']} requests, {used} tokens "
        f"({job.get('prompt_tokens') or 0} prompt, {job.get('completion_tokens') or 0} completion)"
        + (f" of a budget of {budget}" if budget else "")
    )


def _report(job: Json) -> None:
    """The outcome of a finished job; exit 1 unless it succeeded."""
    if job["state"] != "succeeded":
        if job.get("llm_requests"):
            _say(_llm_usage(job), err)
        error(f"job {job['id']} {job['state']}: {job['reason']}")
        raise typer.Exit(1)
    if job["kind"] == "train":
        metrics = job["details"]["metrics"]
        _say(
            f"job {job['id']} succeeded in {job_seconds(job):.1f} s: registered "
            f"{job['details']['model']}, held-out F1 {metrics['f1']:.3f} "
            f"({metrics.get('baseline_model', 'untrained')} {metrics['baseline_f1']:.3f})"
        )
        return
    _say(
        f"job {job['id']} succeeded: {job['done']} predicted, {job['failed']} failed "
        f"in {job_seconds(job):.1f} s"
    )
    if job.get("llm_requests"):
        _say(_llm_usage(job))
    for failure in job["errors"][:ERRORS_SHOWN]:
        _say(f"task {failure['task_id']}: {failure['error']}", err)
    if len(job["errors"]) > ERRORS_SHOWN:
        _say(f"... and {len(job['errors']) - ERRORS_SHOWN} more (see `jobs show`)", err)


JOB_COLUMNS: dict[str, Callable[[Json], Any]] = {
    "ID": itemgetter("id"),
    "Project": itemgetter("project_id"),
    "Kind": itemgetter("kind"),
    "State": itemgetter("state"),
    "Done": lambda j: f"{j['done']}/{j['total']}",
    "Failed": itemgetter("failed"),
    "Rate": _rate,
    "Created": lambda j: _when(j["created_at"]),
}


@commands.command()
def run(
    project: ProjectRef,
    server: Annotated[
        str | None, typer.Option(help="server to use (default: the project's)")
    ] = None,
    task_id: Annotated[
        list[int] | None, typer.Option(help="pre-annotate only this task (repeatable)")
    ] = None,
    deploy_if_missing: Annotated[
        bool, typer.Option("--deploy/--no-deploy", help="deploy a server when the project has none")
    ] = True,
    token_budget: Annotated[
        int | None,
        typer.Option(min=1, help="stop the job once its external LLM prompts used these tokens"),
    ] = None,
    detach: Annotated[
        bool, typer.Option("--detach", help="print the job id and return at once")
    ] = False,
    input: Annotated[
        str | None,
        typer.Option(
            "--input",
            help="pre-annotate this Parquet/JSONL/CSV file or folder, or Spark table, "
            "instead of the project's tasks",
        ),
    ] = None,
    output: Annotated[
        Path | None, typer.Option(help="with --input: the folder the results go to")
    ] = None,
    format: Annotated[
        OutputFormat, typer.Option("--format", help="with --input: the output files' format")
    ] = OutputFormat.parquet,
    text_col: Annotated[str, typer.Option(help="with --input: the column of texts")] = "text",
    url: Url = None,
    token: Token = None,
) -> None:
    """Pre-annotate a project's tasks as a job, with a live progress bar (Ctrl-C cancels);
    with --input, pre-annotate files or a Spark table into --output instead (resumable)."""
    if input is not None:
        spec, folder = checked_input(input, output, text_col, bool(task_id) or detach)
        with connected(url, token) as client:
            project_id = client.resolve_project(project)
            client.preannotate_options(project_id)  # only its managers may pre-annotate it
        run_input(spec, project_id, folder, server, text_col, format)
        return
    with connected(url, token) as client:
        job = client.preannotate(
            client.resolve_project(project),
            task_ids=task_id or None,
            server_id=server,
            deploy_if_missing=deploy_if_missing,
            token_budget=token_budget,
        )
        if detach:
            _say(str(job["id"]))
            return
        job = _follow(client, job["id"])
    _report(job)


def finite(value: float) -> float:
    """An option's number that is not NaN or infinite (`min` lets NaN through)."""
    if not math.isfinite(value):
        raise typer.BadParameter("must be a finite number")
    return value


@commands.command()
def train(
    project: ProjectRef,
    model_name: Annotated[str, typer.Option(help="versions are registered as NAME_v1, _v2, ...")],
    kind: Annotated[
        str,
        typer.Option(
            help="ner (<Labels>), classification (<Choices>), assertion (assertion labels), "
            "relation (<Relations>) or visual_ner (<RectangleLabels> on documents)"
        ),
    ] = "ner",
    base_model: Annotated[str | None, typer.Option(help="hub NER model to start from")] = None,
    epochs: Annotated[int, typer.Option(min=1, max=200)] = 10,
    num_cpus: Annotated[
        float, typer.Option(min=0, callback=finite, help="CPUs for the training run")
    ] = 1.0,
    num_gpus: Annotated[
        float, typer.Option(min=0, callback=finite, help="GPUs for the training run")
    ] = 0.0,
    detach: Annotated[
        bool, typer.Option("--detach", help="print the job id and return at once")
    ] = False,
    url: Url = None,
    token: Token = None,
) -> None:
    """Train a model on the project's completions as a job, with a live progress bar over
    the epochs (Ctrl-C cancels); the result is registered in the Models Hub."""
    spec = {
        "kind": kind,
        "model_name": model_name,
        "base_model": base_model,
        "epochs": epochs,
        "resources": {"num_cpus": num_cpus, "num_gpus": num_gpus},
    }
    with connected(url, token) as client:
        job = client.train(client.resolve_project(project), spec)
        if detach:
            _say(str(job["id"]))
            return
        job = _follow(client, job["id"])
    _report(job)


@models_app.command("show")
def models_show(name: str, url: Url = None, token: Token = None) -> None:
    """A model's versions in the hub, with their labels and held-out metrics."""
    with connected(url, token) as client:
        versions = client.model(name)["versions"]
    table = Table("Version", "Kind", "Labels", "F1", "Untrained F1", "Trained on")
    for v in versions:
        metrics, training = v.get("metrics") or {}, v.get("training") or {}
        table.add_row(
            _text(v["name"]),
            _text(v["kind"]),
            _text(", ".join(v["labels"])),
            f"{metrics['f1']:.3f}" if "f1" in metrics else "",
            f"{metrics['baseline_f1']:.3f}" if "baseline_f1" in metrics else "",
            _text(f"{training['completions']} completions of project {training['source_project']}")
            if training.get("completions")
            else "",
        )
    out.print(table)


@jobs_app.command("list")
def jobs_list(
    project: Annotated[str | None, typer.Option(help="only this project (id or name)")] = None,
    state: Annotated[JobState | None, typer.Option(help="only jobs in this state")] = None,
    as_json: AsJson = False,
    url: Url = None,
    token: Token = None,
) -> None:
    """Jobs with their progress, oldest first."""
    with connected(url, token) as client:
        project_id = client.resolve_project(project) if project else None
        _listing(client.jobs(project_id, state.value if state else None), as_json, JOB_COLUMNS)


@jobs_app.command("show")
def jobs_show(job_id: int, url: Url = None, token: Token = None) -> None:
    """One job as JSON, with the errors of its failed tasks."""
    with connected(url, token) as client:
        out.print_json(data=client.job(job_id))


@jobs_app.command("cancel")
def jobs_cancel(job_id: int, url: Url = None, token: Token = None) -> None:
    """Cancel a job; predictions it already wrote are kept."""
    with connected(url, token) as client:
        job = client.cancel_job(job_id)
    _say(f"job {job['id']} {job['state']}")


# -- LLM providers -------------------------------------------------------------------------


def _api_key(env_var: str | None) -> str:
    """The key from the named environment variable, else from stdin (typed unseen on a
    terminal); never from the command line, where other users and the history would see it."""
    if env_var:
        key = os.environ.get(env_var, "").strip()
        if not key:
            raise ApiError(400, f"the environment variable {env_var} is not set or empty")
        return key
    if sys.stdin.isatty():
        return typer.prompt("API key", hide_input=True).strip()
    key = sys.stdin.readline().strip()
    if not key:
        raise ApiError(400, "no API key on stdin; pipe it in or use --api-key-env VAR")
    return key


PROVIDER_COLUMNS: dict[str, Callable[[Json], Any]] = {
    "Name": itemgetter("name"),
    "Kind": itemgetter("kind"),
    "Base URL": itemgetter("base_url"),
    "API version": itemgetter("api_version"),
    "Added": lambda p: _when(p["created_at"]),
}


@providers_app.command("add")
def providers_add(
    name: str,
    kind: Annotated[ProviderKind, typer.Option(help="the service's protocol")],
    base_url: Annotated[
        str, typer.Option(help="https://api.openai.com/v1 or https://<resource>.openai.azure.com")
    ],
    api_version: Annotated[
        str | None, typer.Option(help="Azure OpenAI's api-version, e.g. 2024-10-21")
    ] = None,
    api_key_env: Annotated[
        str | None,
        typer.Option(metavar="VAR", help="read the key from this variable (default: stdin)"),
    ] = None,
    timeout: Annotated[
        float | None, typer.Option(min=0.1, help="seconds per request (default 60)")
    ] = None,
    concurrency: Annotated[
        int | None, typer.Option(min=1, help="requests in flight per replica (default 4)")
    ] = None,
    url: Url = None,
    token: Token = None,
) -> None:
    """Register an OpenAI or Azure OpenAI provider; its key is stored encrypted."""
    with connected(url, token) as client:
        provider = client.add_provider(
            name,
            kind.value,
            base_url,
            _api_key(api_key_env),
            api_version,
            timeout_s=timeout,
            concurrency=concurrency,
        )
    _say(f"added provider {provider['name']} ({provider['kind']}, {provider['base_url']})")


@providers_app.command("list")
def providers_list(as_json: AsJson = False, url: Url = None, token: Token = None) -> None:
    """Registered providers (never their keys)."""
    with connected(url, token) as client:
        _listing(client.providers(), as_json, PROVIDER_COLUMNS)


@providers_app.command("delete")
def providers_delete(name: str, url: Url = None, token: Token = None) -> None:
    """Forget a provider and its key."""
    with connected(url, token) as client:
        client.delete_provider(name)
    _say(f"deleted provider {name}")


@providers_app.command("validate")
def providers_validate(
    name: str,
    model: Annotated[
        str | None, typer.Option(help="model or Azure deployment to call (OpenAI: gpt-4o-mini)")
    ] = None,
    url: Url = None,
    token: Token = None,
) -> None:
    """Call the provider once and show its answer; exit 1 when the call failed."""
    with connected(url, token) as client:
        check = client.validate_provider(name, model)
    if not check["ok"]:
        error(f"provider {name} ({check['model']}): {check['error']}")
        raise typer.Exit(1)
    _say(
        f"provider {name} ({check['model']}) answered {check['answer']!r} "
        f"({check['prompt_tokens']} prompt + {check['completion_tokens']} completion tokens)"
    )


# -- export --------------------------------------------------------------------------------


@commands.command()
def export(
    project: ProjectRef,
    fmt: Annotated[
        ExportFormat, typer.Option("--format", help="layout of the exported JSON")
    ] = ExportFormat.generative_ai_lab,
    out_file: Annotated[
        Path | None, typer.Option("--out", help="file to write (default: <project>-<format>.json)")
    ] = None,
    url: Url = None,
    token: Token = None,
) -> None:
    """Export a project's tasks with their predictions and completions as one JSON file."""
    with connected(url, token) as client:
        project_id = client.resolve_project(project)
        path = output_file(
            out_file or Path(f"{client.project(project_id)['name']}-{fmt.value}.json")
        )
        size = client.export(project_id, fmt.value, path)
    _say(f"wrote {size} bytes to {path}")
