"""A typed Python client for the HTTP API.

Answers stay plain JSON (`dict`/`list`), the same shapes the API documents, so a script can
pass them on or print them without conversion. Every 4xx/5xx answer becomes an `ApiError`
carrying the server's message; transport problems surface as `httpx.TransportError`.
"""

import os
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx

from preannotate.cluster.up_state import remembered

DEFAULT_URL = "http://127.0.0.1:8000"
URL_ENV = "PREANNOTATE_URL"
TOKEN_ENV = "PREANNOTATE_TOKEN"

TASK_FORMATS: dict[str, str] = {
    ".json": "json",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".csv": "csv",
}
"""Task file suffix -> the `format` the import endpoint expects."""

CONTENT_TYPES: dict[str, str] = {
    "json": "application/json",
    "jsonl": "application/x-ndjson",
    "csv": "text/csv",
}
FINAL_JOB_STATES = frozenset({"succeeded", "failed", "cancelled"})
STREAM_CHUNK = 1 << 16

Json = dict[str, Any]


class ApiError(Exception):
    """A 4xx/5xx answer: `status_code` and the server's `detail` message."""

    def __init__(self, status_code: int, detail: str, body: dict[str, Any] | None = None):
        self.status_code = status_code
        self.detail = detail
        self.body = body or {}
        super().__init__(f"{status_code}: {detail}")


def _raise_for_status(response: httpx.Response) -> None:
    """Turn an error answer into an ApiError with the server's `detail` (or its raw text)."""
    if not response.is_error:
        return
    try:
        body = response.json()
    except ValueError:
        body = None
    if not isinstance(body, dict):
        body = {"detail": response.text}
    raise ApiError(response.status_code, _detail_text(body.get("detail", response.text)), body)


def _detail_text(detail: Any) -> str:
    """The message of an error body; FastAPI's request validation gives a list of
    `{loc, msg}` problems, which read better as `where: what` than as a Python repr."""
    if isinstance(detail, list):
        return "; ".join(
            f"{'.'.join(map(str, item.get('loc', [])))}: {item.get('msg')}"
            if isinstance(item, dict)
            else str(item)
            for item in detail
        )
    return str(detail)


def job_seconds(job: Json) -> float:
    """How long a job ran, by the store's times; one that had nothing to do may never have
    started (0)."""
    if not (job["started_at"] and job["finished_at"]):
        return 0.0
    started, finished = (datetime.fromisoformat(job[k]) for k in ("started_at", "finished_at"))
    return (finished - started).total_seconds()


def task_format(path: Path) -> str:
    """The import `format` of a task file, from its suffix; the server cannot guess it from a
    raw body, so an unknown suffix is refused here before anything is sent."""
    fmt = TASK_FORMATS.get(Path(path).suffix.lower())
    if fmt is None:
        raise ApiError(400, f"{path}: cannot tell the format; use .json, .jsonl or .csv")
    return fmt


def connection_settings(url: str | None = None, token: str | None = None) -> tuple[str, str | None]:
    """The API address and token: given values, else the environment, else what
    `preannotate up` remembered, else the default local address.

    The remembered token is only used for the remembered URL, so it is never sent to
    another server.
    """
    url = url or os.environ.get(URL_ENV)
    token = token or os.environ.get(TOKEN_ENV)
    if url and token:
        return url, token
    running = remembered() or {}
    url = url or running.get("url") or DEFAULT_URL
    if token is None and url == running.get("url"):
        token = running.get("token")
    return url, token


class Client:
    """One connection to the API; use it as a context manager to close it."""

    def __init__(self, url: str = DEFAULT_URL, token: str | None = None, timeout: float = 120):
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.url = url
        self.token = token
        self.http = httpx.Client(base_url=url, headers=headers, timeout=timeout)

    @classmethod
    def from_env(cls, url: str | None = None, token: str | None = None) -> "Client":
        """A client for the configured API: see `connection_settings`."""
        return cls(*connection_settings(url, token))

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *_: object) -> None:
        self.http.close()

    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self.http.request(method, path, **kwargs)
        _raise_for_status(response)
        return response.json()

    # -- cluster and users ---------------------------------------------------------------

    def health(self) -> Json:
        return self._call("GET", "/health")

    def models(self) -> list[Json]:
        return self._call("GET", "/models")

    def prompts(self) -> list[Json]:
        """The shared prompt library."""
        return self._call("GET", "/prompts")

    def add_prompt(self, prompt: Json) -> Json:
        """Add a prompt to the library, or a new version of one of the caller's; the answer
        has its version."""
        return self._call("POST", "/prompts", json=prompt)

    def me(self) -> Json:
        """The caller: `{id, name, is_admin}`."""
        return self._call("GET", "/me")

    def create_user(self, name: str, is_admin: bool = False) -> Json:
        """A new user (admins only); the answer holds its API token, shown only this once."""
        return self._call("POST", "/users", json={"name": name, "is_admin": is_admin})

    def delete_user(self, user_id: int) -> Json:
        """Delete a user (admins only): their tokens and roles are revoked at once."""
        return self._call("DELETE", f"/users/{user_id}")

    def rotate_token(self, user_id: int) -> Json:
        """A new token for a user (yourself, or anyone for admins), shown only this once;
        the user's earlier tokens stop working: `{user_id, token}`."""
        return self._call("POST", f"/users/{user_id}/tokens")

    # -- projects ------------------------------------------------------------------------

    def create_project(self, config: Json) -> Json:
        return self._call("POST", "/projects", json=config)

    def projects(self) -> list[Json]:
        return self._call("GET", "/projects")

    def project(self, project_id: int) -> Json:
        return self._call("GET", f"/projects/{project_id}")

    def resolve_project(self, ref: str | int) -> int:
        """The id of a project given by id or by (unique) name, as users type it; a name made
        of digits only is read as an id."""
        if isinstance(ref, int) or ref.isdecimal():
            return int(ref)
        for project in self.projects():
            if project["name"] == ref:
                return project["id"]
        raise ApiError(404, f"no project named {ref!r}")

    def set_config(self, project_id: int, config: Json) -> Json:
        return self._call("PUT", f"/projects/{project_id}/config", json=config)

    def set_member(self, project_id: int, user_id: int, role: str) -> Json:
        """Give a user a role (`owner`, `manager` or `annotator`) in a project."""
        return self._call(
            "PUT", f"/projects/{project_id}/members", json={"user_id": user_id, "role": role}
        )

    def remove_member(self, project_id: int, user_id: int) -> Json:
        """Take a user's role in a project away (Owners and admins)."""
        return self._call("DELETE", f"/projects/{project_id}/members/{user_id}")

    # -- tasks ---------------------------------------------------------------------------

    def import_tasks(self, project_id: int, path: Path) -> Json:
        """Upload a task file as it is, streamed from disk so its size does not matter here:
        `{count, first_id, last_id}`. Its name goes along, so errors name the file."""
        fmt = task_format(path)
        with Path(path).open("rb") as body:
            return self._call(
                "POST",
                f"/projects/{project_id}/tasks",
                params={"format": fmt},
                content=body,
                headers={
                    "Content-Type": CONTENT_TYPES[fmt],
                    "Content-Disposition": f"attachment; filename*=UTF-8''{quote(Path(path).name)}",
                },
            )

    def upload_files(self, project_id: int, paths: list[Path]) -> Json:
        """Upload documents (PDFs, images) in one request, each becoming a task, all or
        nothing: `{"files": [{id, task_id, sha256, name, kind, size, pages}, ...]}`."""
        with ExitStack() as stack:
            parts = [
                ("files", (Path(p).name, stack.enter_context(Path(p).open("rb")))) for p in paths
            ]
            return self._call("POST", f"/projects/{project_id}/files", files=parts)

    def files(self, project_id: int) -> list[Json]:
        """The documents uploaded to the project, with the task each became."""
        return self._call("GET", f"/projects/{project_id}/files")["files"]

    def render(
        self, project_id: int, task_id: int, page: int = 1, version: int | None = None
    ) -> bytes:
        """A page of a task's document with a prediction's boxes drawn on it, as PNG."""
        params = {"page": page} | ({"version": version} if version is not None else {})
        response = self.http.get(f"/projects/{project_id}/tasks/{task_id}/render", params=params)
        _raise_for_status(response)
        return response.content

    def tasks(self, project_id: int, after_id: int = 0, limit: int = 100) -> Json:
        """One page: `{"tasks": [...], "next_after_id": int | None}`."""
        return self._call(
            "GET", f"/projects/{project_id}/tasks", params={"after_id": after_id, "limit": limit}
        )

    def iter_tasks(self, project_id: int, limit: int = 100) -> Iterator[Json]:
        """Every task of a project, page by page, without holding them all."""
        after_id: int | None = 0
        while after_id is not None:
            page = self.tasks(project_id, after_id=after_id, limit=limit)
            yield from page["tasks"]
            after_id = page["next_after_id"]

    # -- servers -------------------------------------------------------------------------

    def deploy(self, project_id: int) -> Json:
        return self._call("POST", f"/projects/{project_id}/deploy")

    def preannotate_options(self, project_id: int) -> Json:
        return self._call("GET", f"/projects/{project_id}/preannotate/options")

    def servers(self) -> list[Json]:
        return self._call("GET", "/servers")

    def server(self, server_id: str) -> Json:
        return self._call("GET", f"/servers/{server_id}")

    def delete_server(self, server_id: str) -> Json:
        return self._call("DELETE", f"/servers/{server_id}")

    def predict(self, server_id: str, tasks: list[Json]) -> list[Json]:
        return self._call("POST", f"/servers/{server_id}/predict", json={"tasks": tasks})[
            "predictions"
        ]

    def wait_until_ready(self, server_id: str, timeout: float = 300) -> Json:
        """Poll until the server is ready; raise ApiError when it fails or time runs out."""
        deadline = time.monotonic() + timeout
        while True:
            server = self.server(server_id)
            if server["status"] == "ready":
                return server
            if server["status"] in ("failed", "deleted") or time.monotonic() > deadline:
                raise ApiError(
                    409, f"server {server_id} is {server['status']}: {server.get('message')}"
                )
            time.sleep(0.5)

    # -- LLM providers -------------------------------------------------------------------

    def add_provider(
        self,
        name: str,
        kind: str,
        base_url: str,
        api_key: str,
        api_version: str | None = None,
        timeout_s: float | None = None,
        concurrency: int | None = None,
    ) -> Json:
        """Register an external LLM provider (admins only); the key is stored encrypted
        and never comes back."""
        body = {
            "name": name,
            "kind": kind,
            "base_url": base_url,
            "api_key": api_key,
            "api_version": api_version,
            "timeout_s": timeout_s,
            "concurrency": concurrency,
        }
        return self._call("POST", "/providers", json=body)

    def providers(self) -> list[Json]:
        return self._call("GET", "/providers")

    def delete_provider(self, name: str) -> Json:
        return self._call("DELETE", f"/providers/{quote(name, safe='')}")

    def validate_provider(self, name: str, model: str | None = None) -> Json:
        """Call the provider once: `{ok, answer, error, llm_requests, ...}`."""
        path = f"/providers/{quote(name, safe='')}/validate"
        return self._call("POST", path, json={"model": model})

    # -- jobs ----------------------------------------------------------------------------

    def preannotate(
        self,
        project_id: int,
        task_ids: list[int] | None = None,
        server_id: str | None = None,
        deploy_if_missing: bool = True,
        token_budget: int | None = None,
    ) -> Json:
        """Start a bulk pre-annotation job over the given tasks (all tasks when None); with
        `token_budget`, it stops once its external LLM prompts used that many tokens."""
        body = {
            "task_ids": task_ids,
            "all": task_ids is None,
            "server_id": server_id,
            "deploy_if_missing": deploy_if_missing,
            "token_budget": token_budget,
        }
        return self._call("POST", f"/projects/{project_id}/preannotate", json=body)

    def jobs(self, project_id: int | None = None, state: str | None = None) -> list[Json]:
        """Jobs, optionally only one project's or only those in one state."""
        filters = {"project_id": project_id, "state": state}
        return self._call(
            "GET", "/jobs", params={k: v for k, v in filters.items() if v is not None}
        )

    def job(self, job_id: int) -> Json:
        return self._call("GET", f"/jobs/{job_id}")

    def train(self, project_id: int, spec: dict[str, Any]) -> Json:
        """Start a training job: `{kind, model_name, base_model?, epochs?, resources?}`."""
        return self._call("POST", f"/projects/{project_id}/train", json=spec)

    def model(self, name: str) -> Json:
        """A model and its trained versions with their metrics."""
        return self._call("GET", f"/models/{name}")

    def cancel_job(self, job_id: int) -> Json:
        return self._call("DELETE", f"/jobs/{job_id}")

    def wait_for_job(
        self,
        job_id: int,
        on_progress: Callable[[Json], None] | None = None,
        poll_s: float = 0.5,
    ) -> Json:
        """Poll a job until it succeeds, fails or is cancelled; `on_progress` sees every poll."""
        while True:
            job = self.job(job_id)
            if on_progress is not None:
                on_progress(job)
            if job["state"] in FINAL_JOB_STATES:
                return job
            time.sleep(poll_s)

    # -- predictions and completions -----------------------------------------------------

    def predictions(self, task_id: int) -> list[Json]:
        """Every prediction version of a task."""
        return self._call("GET", f"/tasks/{task_id}/predictions")

    def compare(self, a: int, b: int) -> Json:
        """What changed between two predictions: `{added, removed, changed, unchanged}`."""
        return self._call("GET", "/predictions/compare", params={"a": a, "b": b})

    def create_completion(
        self, task_id: int, from_prediction: int | None = None, result: list[Json] | None = None
    ) -> Json:
        """A human annotation: an editable copy of a prediction, or a result given here."""
        if (from_prediction is None) == (result is None):
            raise ValueError("give exactly one of from_prediction and result")
        body = {"from_prediction": from_prediction} if result is None else {"result": result}
        return self._call("POST", f"/tasks/{task_id}/completions", json=body)

    def completions(self, task_id: int) -> list[Json]:
        return self._call("GET", f"/tasks/{task_id}/completions")

    # -- export --------------------------------------------------------------------------

    def export(self, project_id: int, fmt: str, path: Path) -> int:
        """Stream a project export into `path` and return its size in bytes.

        The answer may be larger than memory, so it is written chunk by chunk to a `.part`
        file that replaces `path` only when complete: a failed export leaves no torn file.
        """
        path = Path(path)
        partial = path.with_name(path.name + ".part")
        url = f"/projects/{project_id}/export"
        with self.http.stream("GET", url, params={"format": fmt}) as response:
            if response.is_error:
                response.read()
                _raise_for_status(response)
            try:
                with partial.open("wb") as sink:
                    for chunk in response.iter_bytes(STREAM_CHUNK):
                        sink.write(chunk)
            except BaseException:
                partial.unlink(missing_ok=True)
                raise
        partial.replace(path)
        return path.stat().st_size
