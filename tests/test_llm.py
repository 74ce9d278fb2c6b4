"""External LLM prompts against a real HTTP server on 127.0.0.1 that speaks the
chat-completions protocol (OpenAI's `/v1/chat/completions` and Azure's
`/openai/deployments/{d}/chat/completions?api-version=`): the real services cannot be
reached from here. Each test says what the server answers: entities, 429s, slow answers,
malformed JSON.

The provider routes and the CLI run against the real router app served by uvicorn on
127.0.0.1 (no Ray needed); the bulk job runs on the session's real Ray cluster.
"""

import json
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from cryptography.fernet import Fernet
from typer.testing import CliRunner

from preannotate.annotators.llm import ExternalPromptRunner, ProviderAccess, ProviderClient
from preannotate.annotators.spans import Source
from preannotate.client.cli import app
from preannotate.cluster.local_head import free_port
from preannotate.configs.prompts import ExternalPrompt
from preannotate.deployments import router
from preannotate.deployments.routes.context import Context, install
from preannotate.hub.catalog import Hub
from preannotate.store import InvalidInput, Store
from preannotate.store.secrets import SecretKeyError
from tests.conftest import RayCluster, labels_xml
from tests.test_jobs import wait_job

KEY = "sk-test-" + "k3y" * 10
"""The provider key every test registers: it must never come back or reach a log."""

Answer = Callable[[dict[str, Any], str], tuple[int, Any, float]]
"""(request body, path) -> (status, JSON body or raw text, seconds to wait first)."""


@dataclass
class LocalLLM:
    """A real HTTP server that speaks chat completions; `answer` decides each reply."""

    answer: Answer
    requests: list[tuple[str, dict[str, Any], dict[str, str]]] = field(default_factory=list)
    url: str = ""


def completion(content: str, prompt_tokens: int = 30, completion_tokens: int = 7) -> dict:
    return {
        "id": "chatcmpl-local",
        "object": "chat.completion",
        "created": 0,
        "model": "local",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": content},
                "finish_reason": "stop",
            }
        ],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        },
    }


def entities(*chunks: tuple[str, str] | tuple[str, str, list[int]]) -> dict:
    return completion(
        json.dumps(
            {
                "entities": [
                    {"text": c[0], "label": c[1], "occurrences": c[2] if len(c) > 2 else None}
                    for c in chunks
                ]
            }
        )
    )


def document(body: dict[str, Any]) -> str:
    return next(m["content"] for m in body["messages"] if m["role"] == "user")


@pytest.fixture(scope="module")
def llm() -> Iterator[LocalLLM]:
    server = LocalLLM(answer=lambda body, path: (200, completion("{}"), 0.0))

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            server.requests.append(
                (self.path, body, {k.lower(): v for k, v in self.headers.items()})
            )
            status, reply, delay = server.answer(body, self.path)
            time.sleep(delay)
            data = reply.encode() if isinstance(reply, str) else json.dumps(reply).encode()
            try:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                if status == 429:
                    self.send_header("Retry-After", "0.05")
                self.end_headers()
                self.wfile.write(data)
            except OSError:  # the client gave up waiting (a timeout test)
                pass

        def log_message(self, *_: Any) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    server.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield server
    httpd.shutdown()


@pytest.fixture
def fresh(llm: LocalLLM) -> LocalLLM:
    llm.requests.clear()
    return llm


def prompt(output: str = "entity", labels: tuple[str, ...] = ("DRUG",), **fields) -> ExternalPrompt:
    return ExternalPrompt(
        type="external",
        name=fields.pop("name", "drug_llm"),
        version=fields.pop("version", 2),
        provider="local",
        model="gpt-local",
        text="Find the medications.",
        output=output,
        labels=list(labels),
        **fields,
    )


def client_for(llm: LocalLLM, kind: str = "openai", **options: Any) -> ProviderClient:
    base = f"{llm.url}/v1" if kind == "openai" else llm.url
    retries = options.pop("max_retries", 3)
    access = ProviderAccess(
        "local", kind, base, KEY, "2024-10-21" if kind != "openai" else None, **options
    )
    return ProviderClient(access, max_retries=retries)


TEXT = "Gave aspirin 81 mg; aspirins were stopped, then aspirin again with heparin."


def test_entities_are_whole_chunks_at_exact_offsets_with_provenance(fresh: LocalLLM) -> None:
    fresh.answer = lambda body, path: (
        200,
        entities(("aspirin", "DRUG"), ("heparin", "DRUG", [1]), ("warfarin", "DRUG")),
        0.0,
    )
    [result] = ExternalPromptRunner(prompt(), client_for(fresh)).run([TEXT])
    assert result.error is None
    found = [(s.start, s.end, TEXT[s.start : s.end], s.label) for s in result.spans]
    first, second = TEXT.index("aspirin "), TEXT.index("aspirin again")
    heparin = TEXT.index("heparin")
    assert found == [  # never inside "aspirins"; "warfarin" is not in the text
        (first, first + 7, "aspirin", "DRUG"),
        (second, second + 7, "aspirin", "DRUG"),
        (heparin, heparin + 7, "heparin", "DRUG"),
    ]
    assert {s.source for s in result.spans} == {Source("prompt", "drug_llm", "2")}
    assert result.usage.as_json() == {
        "llm_requests": 1,
        "prompt_tokens": 30,
        "completion_tokens": 7,
    }
    path, body, headers = fresh.requests[0]
    assert path == "/v1/chat/completions" and headers["authorization"] == f"Bearer {KEY}"
    assert body["model"] == "gpt-local" and body["response_format"]["type"] == "json_schema"
    assert document(body) == TEXT


def test_occurrences_pick_the_ones_the_answer_points_to(fresh: LocalLLM) -> None:
    fresh.answer = lambda body, path: (200, entities(("aspirin", "DRUG", [2, 9])), 0.0)
    [result] = ExternalPromptRunner(prompt(), client_for(fresh)).run([TEXT])
    second = TEXT.index("aspirin again")
    assert [(s.start, s.end) for s in result.spans] == [(second, second + 7)]


def test_a_429_is_retried_with_backoff_and_counted(fresh: LocalLLM) -> None:
    calls = iter([429, 429, 200])
    fresh.answer = lambda body, path: (
        (429, {"error": {"message": "slow down"}}, 0.0)
        if next(calls) == 429
        else (200, entities(("heparin", "DRUG")), 0.0)
    )
    [result] = ExternalPromptRunner(prompt(), client_for(fresh)).run([TEXT])
    assert result.error is None and len(result.spans) == 1
    assert len(fresh.requests) == 3 and result.usage.llm_requests == 3


def test_timeouts_and_malformed_answers_fail_only_their_document(fresh: LocalLLM) -> None:
    def answer(body: dict[str, Any], path: str) -> tuple[int, Any, float]:
        text = document(body)
        if text == "slow":
            return 200, entities(), 2.0
        if text == "garbled":
            return 200, completion('{"entities": [{"text": "aspirin"'), 0.0
        if text == "wrong label":
            return 200, entities(("aspirin", "DOSE")), 0.0
        return 200, entities(("aspirin", "DRUG")), 0.0

    fresh.answer = answer
    client = client_for(fresh, timeout_s=0.3, max_retries=1)
    runner = ExternalPromptRunner(prompt(), client)
    slow, garbled, wrong, fine = runner.run(["slow", "garbled", "wrong label", "aspirin"])
    assert "timed out" in slow.error and slow.usage.llm_requests == 2  # one retry
    assert "drug_llm' v2: the answer is not valid" in garbled.error
    assert "label 'DOSE' is not one of DRUG" in wrong.error
    assert fine.error is None and [(s.start, s.end) for s in fine.spans] == [(0, 7)]
    assert all(KEY not in (r.error or "") for r in (slow, garbled, wrong))


def test_azure_deployment_path_and_classification(fresh: LocalLLM) -> None:
    fresh.answer = lambda body, path: (200, completion('{"label": "cardiology"}'), 0.0)
    runner = ExternalPromptRunner(
        prompt("classification", ("cardiology", "oncology"), name="topic_llm"),
        client_for(fresh, kind="azure-openai"),
    )
    [result] = runner.run(["Chest pain after exercise."])
    assert result.choice == "cardiology" and result.error is None
    path, body, headers = fresh.requests[0]
    assert path == "/openai/deployments/gpt-local/chat/completions?api-version=2024-10-21"
    assert headers["api-key"] == KEY
    schema = body["response_format"]["json_schema"]["schema"]
    assert schema["properties"]["label"]["enum"] == ["cardiology", "oncology"]


def test_a_documents_prompts_run_per_page_and_per_document_and_count_their_usage(
    fresh: LocalLLM, tmp_path: Path
) -> None:
    """On a two-page PDF an entity prompt on `<RectangleLabels>` asks once per page and a
    classification prompt on the `<Image>` once for the whole document; the task's usage
    adds up all three calls (a job's token budget counts them)."""
    from preannotate.annotators.visual_pipeline import VisualPipeline
    from preannotate.configs.project import parse_project_config
    from preannotate.hub.validation import validate_config
    from tests.test_documents import invoice

    def answer(body: dict[str, Any], path: str) -> tuple[int, Any, float]:
        if body["response_format"]["json_schema"]["name"] == "classification":
            return 200, completion('{"label": "invoice"}'), 0.0
        return 200, entities(("Acme Widgets Limited", "COMPANY")), 0.0

    fresh.answer = answer
    (tmp_path / "invoice.pdf").write_bytes(invoice().tobytes())
    common = {"type": "external", "provider": "local", "model": "gpt-local", "text": "Read."}
    project = {
        "name": "llm-visual",
        "labeling_config": (
            '<View><Image name="image" value="$image"/>'
            '<RectangleLabels name="label" toName="image">'
            '<Label value="COMPANY" prompt="companies"/></RectangleLabels>'
            '<Choices name="kind" toName="image" prompt="kind"><Choice value="invoice"/>'
            '<Choice value="letter"/></Choices></View>'
        ),
        "prompts": [
            common | {"name": "companies", "output": "entity", "labels": ["COMPANY"]},
            common | {"name": "kind", "output": "classification", "labels": ["invoice", "letter"]},
        ],
    }
    pipeline = VisualPipeline(validate_config(parse_project_config(project)), root=tmp_path)
    pipeline.connect_providers(
        {"local": ProviderAccess("local", "openai", f"{fresh.url}/v1", KEY, None)}
    )
    [prediction] = pipeline.annotate([{"data": {"image": "local://invoice.pdf"}}])

    assert prediction.error is None
    [company] = [r for r in prediction.result if r["type"] == "rectanglelabels"]
    assert (company["meta"]["text"], company["item_index"]) == (["Acme Widgets Limited"], 0)
    [kind] = [r for r in prediction.result if r["type"] == "choices"]
    assert kind["value"]["choices"] == ["invoice"] and kind["provenance"]["name"] == "kind"
    assert len(fresh.requests) == 3  # two pages, one document
    assert prediction.usage == {"llm_requests": 3, "prompt_tokens": 90, "completion_tokens": 21}


# -- providers over HTTP and on the command line ---------------------------------------------


@dataclass
class Api:
    url: str
    admin: str
    users: list[str]
    store: Store


@pytest.fixture(scope="module")
def provider_api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    """The router's app served by uvicorn on 127.0.0.1, over its own SQLite file."""
    home = tmp_path_factory.mktemp("providers")
    store = Store(f"sqlite:///{home / 'store.sqlite'}")
    install(Context(store, Hub(home / "hub")))
    admin = store.issue_token(store.create_user("root", is_admin=True).id)
    users = [store.issue_token(store.create_user(f"user{i}").id) for i in (1, 2)]
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(router.api, host="127.0.0.1", port=port, log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    yield Api(f"http://127.0.0.1:{port}", admin, users, store)
    server.should_exit = True
    thread.join(5)


def as_user(api: Api, token: str) -> httpx.Client:
    return httpx.Client(base_url=api.url, headers={"Authorization": f"Bearer {token}"}, timeout=30)


def cli(api: Api, *args: str, stdin: str | None = None, env: dict | None = None):
    return CliRunner().invoke(
        app, [*args, "--url", api.url, "--token", api.admin], input=stdin, env=env
    )


NEW = {"name": "local", "kind": "openai", "api_key": KEY}


def test_no_key_is_stored_without_the_operators_secret_key(
    provider_api: Api, llm: LocalLLM, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("PREANNOTATE_SECRET_KEY", raising=False)
    monkeypatch.delenv("PREANNOTATE_SECRET_KEY_FILE", raising=False)
    with as_user(provider_api, provider_api.admin) as http:
        refused = http.post("/providers", json=NEW | {"base_url": f"{llm.url}/v1"})
        assert refused.status_code == 409
        assert "PREANNOTATE_SECRET_KEY" in refused.json()["detail"]
        assert "PREANNOTATE_SECRET_KEY_FILE" in refused.json()["detail"]
        assert http.get("/providers").json() == []
    added = cli(
        provider_api,
        "providers",
        "add",
        "local",
        "--kind",
        "openai",
        "--base-url",
        llm.url,
        stdin=KEY + "\n",
    )
    assert added.exit_code == 2 and "error: no secret key" in added.stderr
    assert "PREANNOTATE_SECRET_KEY" in added.stderr and KEY not in added.output


def test_providers_keep_keys_sealed_and_answer_admins_only(
    provider_api: Api, fresh: LocalLLM, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    key_file = tmp_path / "secret.key"
    key_file.write_text(Fernet.generate_key().decode())
    monkeypatch.setenv("PREANNOTATE_SECRET_KEY_FILE", str(key_file))
    monkeypatch.delenv("PREANNOTATE_SECRET_KEY", raising=False)
    fresh.answer = lambda body, path: (200, completion("OK", 9, 1), 0.0)
    added = cli(
        provider_api,
        "providers",
        "add",
        "local",
        "--kind",
        "openai",
        "--base-url",
        f"{fresh.url}/v1",
        stdin=KEY + "\n",
    )
    assert added.exit_code == 0, added.output
    assert (
        cli(
            provider_api,
            "providers",
            "add",
            "local",
            "--kind",
            "openai",
            "--base-url",
            fresh.url,
            stdin="x\n",
        ).exit_code
        == 2
    )  # the name is taken
    listed = cli(provider_api, "providers", "list", "--json")
    assert json.loads(listed.stdout)[0]["name"] == "local" and KEY not in listed.stdout
    checked = cli(provider_api, "providers", "validate", "local", "--model", "gpt-local")
    assert checked.exit_code == 0 and "answered 'OK'" in checked.stdout
    assert fresh.requests[0][2]["authorization"] == f"Bearer {KEY}"
    database = Path(provider_api.store.url.removeprefix("sqlite:///")).read_bytes()
    assert KEY.encode() not in database  # sealed at rest

    with as_user(provider_api, provider_api.admin) as http:
        answers = [http.get("/providers"), http.post("/providers/local/validate", json={})]
        assert all(KEY not in a.text for a in answers)
        fresh.answer = lambda body, path: (401, {"error": {"message": f"bad key {KEY}"}}, 0.0)
        failed = http.post("/providers/local/validate", json={"model": "gpt-local"}).json()
        assert failed["ok"] is False and "HTTP 401" in failed["error"]
        assert KEY not in failed["error"] and "[key]" in failed["error"]
    for token in provider_api.users:
        with as_user(provider_api, token) as http:
            for method, path, body in [
                ("POST", "/providers", NEW | {"name": "mine", "base_url": fresh.url}),
                ("GET", "/providers", None),
                ("DELETE", "/providers/local", None),
                ("POST", "/providers/local/validate", {}),
            ]:
                answer = http.request(method, path, json=body)
                assert answer.status_code == 403, (method, path, answer.text)
                assert "only admins" in answer.json()["detail"]
    assert cli(provider_api, "providers", "delete", "local").exit_code == 0
    assert cli(provider_api, "providers", "validate", "local").exit_code == 2


def test_a_key_sealed_under_another_secret_key_is_refused_clearly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PREANNOTATE_SECRET_KEY", Fernet.generate_key().decode())
    store = Store(f"sqlite:///{tmp_path / 'store.sqlite'}")
    store.add_provider("azure", "azure-openai", "https://r.openai.azure.com", KEY, "2024-10-21")
    assert store.provider_key("azure") == KEY
    sealed = store.sealed_providers(["azure"])["azure"]
    assert KEY not in json.dumps(sealed) and sealed["api_version"] == "2024-10-21"
    monkeypatch.setenv("PREANNOTATE_SECRET_KEY", Fernet.generate_key().decode())
    with pytest.raises(SecretKeyError, match="stored under another one") as refused:
        store.provider_key("azure")
    assert KEY not in str(refused.value)
    monkeypatch.setenv("PREANNOTATE_SECRET_KEY", "not-a-key")
    with pytest.raises(SecretKeyError, match="is not a Fernet key"):
        store.add_provider("other", "openai", "https://api.openai.com/v1", KEY)
    with pytest.raises(InvalidInput, match="needs an api_version"):
        store.add_provider("other", "azure-openai", "https://r.openai.azure.com", KEY)


# -- a bulk job on the real cluster -------------------------------------------------------------


def llm_project(api: httpx.Client, provider: str, tasks: list[str]) -> int:
    """A project whose DRUG spans and topic come from external prompts on `provider`."""
    tag = uuid.uuid4().hex[:6]
    common = {"type": "external", "provider": provider, "model": "gpt-local", "text": "Read."}
    prompts = [
        common | {"name": f"drug_{tag}", "output": "entity", "labels": ["DRUG"]},
        common
        | {"name": f"topic_{tag}", "output": "classification", "labels": ["cardiology", "other"]},
    ]
    choices = (
        f'<Choices name="topic" toName="text" prompt="topic_{tag}">'
        '<Choice value="cardiology"/><Choice value="other"/></Choices>'
    )
    config = {
        "name": f"llm-{tag}",
        "labeling_config": labels_xml(f'value="DRUG" prompt="drug_{tag}"', extra=choices),
        "prompts": prompts,
        "resources": {"num_cpus": 0.25},
    }
    created = api.post("/projects", json=config)
    assert created.status_code == 201, created.text
    project = created.json()["id"]
    body = "\n".join(json.dumps({"data": {"text": t}}) for t in tasks).encode()
    assert api.post(f"/projects/{project}/tasks?format=jsonl", content=body).status_code == 201
    return project


def test_bulk_job_with_external_prompts(
    api: httpx.Client, ray_cluster: RayCluster, llm: LocalLLM
) -> None:
    limited: set[str] = set()

    def answer(body: dict[str, Any], path: str) -> tuple[int, Any, float]:
        text, kind = document(body), body["response_format"]["json_schema"]["name"]
        if "garbled" in text:
            return 200, completion("not json at all"), 0.0
        if "rate limited" in text and kind == "entity" and text not in limited:
            limited.add(text)
            return 429, {"error": {"message": "rate limited"}}, 0.0
        if kind == "classification":
            return 200, completion('{"label": "cardiology"}'), 0.0
        return 200, entities(("aspirin", "DRUG")), 0.3  # a slow answer, within the timeout

    llm.answer = answer
    name = f"local-{uuid.uuid4().hex[:6]}"
    unknown = llm_project(api, name, ["aspirin"])
    refused = api.post(f"/projects/{unknown}/deploy")
    assert refused.status_code == 409 and f"calls provider '{name}'" in refused.json()["detail"]

    new = {"name": name, "kind": "openai", "base_url": f"{llm.url}/v1", "api_key": KEY}
    provider = api.post("/providers", json=new)
    assert provider.status_code == 201 and KEY not in provider.text
    texts = [f"Day {i}: aspirin given for chest pain." for i in range(11)]
    project = llm_project(api, name, [*texts, "rate limited: aspirin", "garbled"])
    job = api.post(f"/projects/{project}/preannotate", json={"all": True}).json()
    job = wait_job(api, job["id"])
    assert (job["state"], job["done"], job["failed"]) == ("succeeded", 12, 1)
    assert "the answer is not valid" in job["errors"][0]["error"]
    # 12 tasks x 2 prompts, one 429 retried, the garbled task tried 3 times (1 prompt each)
    assert job["llm_requests"] == 12 * 2 + 1 + 3
    assert (job["prompt_tokens"], job["completion_tokens"]) == (27 * 30, 27 * 7)
    task = api.get(f"/projects/{project}/tasks", params={"limit": 1}).json()["tasks"][0]
    [prediction] = api.get(f"/tasks/{task['id']}/predictions").json()
    span, choice = prediction["result"]
    assert (span["value"]["start"], span["value"]["end"], span["value"]["text"]) == (
        7,
        14,
        "aspirin",
    )
    assert span["provenance"] == {
        "type": "prompt",
        "name": span["provenance"]["name"],
        "version": "1",
    }
    assert span["provenance"]["name"].startswith("drug_")
    assert choice["value"]["choices"] == ["cardiology"]
    assert choice["provenance"]["name"].startswith("topic_")

    ran = CliRunner().invoke(
        app,
        ["run", str(project), "--token-budget", "100", "--url", ray_cluster.url,
         "--token", ray_cluster.admin_token],
    )  # fmt: skip
    assert ran.exit_code == 1 and "token budget reached" in ran.stderr
    assert "external LLM: " in ran.stderr
    job = api.get("/jobs", params={"project_id": project}).json()[-1]
    assert job["state"] == "cancelled" and job["params"]["token_budget"] == 100
    assert 0 < job["done"] < 12
    counts = [t["predictions"] for t in api.get(f"/projects/{project}/tasks").json()["tasks"]]
    assert counts.count(2) == job["done"] and set(counts) <= {0, 1, 2}

    seen = [api.get("/providers").text, api.get(f"/jobs/{job['id']}").text]
    seen.append(api.get("/servers").text)
    assert all(KEY not in text for text in seen)
    import ray

    logs = Path(ray._private.worker._global_node.get_logs_dir_path())
    leaked = [p.name for p in logs.rglob("*") if p.is_file() and KEY.encode() in p.read_bytes()]
    assert leaked == []
