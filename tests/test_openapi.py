"""The API does what its OpenAPI document says: schemathesis generates requests for every
documented operation (valid and invalid ones) from the document the router serves at
`/openapi.json`, and sends them to the running cluster as an admin; the predict operation
also to a deployed server, whose own route answers it.

A response fails when it is a 5xx, has a status code, content type, header or body the
document does not declare for that operation, accepts a request the document forbids or
rejects one it allows, or answers without the API token that the document requires.
Examples and time per operation are bounded so the whole run takes well under two minutes.
"""

from collections.abc import Iterator

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, settings

from preannotate.deployments import router
from tests.conftest import RayCluster
from tests.test_serving import deploy, new_project, wait_ready

MAX_EXAMPLES = 12
DEADLINE_MS = 20_000
"""Per request: some valid requests reach a real deploy or a real import."""

EXCLUDED = {
    ("POST", "/users/{user_id}/tokens"): "rotating a token ends it: generated requests for "
    "user 1 would revoke the session's admin token, which every later test uses",
    ("DELETE", "/users/{user_id}"): "would delete the users the session's other tests created",
}
"""Operations not generated, each with why; their errors are tested in
tests/test_authorization.py."""


SEMANTIC_REFUSALS = ["400", "422"]
"""Also right for a request the document allows: what a JSON Schema cannot say is checked
by the API, which answers with a message (a labeling config that is not well-formed XML,
"give exactly one of 'from_prediction' and 'result'", a prediction of another task)."""


def refusing_semantics(schema: schemathesis.BaseSchema) -> schemathesis.BaseSchema:
    accepted = schema.config.checks.positive_data_acceptance
    accepted.expected_statuses = [*accepted.expected_statuses, *SEMANTIC_REFUSALS]
    return schema


schemathesis.serializer.alias(["application/jsonl", "application/x-ndjson"], "text/plain")
"""The task import documents its JSON Lines bodies as text: they are sent as generated, in
UTF-8, as for `text/csv`, instead of being skipped."""

schema = refusing_semantics(schemathesis.openapi.from_dict(router.api.openapi())).exclude(
    lambda ctx: (ctx.operation.method.upper(), ctx.operation.path) in EXCLUDED
)
"""The document the router serves, built here so each operation is a test of its own."""


@schema.parametrize()
@pytest.mark.usefixtures("api")  # deletes the servers that generated deploys started
@settings(
    max_examples=MAX_EXAMPLES,
    deadline=DEADLINE_MS,
    suppress_health_check=list(HealthCheck),
    derandomize=True,
)
def test_every_operation_answers_as_documented(
    case: schemathesis.Case, ray_cluster: RayCluster
) -> None:
    case.call_and_validate(
        base_url=ray_cluster.url,
        headers={"Authorization": f"Bearer {ray_cluster.admin_token}"},
        timeout=DEADLINE_MS / 1000,
    )


@pytest.fixture(scope="module")
def deployed_server(ray_cluster: RayCluster) -> Iterator[str]:
    """A ready server, so its own predict route (not the router's) answers."""
    headers = {"Authorization": f"Bearer {ray_cluster.admin_token}"}
    with httpx.Client(base_url=ray_cluster.url, headers=headers, timeout=120) as client:
        server = deploy(client, new_project(client)).json()["id"]
        wait_ready(client, server)
        yield server
        client.delete(f"/servers/{server}")


@schema.include(path="/servers/{server_id}/predict").parametrize()
@settings(
    max_examples=MAX_EXAMPLES * 2,
    deadline=DEADLINE_MS,
    suppress_health_check=list(HealthCheck),
    derandomize=True,
)
def test_a_servers_own_predict_route_answers_as_documented(
    case: schemathesis.Case, ray_cluster: RayCluster, deployed_server: str
) -> None:
    """The generated requests, sent to a deployed server: Serve gives them to the server's
    replica (`server_ingress.py`), which must answer as the router's document says."""
    case.path_parameters = {"server_id": deployed_server}
    case.call_and_validate(
        base_url=ray_cluster.url,
        headers={"Authorization": f"Bearer {ray_cluster.admin_token}"},
        timeout=DEADLINE_MS / 1000,
    )


def test_the_router_serves_this_document(api: httpx.Client) -> None:
    assert api.get("/openapi.json").json() == router.api.openapi()


def test_error_bodies_are_documented_as_sent(api: httpx.Client) -> None:
    """A 422 is `{"detail": "<message>", "problems": [...]}`, never FastAPI's array."""
    document = api.get("/openapi.json").json()
    assert "HTTPValidationError" not in str(document)
    invalid = document["paths"]["/projects/{project_id}"]["get"]["responses"]["422"]
    assert invalid["content"]["application/json"]["schema"]["$ref"].endswith("/ProblemsBody")
    answer = api.get("/projects/0")
    assert answer.status_code == 422
    assert isinstance(answer.json()["detail"], str)
    assert answer.json()["problems"] == [answer.json()["detail"]]


def test_method_not_allowed_names_every_method_of_the_path(api: httpx.Client) -> None:
    answer = api.patch("/projects")
    assert answer.status_code == 405
    assert answer.headers["Allow"] == "GET, POST"
    assert answer.json() == {"detail": "PATCH is not allowed on /projects; use GET, POST"}
