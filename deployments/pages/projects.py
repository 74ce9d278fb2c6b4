"""The Projects page (list and create, with the Models Hub's predefined labels) and the
Models Hub page."""

import re
from html import escape
from typing import Any

from fastapi import APIRouter
from fastapi.responses import HTMLResponse, Response

from preannotate.configs.project import ProjectConfig
from preannotate.deployments.pages.render import PageError, attempt, error_page, page, see
from preannotate.deployments.pages.session import Form, PostedForm, SignedIn, first
from preannotate.deployments.routes import projects as api
from preannotate.deployments.routes.context import Ctx, caller_roles

router = APIRouter()

STARTER_CONFIG = """<View>
  <Labels name="label" toName="text">
  </Labels>
  <Text name="text" value="$text"/>
</View>"""


def with_labels(xml: str, model: str, labels: list[str]) -> str:
    """The labeling config with `<Label value=... model=.../>` added for each label not in
    it yet, inside its first `<Labels>` (a new one when it has none)."""
    present = set(re.findall(r'<Label\s[^>]*value="([^"]*)"', xml))
    lines = "".join(
        f'    <Label value="{escape(label)}" model="{escape(model)}"/>\n'
        for label in labels
        if escape(label) not in present
    )
    if "</Labels>" in xml:
        return xml.replace("</Labels>", lines + "  </Labels>", 1)
    block = f'  <Labels name="label" toName="text">\n{lines}  </Labels>\n'
    return xml.replace("</View>", block + "</View>", 1) if "</View>" in xml else xml + block


def _projects_page(ctx: Ctx, who: SignedIn, form: dict[str, Any], problems: list[str]) -> Any:
    roles = caller_roles(ctx, who.user)
    return page(
        "projects.html",
        who,
        422 if problems else 200,
        projects=api.list_projects(ctx, who.user),
        roles=roles,
        models=api.models(ctx, who.user),
        form=form,
        problems=problems,
    )


@router.get("/projects", response_class=HTMLResponse)
def projects_page(ctx: Ctx, who: SignedIn) -> Response:
    return _projects_page(ctx, who, {"name": "", "labeling_config": STARTER_CONFIG}, [])


def _new_config(form: Form) -> ProjectConfig:
    cpus = first(form, "num_cpus").strip()
    resources = {"num_cpus": cpus} if cpus else {}
    return ProjectConfig.model_validate(
        {
            "name": first(form, "name").strip(),
            "labeling_config": first(form, "labeling_config"),
            "resources": resources,
        }
    )


@router.post("/projects", response_class=HTMLResponse)
def create_project(ctx: Ctx, who: SignedIn, form: PostedForm) -> Response:
    """Create the project (the caller is its Owner), or add a hub model's labels to the
    configuration being written; a refused configuration is shown with every problem."""
    values = {
        "name": first(form, "name"),
        "labeling_config": first(form, "labeling_config"),
        "num_cpus": first(form, "num_cpus"),
    }
    model = first(form, "add_labels")
    if model:
        labels = form.get(f"labels:{model}", [])
        values["labeling_config"] = with_labels(values["labeling_config"], model, labels)
        return _projects_page(ctx, who, values, [])
    try:
        created = attempt(lambda: api.create_project(ctx, who.user, _new_config(form)))
    except PageError as error:
        return _projects_page(ctx, who, values, error.problems)
    return see(f"/ui/projects/{created['id']}/tasks")


@router.get("/models", response_class=HTMLResponse)
def models_page(ctx: Ctx, who: SignedIn) -> Response:
    """The Models Hub: each model with its versions and held-out metrics."""
    try:
        models = attempt(lambda: api.models(ctx, who.user))
    except PageError as error:
        return error_page(who, error)
    return page("models.html", who, models=models)
