"""External LLM providers (OpenAI, Azure OpenAI) that external prompts call. Admins only.

A provider's API key goes in once, with `POST /providers`, and is sealed under the
operator's secret key before it is stored (`store/secrets.py`); no answer ever holds it,
and without the secret key nothing is stored (409 naming the variables to set).
`validate` opens the key in this router replica, calls the provider once with a tiny chat
completion and reports its answer or its error.
"""

from typing import Any, Literal

from fastapi import APIRouter, HTTPException
from pydantic import BaseModel, ConfigDict, Field, SecretStr

from preannotate.annotators.llm import ProviderAccess, validate_provider
from preannotate.deployments.routes import resources
from preannotate.deployments.routes.context import Ctx, CurrentUser, errors
from preannotate.deployments.routes.json_body import JsonBodyRoute
from preannotate.store.models import User
from preannotate.store.providers import MAX_CONCURRENCY, MAX_KEY_CHARS, MAX_TIMEOUT_S

router = APIRouter(tags=["providers"], route_class=JsonBodyRoute)
OPENAI_CHECK_MODEL = "gpt-4o-mini"
"""What `validate` asks an OpenAI provider for when no model is given."""
VALIDATE_TIMEOUT_S = 15.0


class NewProvider(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=100)
    kind: Literal["openai", "azure-openai"]
    base_url: str = Field(
        min_length=1,
        max_length=2000,
        description="e.g. https://api.openai.com/v1, or https://<resource>.openai.azure.com",
    )
    api_version: str | None = Field(None, max_length=50, description="Azure's api-version")
    api_key: SecretStr = Field(
        min_length=1, max_length=MAX_KEY_CHARS, description="stored encrypted, never returned"
    )
    timeout_s: float | None = Field(
        None, gt=0, le=MAX_TIMEOUT_S, description="seconds per request; default 60"
    )
    concurrency: int | None = Field(
        None, ge=1, le=MAX_CONCURRENCY, description="requests in flight per replica; default 4"
    )


class ValidateRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: str | None = Field(
        None,
        min_length=1,
        max_length=200,
        description=f"the model (Azure: the deployment) to call; OpenAI: {OPENAI_CHECK_MODEL}",
    )


def require_admin(user: User) -> None:
    if not user.is_admin:
        raise HTTPException(
            403, f"user '{user.name}' is not an admin; only admins manage LLM providers"
        )


@router.post(
    "/providers",
    status_code=201,
    response_model=resources.Provider,
    responses=errors(400, 401, 403, 409, 422),
)
def add_provider(ctx: Ctx, user: CurrentUser, new: NewProvider) -> dict[str, Any]:
    """Register a provider; its key is encrypted with the operator's secret key
    (`PREANNOTATE_SECRET_KEY` or `PREANNOTATE_SECRET_KEY_FILE`; 409 without one)."""
    require_admin(user)
    provider = ctx.store.add_provider(
        new.name,
        new.kind,
        new.base_url,
        new.api_key.get_secret_value(),
        new.api_version,
        timeout_s=new.timeout_s,
        concurrency=new.concurrency,
    )
    return provider.as_dict()


@router.get("/providers", response_model=list[resources.Provider], responses=errors(401, 403))
def list_providers(ctx: Ctx, user: CurrentUser) -> list[dict[str, Any]]:
    require_admin(user)
    return [p.as_dict() for p in ctx.store.list_providers()]


@router.delete(
    "/providers/{name}", response_model=resources.Provider, responses=errors(401, 403, 404)
)
def delete_provider(ctx: Ctx, user: CurrentUser, name: str) -> dict[str, Any]:
    """Forget a provider and its key; running servers keep theirs until deleted."""
    require_admin(user)
    return ctx.store.delete_provider(name).as_dict()


@router.post(
    "/providers/{name}/validate",
    response_model=resources.ProviderCheck,
    responses=errors(400, 401, 403, 404, 409, 422),
)
def check_provider(
    ctx: Ctx, user: CurrentUser, name: str, request: ValidateRequest | None = None
) -> dict[str, Any]:
    """Call the provider once (a tiny chat completion, no retries) and report its answer
    or its error; 200 either way, `ok` says which."""
    require_admin(user)
    provider = ctx.store.get_provider(name)
    model = request.model if request else None
    if model is None and provider.kind == "azure-openai":
        raise HTTPException(400, "give the Azure deployment to call as 'model'")
    model = model or OPENAI_CHECK_MODEL
    reach = ProviderAccess(
        name=provider.name,
        kind=provider.kind,  # type: ignore[arg-type]
        base_url=provider.base_url,
        api_key=ctx.store.provider_key(name),  # opened here, never logged (`ProviderAccess`)
        api_version=provider.api_version,
        timeout_s=min(provider.timeout_s or VALIDATE_TIMEOUT_S, VALIDATE_TIMEOUT_S),
    )
    return {"provider": name, "model": model} | validate_provider(reach, model)
