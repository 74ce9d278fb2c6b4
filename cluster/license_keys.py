"""The license vendor's Ed25519 keys: the private key issues licenses, the public key lets
a cluster check them.

The private key is a PKCS#8 PEM file, the format `openssl genpkey -algorithm ed25519`
writes too, created readable by its owner only. The public key travels as one line of
text, the 32 raw key bytes in base64, so an operator can put it in an environment variable
or a file; a PEM public key file (`openssl pkey -pubout`) works as well. A key id, the
first 16 hex digits of the SHA-256 of those 32 bytes, lets messages say which key signed a
file without printing keys.
"""

import base64
import binascii
import hashlib
import os
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

PUBLIC_KEY_ENV = "PREANNOTATE_LICENSE_PUBLIC_KEY"
"""Where `preannotate up` finds the vendor's public key when `--license-key` is not given."""

PRIVATE_MODE = 0o600
"""A private key file is readable and writable by its owner only."""

_RAW_KEY_BYTES = 32
_PEM = b"-----BEGIN"
_PUBLIC_HINT = "the vendor's Ed25519 public key: its 44-character base64 line or a file holding it"


class LicenseKeyError(ValueError):
    """A key file or key text is unusable; the message names it and what was expected."""


def key_id(key: Ed25519PublicKey) -> str:
    """A short, stable name of a public key for messages."""
    return hashlib.sha256(_raw(key)).hexdigest()[:16]


def public_key_text(key: Ed25519PublicKey) -> str:
    """The one-line form of a public key that `read_public_key` accepts."""
    return base64.b64encode(_raw(key)).decode("ascii")


def new_key_files(private_path: Path, public_path: Path) -> Ed25519PublicKey:
    """Create a key pair: the private key file (mode 0600) and the public key's line.

    Neither file may exist yet: a key that signed licenses must never be overwritten by
    accident, and a refused call leaves both paths as they were.
    """
    for path in (private_path, public_path):
        if path.exists():
            raise LicenseKeyError(f"{path} already exists; a key file is never overwritten")
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    try:
        # Created with its final mode, so the key is never readable by others, not even briefly.
        fd = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_MODE)
    except OSError as exc:
        raise LicenseKeyError(f"cannot create {private_path}: {exc.strerror}") from None
    with os.fdopen(fd, "wb") as file:
        os.fchmod(file.fileno(), PRIVATE_MODE)
        file.write(pem)
    public = key.public_key()
    try:
        public_path.write_text(public_key_text(public) + "\n", encoding="ascii")
    except OSError as exc:
        private_path.unlink()
        raise LicenseKeyError(f"cannot write {public_path}: {exc.strerror}") from None
    return public


def read_private_key(path: Path) -> Ed25519PrivateKey:
    """The signing key in a PEM file, as `preannotate license keygen` writes it."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise LicenseKeyError(f"private key file {path} not found") from None
    except OSError as exc:
        raise LicenseKeyError(f"cannot read private key file {path}: {exc.strerror}") from None
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except TypeError:
        raise LicenseKeyError(
            f"private key file {path} is encrypted; give an unencrypted PKCS#8 PEM key"
        ) from None
    except ValueError:
        key = None
    if not isinstance(key, Ed25519PrivateKey):
        raise LicenseKeyError(
            f"{path} is not an Ed25519 private key (expected a PEM file as "
            "`preannotate license keygen` writes)"
        )
    return key


def read_public_key(value: str) -> Ed25519PublicKey:
    """The verifying key from an operator's setting: the key's base64 line itself, or the
    path of a file holding that line or a PEM public key."""
    text = value.strip()
    key = _parse_public(text.encode("ascii", "replace"))
    if key is not None:
        return key
    path = Path(text).expanduser()
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise LicenseKeyError(
            f"license public key {text!r} is neither a key nor an existing file; "
            f"expected {_PUBLIC_HINT}"
        ) from None
    except OSError as exc:
        raise LicenseKeyError(f"cannot read public key file {path}: {exc.strerror}") from None
    key = _parse_public(data.strip())
    if key is None:
        raise LicenseKeyError(
            f"public key file {path} holds no Ed25519 public key; expected {_PUBLIC_HINT}"
        )
    return key


def _parse_public(data: bytes) -> Ed25519PublicKey | None:
    if data.startswith(_PEM):
        try:
            key = serialization.load_pem_public_key(data)
        except ValueError:
            return None
        return key if isinstance(key, Ed25519PublicKey) else None
    try:
        raw = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        return None
    return Ed25519PublicKey.from_public_bytes(raw) if len(raw) == _RAW_KEY_BYTES else None


def _raw(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
