"""The web pages in a real browser: Debian's Chromium driven by Playwright, against the
session's real two-node Ray cluster, router, scheduler and spaCy model.

One browser serves the whole module. Each page visited is saved as a PNG: into the folder
named by PREANNOTATE_SCREENSHOTS (the README's come from `docs/screenshots`), else into the
test's temporary folder.
"""

import json
import os
import re
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from preannotate.deployments.pages.session import csrf_for
from tests.conftest import EXAMPLES, RayCluster, labels_xml

playwright_api = pytest.importorskip("playwright.sync_api")
expect = playwright_api.expect
Page = playwright_api.Page

CHROMIUM = next((p for p in map(shutil.which, ("chromium", "chromium-headless-shell")) if p), None)
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed")
WAIT_MS = 120_000
"""Deploying loads the spaCy model in a new replica: allow for a slow, shared machine."""
expect.set_options(timeout=30_000)


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    with playwright_api.sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM)
        yield launched
        launched.close()


@pytest.fixture(scope="module")
def shots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = os.environ.get("PREANNOTATE_SCREENSHOTS")
    path = Path(folder) if folder else tmp_path_factory.mktemp("screenshots")
    path.mkdir(parents=True, exist_ok=True)
    return path


def signed_in(browser: object, url: str, token: str) -> Page:
    """A fresh browser context (its own cookies) signed in through the sign-in page."""
    context = browser.new_context(base_url=url, viewport={"width": 1366, "height": 860})  # type: ignore[attr-defined]
    page = context.new_page()
    page.set_default_timeout(WAIT_MS)
    page.goto("/ui/")
    expect(page).to_have_url(re.compile(r"/ui/signin"))
    page.get_by_label("API token").fill(token)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("heading", name="Projects", exact=True)).to_be_visible()
    return page


def shot(page: Page, shots: Path, name: str) -> None:
    page.screenshot(path=str(shots / f"{name}.png"), full_page=True)


def all_nodes(page: Page, resource: str) -> str:
    """The "free / total" text of a resource summed over the nodes, on the Clusters page."""
    cell = page.locator(f'td[data-node="all nodes"][data-resource="{resource}"]')
    return cell.inner_text()


def test_sign_in_keeps_the_token_in_an_httponly_strict_cookie(
    ray_cluster: RayCluster, browser: object, shots: Path
) -> None:
    context = browser.new_context(base_url=ray_cluster.url)  # type: ignore[attr-defined]
    page = context.new_page()
    page.goto("/ui/settings/clusters")
    shot(page, shots, "signin")
    page.get_by_label("API token").fill("not-a-token")
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("alert")).to_have_text("That API token is not valid.")
    page.get_by_label("API token").fill(ray_cluster.admin_token)
    page.get_by_role("button", name="Sign in").click()
    expect(page).to_have_url(re.compile(r"/ui/settings/clusters$"))
    [cookie] = context.cookies()
    assert (cookie["httpOnly"], cookie["sameSite"], cookie["value"]) == (
        True,
        "Strict",
        ray_cluster.admin_token,
    )
    assert page.evaluate("document.cookie") == ""
    context.close()


def test_a_sign_in_form_posted_from_another_site_signs_nobody_in(
    ray_cluster: RayCluster,
) -> None:
    """Login CSRF: another site's form would sign the visitor into its sender's account.
    It cannot carry the sign-in page's SameSite=Strict cookie, so it is refused; the
    site's own form, with the cookie and the same token, signs in."""
    token = ray_cluster.admin_token
    with httpx.Client(base_url=ray_cluster.url, timeout=60) as forged:
        refused = forged.post("/ui/signin", data={"token": token, "csrf": "guessed"})
        assert refused.status_code == 403
        assert "did not come from this site" in refused.text
        assert "preannotate_session" not in forged.cookies
    with httpx.Client(base_url=ray_cluster.url, timeout=60) as browser:
        form = browser.get("/ui/signin")
        csrf = re.search(r'name="csrf" value="([^"]+)"', form.text)
        assert csrf and browser.cookies["preannotate_signin"] == csrf.group(1)
        mismatched = browser.post("/ui/signin", data={"token": token, "csrf": "guessed"})
        assert mismatched.status_code == 403
        assert "preannotate_session" not in browser.cookies
        signed = browser.post("/ui/signin", data={"token": token, "csrf": csrf.group(1)})
        assert signed.status_code == 303
        assert browser.cookies["preannotate_session"] == token


@pytest.mark.parametrize("posted", ["\u00b2", "9" * 5000, "", "12a"])
def test_a_form_id_that_is_no_number_is_a_400_that_says_what_to_choose(
    ray_cluster: RayCluster, api: httpx.Client, posted: str
) -> None:
    """`str.isdigit` takes "²", which `int` refuses, and `int` refuses 5,000 digits: such a
    posted id is treated as no choice, never a 500."""
    xml = labels_xml('value="PERSON" model="ner_general_en_sm"')
    body = {"name": f"ids-{uuid.uuid4().hex[:8]}", "labeling_config": xml}
    project = api.post("/projects", json=body).json()["id"]
    task = api.post(f"/projects/{project}/tasks?format=jsonl", content=b'{"text": "a"}\n')
    token = ray_cluster.admin_token
    cookies = {"preannotate_session": token}
    with httpx.Client(base_url=ray_cluster.url, cookies=cookies, timeout=60) as client:
        csrf = csrf_for(token)
        job = client.post(
            f"/ui/projects/{project}/preannotate", data={"task": posted, "csrf": csrf}
        )
        completion = client.post(
            f"/ui/tasks/{task.json()['first_id']}/completions",
            data={"from_prediction": posted, "csrf": csrf},
        )
    assert job.status_code == 400 and "select some tasks, or all" in job.text
    assert completion.status_code == 400 and "choose a prediction to copy" in completion.text
    assert api.get("/jobs", params={"project_id": project}).json() == []
    assert api.get(f"/tasks/{task.json()['first_id']}/completions").json() == []


def test_pages_show_a_task_by_the_field_its_project_annotates(
    ray_cluster: RayCluster, api: httpx.Client
) -> None:
    """A project whose `<Text>` reads `$review` imports tasks with a review and no text;
    its Tasks and Task pages show the review, not the task's JSON."""
    xml = (
        '<View><Labels name="label" toName="review"><Label value="PERSON" '
        'model="ner_general_en_sm"/></Labels><Text name="review" value="$review"/></View>'
    )
    body = {"name": f"reviews-{uuid.uuid4().hex[:8]}", "labeling_config": xml}
    project = api.post("/projects", json=body).json()["id"]
    review = "Ada Lovelace wrote the first program & more."
    task = json.dumps({"review": review, "stars": 5}).encode()
    imported = api.post(f"/projects/{project}/tasks?format=jsonl", content=task)
    assert imported.status_code == 201, imported.text
    cookies = {"preannotate_session": ray_cluster.admin_token}
    with httpx.Client(base_url=ray_cluster.url, cookies=cookies, timeout=60) as client:
        listing = client.get(f"/ui/projects/{project}/tasks").text
        shown = client.get(f"/ui/tasks/{imported.json()['first_id']}").text
    escaped = review.replace("&", "&amp;")
    assert f'<td class="text">{escaped}</td>' in listing
    assert "CSV with a <code>review</code> column" in listing
    assert f'<blockquote class="document">{escaped}</blockquote>' in shown


def test_a_post_without_the_csrf_token_changes_nothing(ray_cluster: RayCluster) -> None:
    """A form posted from elsewhere with the session cookie but not its CSRF token."""
    name = f"csrf-{uuid.uuid4().hex[:8]}"
    cookies = {"preannotate_session": ray_cluster.admin_token}
    with httpx.Client(base_url=ray_cluster.url, cookies=cookies, timeout=60) as client:
        refused = client.post(
            "/ui/projects", data={"name": name, "labeling_config": "<View/>", "csrf": "forged"}
        )
        listed = client.get("/ui/projects")
    assert refused.status_code == 403
    assert "CSRF" in refused.json()["detail"]
    assert listed.status_code == 200 and name not in listed.text


def test_manager_pre_annotates_from_the_dialog_and_frees_the_server(
    ray_cluster: RayCluster, browser: object, shots: Path
) -> None:
    """Create a project, import tasks, deploy from the Pre-Annotate dialog, pre-annotate
    two selected tasks, copy a prediction into a completion, then delete the server on the
    Clusters page and see its CPUs come back; an Annotator meanwhile sees none of the
    manager actions and is refused them."""
    page = signed_in(browser, ray_cluster.url, ray_cluster.admin_token)
    page.goto("/ui/settings/clusters")
    cpus_before = all_nodes(page, "CPUs")

    # Create a project; a broken configuration is refused inline first.
    page.goto("/ui/projects")
    name = f"news-{uuid.uuid4().hex[:6]}"
    page.get_by_label("Name", exact=True).fill(name)
    page.get_by_label("Labeling configuration (XML)").fill(
        '<View><Labels name="label" toName="text"><Label value="X" model="no_such_model"/>'
        '</Labels><Text name="text" value="$text"/></View>'
    )
    page.get_by_role("button", name="Create project").click()
    expect(page.get_by_role("alert")).to_contain_text("no_such_model")
    xml = (EXAMPLES / "news" / "config.xml").read_text()
    page.get_by_label("Labeling configuration (XML)").fill(xml)
    page.get_by_label("CPUs per replica").fill("0.5")
    shot(page, shots, "projects")
    page.get_by_role("button", name="Create project").click()
    expect(page.get_by_role("heading", name=re.compile(name))).to_be_visible()

    # Import three tasks (pasted JSONL).
    page.get_by_text("Import tasks").click()
    tasks = (EXAMPLES / "news" / "tasks.jsonl").read_text().splitlines()[:3]
    page.get_by_label(re.compile("^Tasks: JSONL")).fill("\n".join(tasks))
    page.get_by_role("button", name="Import").click()
    expect(page.get_by_role("status")).to_have_text("Imported 3 tasks.")
    rows = page.locator("table.tasks tbody tr")
    expect(rows).to_have_count(3)
    first_id, second_id = (rows.nth(i).locator("input").get_attribute("value") for i in (0, 1))

    # The dialog: no server yet, so deploy one, and wait until it is ready.
    page.get_by_label(f"Select task {first_id}").check()
    page.get_by_label(f"Select task {second_id}").check()
    page.get_by_role("button", name="Pre-Annotate…").click()
    dialog = page.get_by_role("dialog", name="Pre-Annotate")
    expect(dialog).to_contain_text("No server has this configuration yet.")
    dialog.get_by_role("button", name="Deploy a new server").click()
    expect(dialog.locator(".status")).to_have_text("ready", timeout=WAIT_MS)
    expect(dialog).to_contain_text("ner_general_en_sm v3.8.0: CARDINAL")
    shot(page, shots, "preannotate-dialog")
    server_id = dialog.get_by_role("radio").get_attribute("value")

    # Pre-annotate the two selected tasks and watch the job finish.
    dialog.get_by_role("button", name="Start pre-annotation").click()
    expect(dialog.locator("[data-job-state]")).to_have_text("succeeded", timeout=WAIT_MS)
    expect(dialog.locator(".counts")).to_contain_text("2 done, 0 failed of 2")
    shot(page, shots, "job-progress")
    dialog.get_by_role("link", name="Reload the tasks").click()
    counts = page.locator("td[data-predictions]")
    expect(counts).to_have_text(["1", "1", "0"])
    shot(page, shots, "tasks")

    # An Annotator of the project sees no manager actions, and is refused them anyway.
    project_id = int(re.search(r"/projects/(\d+)/", page.url).group(1))  # type: ignore[union-attr]
    annotator = _member(ray_cluster, project_id, "annotator")
    other = signed_in(browser, ray_cluster.url, annotator)
    other.goto(f"/ui/projects/{project_id}/tasks")
    expect(other.locator("table.tasks tbody tr")).to_have_count(3)
    for action in ("Pre-Annotate…", "Import", "Deploy a new server"):
        expect(other.get_by_role("button", name=action)).to_have_count(0)
    other.goto("/ui/settings/clusters")
    expect(other.locator(f'tr[data-server="{server_id}"]')).to_be_visible()
    expect(other.get_by_role("button", name=re.compile("^Delete"))).to_have_count(0)
    shot(other, shots, "clusters-annotator")
    csrf = {"X-CSRF-Token": _csrf(other)}
    deploy = other.request.post(f"/ui/projects/{project_id}/deploy", headers=csrf)
    delete = other.request.post(f"/ui/servers/{server_id}/delete", headers=csrf)
    assert (deploy.status, delete.status) == (403, 403)
    assert "is annotator" in deploy.text()

    # Open a task, read its prediction and make it a completion.
    page.get_by_role("link", name=f"#{first_id}").click()
    expect(page.locator(".prediction")).to_have_count(1)
    expect(page.locator(".prediction")).to_contain_text("Apple Inc.")
    page.get_by_role("button", name="Create completion from version 1").click()
    completion = page.locator(".completion")
    expect(completion).to_contain_text("copied from prediction")
    expect(completion).to_contain_text("Apple Inc.")
    shot(page, shots, "task")
    page.goto("/ui/jobs")
    expect(page.locator("td.state").first).to_have_text("succeeded")
    shot(page, shots, "jobs")
    page.goto("/ui/models")
    expect(page.get_by_role("rowheader", name=re.compile("ner_general_en_sm"))).to_be_visible()
    shot(page, shots, "models")

    # Delete the server on the Clusters page: its CPUs are free again.
    page.goto("/ui/settings/clusters")
    expect(page.locator(f'tr[data-server="{server_id}"]')).to_contain_text("ready")
    assert all_nodes(page, "CPUs") != cpus_before
    shot(page, shots, "clusters")
    page.once("dialog", lambda confirm: confirm.accept())
    page.get_by_role("button", name=f"Delete {server_id}").click()
    deleted = page.get_by_role("status")
    expect(deleted).to_contain_text(f"Deleted {server_id}", timeout=WAIT_MS)
    expect(page.locator(f'tr[data-server="{server_id}"]')).to_have_count(0)
    expect(page.locator('td[data-node="all nodes"][data-resource="CPUs"]')).to_have_text(
        cpus_before, timeout=30_000
    )
    shot(page, shots, "clusters-after-delete")


def _member(ray_cluster: RayCluster, project_id: int, role: str) -> str:
    """A new user with `role` in the project; returns their API token."""
    headers = {"Authorization": f"Bearer {ray_cluster.admin_token}"}
    with httpx.Client(base_url=ray_cluster.url, headers=headers, timeout=60) as client:
        user = client.post("/users", json={"name": f"{role}-{uuid.uuid4().hex[:6]}"})
        user.raise_for_status()
        member = {"user_id": user.json()["id"], "role": role}
        client.put(f"/projects/{project_id}/members", json=member).raise_for_status()
    return user.json()["token"]


def _csrf(page: Page) -> str:
    """The CSRF token the signed-in page sends with its htmx requests."""
    return page.evaluate("JSON.parse(document.body.getAttribute('hx-headers'))['X-CSRF-Token']")
