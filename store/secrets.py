"""Secrets at rest: provider API keys are stored encrypted (Fernet: AES-128-CBC with an
HMAC-SHA256) under a key the operator supplies, never in plain text.

The operator's key comes from `PREANNOTATE_SECRET_KEY`, or from the file that
`PREANNOTATE_SECRET_KEY_FILE` names (a mounted secret). It must be in the environment of
every process that encrypts or decrypts: the router (which stores keys and validates
providers) and the model server replicas (which decrypt the key of the provider their
prompts use when they start). Without it, nothing is stored and nothing is decrypted.
Messages never quote a secret.
"""

import os
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken

from preannotate.store.errors import InvalidState

SECRET_KEY_ENV = "PREANNOTATE_SECRET_KEY"
SECRET_KEY_FILE_ENV = "PREANNOTATE_SECRET_KEY_FILE"
MAKE_KEY = (
    'python -c "from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())"'
)


class SecretKeyError(InvalidState):
    """No usable operator key: missing, unreadable, malformed, or not the one a secret was
    sealed with. The message says which and what to do, and never quotes a key."""


def _operator_key() -> bytes:
    """The operator's key from the environment, or `SecretKeyError` naming the variables."""
    value = os.environ.get(SECRET_KEY_ENV, "").strip()
    source = SECRET_KEY_ENV
    if not value and os.environ.get(SECRET_KEY_FILE_ENV):
        path = Path(os.environ[SECRET_KEY_FILE_ENV])
        source = f"the file {path} ({SECRET_KEY_FILE_ENV})"
        try:
            value = path.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise SecretKeyError(f"cannot read {source}: {exc.strerror}") from None
    if not value:
        raise SecretKeyError(
            f"no secret key to encrypt provider keys with: set {SECRET_KEY_ENV}, or "
            f"{SECRET_KEY_FILE_ENV} to a file holding it, in the cluster's environment "
            f"(make one with: {MAKE_KEY})"
        )
    try:
        Fernet(value.encode())
    except ValueError:
        raise SecretKeyError(
            f"{source} is not a Fernet key (32 bytes in URL-safe base64); make one with: {MAKE_KEY}"
        ) from None
    return value.encode()


def seal(secret: str) -> str:
    """`secret` encrypted under the operator's key, as text for the database."""
    return Fernet(_operator_key()).encrypt(secret.encode()).decode()


def unseal(sealed: str, what: str) -> str:
    """The secret back from `seal`; `what` names it in the error when the operator's key
    is not the one it was sealed with."""
    try:
        return Fernet(_operator_key()).decrypt(sealed.encode()).decode()
    except InvalidToken:
        raise SecretKeyError(
            f"{what} cannot be decrypted with the secret key set now ({SECRET_KEY_ENV} or "
            f"{SECRET_KEY_FILE_ENV}): it was stored under another one; set that key back, "
            "or add the provider again with its API key"
        ) from None


def require_secret_key() -> None:
    """Refuse early (before anything is sent or stored) when there is no usable key."""
    _operator_key()
