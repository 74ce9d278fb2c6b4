"""Bad input gets a 4xx with `{"detail": "<message>"}` and changes nothing; what nobody
foresaw gets a JSON 500 without a traceback; the API docs work without internet access.

HTTP tests run on the real two-node cluster. The task file readers and a project's
creation in one transaction are also tested on the store, which the CLI uses offline.
"""

import json
import re
import shutil
import sqlite3
import subprocess
import uuid
from pathlib import Path

import httpx
import pytest
from fastapi.routing import APIRoute

from preannotate.client.api import ApiError, Client
from preannotate.deployments.router import api as app
from preannotate.deployments.routes.json_body import JsonBodyRoute
from preannotate.deployments.routes.tasks import SPOOL_BYTES
from preannotate.store import InvalidInput, Store
from tests.conftest import RayCluster, labels_xml

XML = labels_xml('value="PERSON" model="ner_general_en_sm"')
NOT_FINITE = "NaN and Infinity are not JSON; use null or a number"
LONE_SURROGATE = "a lone surrogate \\ud800 is not text"
LONG_NUMBER = "a number longer than 4300 digits"
CHROMIUM = shutil.which("chromium-headless-shell") or shutil.which("chromium")


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def new_project(api: httpx.Client) -> int:
    response = api.post("/projects", json={"name": unique("p"), "labeling_config": XML})
    assert response.status_code == 201, response.text
    return response.json()["id"]


def project_names(api: httpx.Client) -> set[str]:
    return {p["name"] for p in api.get("/projects").json()}


def task_texts(api: httpx.Client, project_id: int) -> list[str]:
    """Every task's text, read the way the task list shows them (so the page must answer)."""
    page = api.get(f"/projects/{project_id}/tasks", params={"limit": 1000})
    assert page.status_code == 200, page.text
    return [task["data"]["text"] for task in page.json()["tasks"]]


def refusal(response: httpx.Response, status: int) -> str:
    """The message of an error answer with `status`: `detail` is one string, and nothing
    of a traceback is in the body."""
    assert response.status_code == status, response.text
    detail = response.json()["detail"]
    assert isinstance(detail, str), detail
    assert "Traceback" not in response.text and ".py" not in response.text
    return detail


def with_number(body: dict, number: str) -> bytes:
    """`body` as JSON with its "NUMBER" string replaced by `number` written as it is:
    httpx would not send NaN or Infinity."""
    return json.dumps(body).replace('"NUMBER"', number).encode()


# -- request bodies ----------------------------------------------------------------------


@pytest.mark.parametrize("number", ["NaN", "Infinity", "-Infinity", "1e999"])
def test_nan_or_infinity_in_a_project_is_a_422_and_creates_nothing(
    api: httpx.Client, number: str
) -> None:
    name = unique("resources")
    body = {"name": name, "labeling_config": XML, "resources": {"num_cpus": "NUMBER"}}
    response = api.post(
        "/projects", content=with_number(body, number), headers={"Content-Type": "application/json"}
    )
    assert refusal(response, 422) == f"request body: {NOT_FINITE}"
    assert name not in project_names(api)
    # Nothing holds the name: the same project with a valid configuration is created whole.
    created = api.post("/projects", json={"name": name, "labeling_config": XML})
    assert created.status_code == 201 and created.json()["config_version"] == 1


def test_an_invalid_request_names_each_problem_without_echoing_the_input(
    api: httpx.Client,
) -> None:
    name = unique("invalid")
    body = {"name": name, "labeling_config": XML, "resources": {"num_cpus": -1, "gpus": 1}}
    response = api.post("/projects", json=body)
    assert refusal(response, 422) == (
        "body.resources.num_cpus: Input should be greater than or equal to 0; "
        "body.resources.gpus: Extra inputs are not permitted"
    )
    assert response.json()["problems"] == response.json()["detail"].split("; ")
    assert name not in project_names(api)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ('{"result": [{"value": {"text": "a\\ud800b"}}]}', LONE_SURROGATE),
        ('{"result": [{"value": {"score": NaN}}]}', NOT_FINITE),
        ('{"result": ' + "[" * 100_000 + "]" * 100_000 + "}", "nested deeper than 64 levels"),
        ('{"result": [{"value": "\xff"}]}', "not UTF-8 text"),
        ('{"result": [}', "not valid JSON"),
        ('{"result": [{"value": {"n": ' + "9" * 5000 + "}}]}", LONG_NUMBER),
    ],
)
def test_a_body_that_is_not_standard_json_is_a_422_and_stores_nothing(
    api: httpx.Client, body: str, message: str
) -> None:
    project = new_project(api)
    task = api.post(f"/projects/{project}/tasks?format=jsonl", content=b'{"text": "a"}\n')
    url = f"/tasks/{task.json()['first_id']}/completions"
    raw = body.encode("latin-1") if "\xff" in body else body.encode()
    response = api.post(url, content=raw, headers={"Content-Type": "application/json"})
    assert refusal(response, 422).startswith("request body")
    assert message in response.json()["detail"]
    listed = api.get(url)
    assert listed.status_code == 200 and listed.json() == []


def test_every_route_with_a_body_reads_it_as_standard_json() -> None:
    """A route added without `JsonBodyRoute` would take NaN and lone surrogates again."""
    loose = [
        route.path
        for route in app.routes
        if isinstance(route, APIRoute)
        and route.body_field is not None
        and not isinstance(route, JsonBodyRoute)
    ]
    assert loose == []


# -- task imports ------------------------------------------------------------------------

SURROGATE_TASK = json.dumps({"text": "a\ud800b"}).encode()  # json writes it as \ud800
SURROGATE_COMPLETION = json.dumps(
    {"data": {"text": "ok"}, "completions": [{"result": [{"value": {"text": "\ud800"}}]}]}
).encode()
NESTED = b'{"text": "deep", "meta": ' + b"[" * 100 + b"]" * 100 + b"}"


@pytest.mark.parametrize(
    ("fmt", "body", "message"),
    [
        ("jsonl", b'{"text": "ok"}\n' + SURROGATE_TASK + b"\n", f" line 2: {LONE_SURROGATE}"),
        ("json", b'[{"text": "ok"}, ' + SURROGATE_TASK + b"]", f" task 2: {LONE_SURROGATE}"),
        ("jsonl", b'{"text": "ok"}\n' + SURROGATE_COMPLETION, f" line 2: {LONE_SURROGATE}"),
        (
            "jsonl",
            b'{"text": "ok"}\n{"text": "caf\xe9"}\n',
            " line 2: not UTF-8 text (the byte 0xe9",
        ),
        ("csv", b'text,source\nok,a\n"caf\xe9",b\n', " line 3: not UTF-8 text (the byte 0xe9"),
        ("json", b'[{"text": "ok"}, {"text": "caf\xe9"}]', " task 2: not UTF-8 text"),
        ("jsonl", b'{"text": "ok"}\n' + NESTED + b"\n", " line 2: nested deeper than 64 levels"),
        ("json", b"[" * 100_000 + b"]" * 100_000, ": nested deeper than 64 levels"),
        ("jsonl", b'{"text": "ok"}\n{"text": "x", "weight": NaN}\n', f" line 2: {NOT_FINITE}"),
        (
            "jsonl",
            b'{"text": "ok"}\n{"text": "x", "n": ' + b"9" * 5000 + b"}\n",
            f" line 2: {LONG_NUMBER}",
        ),
        ("json", b'[{"text": "ok"}, {"text": "x", "n": ' + b"9" * 5000 + b"}]", f": {LONG_NUMBER}"),
    ],
)
def test_an_import_that_is_not_standard_json_is_refused_naming_the_line(
    api: httpx.Client, fmt: str, body: bytes, message: str
) -> None:
    project = new_project(api)
    before = api.post(f"/projects/{project}/tasks?format=jsonl", content=b'{"text": "kept"}\n')
    assert before.status_code == 201
    response = api.post(f"/projects/{project}/tasks", params={"format": fmt}, content=body)
    assert refusal(response, 400).startswith(f"request body{message}")
    assert task_texts(api, project) == ["kept"]  # nothing imported; the page still reads


def test_import_errors_name_the_uploaded_file_or_the_request_body(
    ray_cluster: RayCluster, tmp_path: Path
) -> None:
    file = tmp_path / "clinic notes.jsonl"
    file.write_text('{"text": "one"}\n{"text": "two"}\n{"text": oops}\n')
    with Client(ray_cluster.url, ray_cluster.admin_token) as client:
        project = client.create_project({"name": unique("upload"), "labeling_config": XML})
        with pytest.raises(ApiError) as named:
            client.import_tasks(project["id"], file)
        assert named.value.status_code == 400
        assert named.value.detail.startswith("clinic notes.jsonl line 3: not valid JSON")

        # A body larger than the spool's memory goes to a file, which has no name either.
        line = json.dumps({"text": "x" * 1000}).encode() + b"\n"
        count = SPOOL_BYTES // len(line) + 100
        body = line * count + b'{"text": oops}\n'
        response = client.http.post(
            f"/projects/{project['id']}/tasks", params={"format": "jsonl"}, content=body
        )
        assert refusal(response, 400).startswith(f"request body line {count + 1}: not valid JSON")
        assert client.tasks(project["id"])["tasks"] == []


# -- errors nobody foresaw ---------------------------------------------------------------


def test_an_unforeseen_error_is_a_json_500_without_a_traceback(
    api: httpx.Client, ray_cluster: RayCluster
) -> None:
    """The tokens table gone from under the router (as an operator's mistake would do):
    the error is the router's to log, not the caller's to read."""
    token = api.post("/users", json={"name": unique("user")}).json()["token"]
    database = ray_cluster.database_url.removeprefix("sqlite:///")
    with sqlite3.connect(database) as db:
        db.execute("ALTER TABLE api_tokens RENAME TO api_tokens_moved")
    try:
        response = httpx.get(
            f"{ray_cluster.url}/me", headers={"Authorization": f"Bearer {token}"}, timeout=60
        )
    finally:
        with sqlite3.connect(database) as db:
            db.execute("ALTER TABLE api_tokens_moved RENAME TO api_tokens")
    assert refusal(response, 500) == (
        "internal error; the router's log has its cause under this answer's X-Request-Id"
    )
    assert "api_tokens" not in response.text and "sqlite" not in response.text.lower()
    assert response.headers["content-type"] == "application/json"
    assert response.headers["x-request-id"]  # what the router's log names the error by
    assert httpx.get(f"{ray_cluster.url}/me", headers={"Authorization": f"Bearer {token}"})


# -- API docs ----------------------------------------------------------------------------

DOC_ASSETS = {".js": "text/javascript", ".css": "text/css", ".png": "image/png"}


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
def test_the_api_docs_use_only_assets_the_router_serves(ray_cluster: RayCluster, page: str) -> None:
    with httpx.Client(base_url=ray_cluster.url) as http:
        html = http.get(page)
        assert html.status_code == 200 and html.headers["content-type"].startswith("text/html")
        links = re.findall(r'(?:src|href)="([^"]+)"', html.text)
        assert links and all(link.startswith("/") and not link.startswith("//") for link in links)
        for link in links:
            asset = http.get(link)
            assert asset.status_code == 200, link
            kind = DOC_ASSETS[Path(link).suffix]
            assert asset.headers["content-type"].startswith(kind), link


def offline_dom(url: str) -> str:
    """The page as headless Chromium shows it once its scripts ran, with no network but
    127.0.0.1: host names do not resolve and any other address goes to a closed proxy."""
    assert CHROMIUM is not None
    done = subprocess.run(
        [
            CHROMIUM,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
            "--proxy-server=http://127.0.0.1:9",
            "--virtual-time-budget=30000",
            "--dump-dom",
            url,
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


@pytest.mark.skipif(
    CHROMIUM is None, reason="needs headless Chromium: apt-get install chromium-headless-shell"
)
def test_the_api_docs_render_every_operation_without_internet(ray_cluster: RayCluster) -> None:
    operations = {
        (method.upper(), path)
        for path, methods in httpx.get(f"{ray_cluster.url}/openapi.json").json()["paths"].items()
        for method in methods
    }
    swagger = offline_dom(f"{ray_cluster.url}/docs")
    shown = set(
        re.findall(
            r'opblock-summary-method">(\w+)</span>.*?opblock-summary-path" data-path="([^"]+)"',
            swagger,
        )
    )
    assert shown == operations
    redoc = offline_dom(f"{ray_cluster.url}/redoc")
    assert all(path in redoc for _, path in operations)


# -- the store, as the CLI uses it -------------------------------------------------------


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store(f"sqlite:///{tmp_path / 'store.sqlite'}")


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("tasks.jsonl", b'{"text": "ok"}\n' + SURROGATE_TASK + b"\n", f"line 2: {LONE_SURROGATE}"),
        ("tasks.json", b'[{"text": "ok"}, {"text": "\xff"}]', "task 2: not UTF-8 text"),
        ("tasks.csv", b"text\nok\n\xef\xbb\n", "line 3: not UTF-8 text (the byte 0xef"),
    ],
)
def test_a_task_file_that_is_not_text_imports_nothing(
    store: Store, tmp_path: Path, name: str, content: bytes, message: str
) -> None:
    project = store.create_project("notes")
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(InvalidInput) as refused:
        store.import_tasks(project.id, path)
    assert str(refused.value).startswith(f"{path} {message}")
    assert store.count_tasks(project.id) == 0


def test_a_project_is_created_whole_or_not_at_all(store: Store) -> None:
    owner = store.create_user("owner")
    with pytest.raises(InvalidInput, match="NaN and Infinity are not JSON"):
        store.create_project("p", owner_id=owner.id, config=({"weight": float("inf")}, "h1"))
    assert store.list_projects() == [] and store.roles_of(owner.id) == {}

    project = store.create_project("p", owner_id=owner.id, config=({"weight": 1.0}, "h2"))
    assert store.role_of(owner.id, project.id) == "owner"
    assert store.current_config(project.id).config_hash == "h2"
