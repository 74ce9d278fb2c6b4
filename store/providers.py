"""External LLM providers (OpenAI or Azure OpenAI) that external prompts call.

A provider's API key is sealed under the operator's secret key before it reaches the
database (`store/secrets.py`); without that key nothing is stored. Rows come back without
their key; only `provider_key` opens it, for the processes that call the provider.
"""

import re
from collections.abc import Iterable
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from preannotate.store.db import Database
from preannotate.store.errors import AlreadyExists, InvalidInput, NotFound
from preannotate.store.models import Provider, ProviderKind, parse_choice
from preannotate.store.secrets import require_secret_key, seal, unseal

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}")
MAX_KEY_CHARS = 4096
MAX_TIMEOUT_S = 600.0
MAX_CONCURRENCY = 64


def _checked(name: str, kind: str, base_url: str, api_version: str | None, api_key: str) -> str:
    """The kind's value, once every field is acceptable; `InvalidInput` naming the field."""
    if not _NAME.fullmatch(name):
        raise InvalidInput(
            f"provider name {name!r}: use 1-100 letters, digits, '_', '.' or '-', "
            "starting with a letter or digit"
        )
    provider_kind = parse_choice(ProviderKind, kind, "provider kind")
    url = urlsplit(base_url)
    if url.scheme not in ("http", "https") or not url.hostname:
        raise InvalidInput(f"base_url {base_url!r} is not an http(s) URL")
    if provider_kind == ProviderKind.AZURE_OPENAI and not api_version:
        raise InvalidInput("an azure-openai provider needs an api_version (e.g. 2024-10-21)")
    key = api_key.strip()
    if not key or len(key) > MAX_KEY_CHARS or any(c.isspace() for c in key):
        raise InvalidInput(
            f"the API key must be one word of 1 to {MAX_KEY_CHARS} characters without spaces"
        )
    return provider_kind.value


class ProviderOps(Database):
    def add_provider(
        self,
        name: str,
        kind: str,
        base_url: str,
        api_key: str,
        api_version: str | None = None,
        timeout_s: float | None = None,
        concurrency: int | None = None,
    ) -> Provider:
        """Register a provider with its key sealed; refused without the operator's secret
        key, for a name already taken, or for a malformed field."""
        checked_kind = _checked(name, kind, base_url, api_version, api_key)
        if timeout_s is not None and not 0 < timeout_s <= MAX_TIMEOUT_S:
            raise InvalidInput(f"timeout_s {timeout_s}: give 0 < seconds <= {MAX_TIMEOUT_S:g}")
        if concurrency is not None and not 1 <= concurrency <= MAX_CONCURRENCY:
            raise InvalidInput(f"concurrency {concurrency}: give 1 to {MAX_CONCURRENCY}")
        require_secret_key()
        provider = Provider(
            name=name,
            kind=checked_kind,
            base_url=base_url.rstrip("/"),
            api_version=api_version or None,
            sealed_key=seal(api_key.strip()),
            timeout_s=timeout_s,
            concurrency=concurrency,
        )
        try:
            with self._write() as session:
                if session.scalar(select(Provider.id).where(Provider.name == name)):
                    raise AlreadyExists(
                        f"provider {name!r} already exists; delete it first to replace it"
                    )
                session.add(provider)
        except IntegrityError:  # a concurrent add of the same name won
            raise AlreadyExists(f"provider {name!r} already exists") from None
        return provider

    def list_providers(self) -> list[Provider]:
        with self._read() as session:
            return list(session.scalars(select(Provider).order_by(Provider.name)))

    def get_provider(self, name: str) -> Provider:
        with self._read() as session:
            provider = session.scalar(select(Provider).where(Provider.name == name))
        if provider is None:
            raise NotFound(f"provider {name!r} not found; add it with `preannotate providers add`")
        return provider

    def delete_provider(self, name: str) -> Provider:
        """Forget a provider and its key. Servers already running keep the key they started
        with until they are deleted; new deploys naming it are refused."""
        with self._write() as session:
            provider = session.scalar(select(Provider).where(Provider.name == name))
            if provider is None:
                raise NotFound(f"provider {name!r} not found")
            session.delete(provider)
        return provider

    def provider_key(self, name: str) -> str:
        """The provider's API key in plain text, for the process about to call it."""
        return open_key(self.get_provider(name).sealed_key, name)

    def sealed_providers(self, names: Iterable[str]) -> dict[str, dict[str, Any]]:
        """What a model server needs to reach these providers, the keys still sealed: they
        are opened only in the replica that calls them (`open_key`). `NotFound` names the
        first provider that is not registered."""
        sealed = {}
        for name in sorted(set(names)):
            provider = self.get_provider(name)
            sealed[name] = provider.as_dict() | {"sealed_key": provider.sealed_key}
        return sealed


def open_key(sealed_key: str, name: str) -> str:
    """A provider's key in plain text, from its sealed form (`sealed_providers`)."""
    return unseal(sealed_key, f"the API key of provider {name!r}")
