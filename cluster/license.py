"""Licenses: which licensed model scopes the cluster may serve, and how many seats it has.

The vendor writes a small JSON document and signs it with its Ed25519 private key
(`preannotate license sign`, `cluster/license_keys.py`):

    {"license": {"licensee": "Acme Health", "seats": 2, "scopes": ["finance", "healthcare"],
                 "expires": "2027-06-30"},
     "key_id": "1f0c9a3e5b7d2c44",
     "signature": "<base64 Ed25519 signature>"}

`preannotate up --license FILE` verifies it against the vendor's public key, which the
operator configures; a tampered, wrongly signed, unsigned, malformed or expired file is
refused. `seats` is how many licensed replicas and licensed training runs the whole
cluster may run at once: the scheduler counts them (`cluster/capacity.py`, `SeatUse`),
so adding nodes adds no seats. `scopes` says which kinds of licensed models may be
deployed at all. Every problem surfaces as a `LicenseError` whose message names the file,
the field and what was expected, because the person reading it is an operator starting a
cluster, not a developer reading a traceback. The file is read once, at `up`: there is no
way to replace the license of a running cluster.

Verification belongs to loading a file: the scheduler takes a `License` that was verified
(or built by the caller, as tests do). No Ray imports here:
`cluster.local_head.start_local_head` passes `License.resources()` to
`ray start --head --resources`.
"""

import base64
import binascii
import json
import re
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictInt,
    ValidationError,
    field_validator,
)
from pydantic_core import ErrorDetails, PydanticCustomError

from preannotate.cluster.license_keys import PUBLIC_KEY_ENV, key_id

LICENSE_TOKEN = "license_token"
"""The Ray custom resource a licensed replica requests: which nodes may run licensed work."""

OPEN_SCOPE = "open"
"""The Models Hub scope of models anyone may run; it never needs a license."""

LICENSED_SCOPES = frozenset({"healthcare", "finance", "legal"})
"""The scopes a license file may grant."""

SIGNED_FIELDS = ("license", "key_id", "signature")
"""The fields of a signed license file, in the order `sign_license` writes them."""

_SIGNING_CONTEXT = b"preannotate license v1\n"
"""Prefixed to what is signed, so a signature over a license means nothing elsewhere."""
_SIGNATURE_BYTES = 64
_KEY_ID = re.compile(r"[0-9a-f]{16}")

_ALLOWED = ", ".join(sorted(LICENSED_SCOPES))

_EXPECTED = {
    "licensee": "a non-empty name of who holds the license",
    "seats": "a positive whole number (how many licensed replicas and training runs "
    "the cluster may run at once)",
    "scopes": f"a non-empty list of scopes from: {_ALLOWED}",
    "expires": "an ISO date like 2027-06-30",
}
"""What each field must hold, in the words used by error messages."""

_SIGNED_SHAPE = (
    f"a JSON object with the fields {', '.join(SIGNED_FIELDS)}, as `preannotate license sign` "
    "writes"
)


class LicenseError(ValueError):
    """A license file is unusable, or a model needs a license the cluster does not have."""


class License(BaseModel):
    """A validated license. Frozen: a running cluster's license cannot change."""

    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)

    licensee: str = Field(min_length=1)
    seats: StrictInt = Field(gt=0)
    scopes: frozenset[str] = Field(min_length=1)
    expires: date

    @field_validator("scopes")
    @classmethod
    def _known_scopes(cls, scopes: frozenset[str]) -> frozenset[str]:
        unknown = sorted(scopes - LICENSED_SCOPES)
        if unknown:
            names = ", ".join(repr(name) for name in unknown)
            hint = f" ('{OPEN_SCOPE}' models need no license)" if OPEN_SCOPE in unknown else ""
            raise PydanticCustomError(
                "unknown_scope", f"unknown scope {names}{hint}; allowed scopes: {_ALLOWED}"
            )
        return scopes

    @field_validator("expires", mode="before")
    @classmethod
    def _iso_date(cls, value: Any) -> Any:
        """Only accept `YYYY-MM-DD` text: a number would silently be read as a timestamp."""
        if isinstance(value, date):
            return value
        if isinstance(value, str):
            try:
                return date.fromisoformat(value)
            except ValueError:
                pass
        raise ValueError("not an ISO date")

    def resources(self) -> dict[str, float]:
        """The custom resources a local head offers: for `ray start --head --resources`.
        On a one-node cluster the node may hold every seat."""
        return {LICENSE_TOKEN: float(self.seats)}

    def allows(self, scope: str) -> bool:
        """Whether a model of this Models Hub scope may be deployed under this license."""
        return scope == OPEN_SCOPE or scope in self.scopes

    def ensure_current(self, today: date | None = None) -> None:
        """Raise if the license has expired; it is valid through `expires`, UTC."""
        today = today or _utc_today()
        if today > self.expires:
            raise LicenseError(
                f"the license for {self.licensee} expired on {self.expires.isoformat()} "
                f"(today is {today.isoformat()}); ask for a renewed license file"
            )

    def summary(self) -> str:
        """One line for an operator: who, how many seats, which scopes, until when."""
        seats = f"{self.seats} seat" + ("" if self.seats == 1 else "s")
        return (
            f"{self.licensee}: {seats}, scopes {', '.join(sorted(self.scopes))}, "
            f"valid through {self.expires.isoformat()}"
        )


def sign_license(path: str | Path, key: Ed25519PrivateKey, today: date | None = None) -> str:
    """The signed file for the plain license JSON at `path`, as text; for the vendor only.

    The license is checked as `up` would check it, so a file that no cluster would accept
    (a bad field, already expired) is never signed.
    """
    path = Path(path)
    source = f"license file {path}"
    data = _json(_read(path), source)
    if isinstance(data, dict) and "signature" in data:
        raise LicenseError(f"{source} is already signed; sign the plain license JSON instead")
    license = _validate(data, source)
    _ensure_current(license, source, today)
    fields = license.model_dump(mode="json") | {"scopes": sorted(license.scopes)}
    return json.dumps(seal(fields, key), indent=2, ensure_ascii=False) + "\n"


def seal(fields: Any, key: Ed25519PrivateKey) -> dict[str, Any]:
    """The signed form of license fields, as a signed file holds it. It signs whatever it
    is given: `sign_license` checks the license first, `load_license` checks it again."""
    return {
        "license": fields,
        "key_id": key_id(key.public_key()),
        "signature": base64.b64encode(key.sign(_signed_bytes(fields))).decode("ascii"),
    }


def load_license(
    path: str | Path, public_key: Ed25519PublicKey | None, today: date | None = None
) -> License:
    """Read a signed license file, verify it against the vendor's public key and validate
    it: the only way a license enters a cluster (`preannotate up --license`). `today` lets
    tests control the expiry check.

    The signature is checked before any field is read, so an unverified file never
    reaches the cluster; the key id in the file only tells a wrong key from a tampered file.
    """
    path = Path(path)
    source = f"license file {path}"
    signed = _json(_read(path), source)
    if not isinstance(signed, dict):
        raise LicenseError(f"{source} is not a signed license: expected {_SIGNED_SHAPE}")
    if "signature" not in signed and set(signed) & set(_EXPECTED):
        raise LicenseError(
            f"{source} is not signed: ask the license vendor for the signed file "
            "(vendors sign with `preannotate license sign`)"
        )
    fields = sorted(set(signed) ^ set(SIGNED_FIELDS))
    if fields:
        raise LicenseError(
            f"{source} is not a signed license: expected {_SIGNED_SHAPE} "
            f"(wrong or missing: {', '.join(fields)})"
        )
    signature = _signature(signed["signature"], source)
    if public_key is None:
        raise LicenseError(
            f"{source} cannot be verified: no license public key is configured "
            f"(give the vendor's public key with --license-key or {PUBLIC_KEY_ENV})"
        )
    if not isinstance(signed["key_id"], str) or not _KEY_ID.fullmatch(signed["key_id"]):
        raise LicenseError(f"{source} is not a signed license: 'key_id' must be 16 hex digits")
    expected = key_id(public_key)
    if signed["key_id"] != expected:
        raise LicenseError(
            f"{source} was signed with key {signed['key_id']}, not with the configured public "
            f"key {expected}; configure the public key of the vendor that issued the file"
        )
    try:
        public_key.verify(signature, _signed_bytes(signed["license"]))
    except InvalidSignature:
        raise LicenseError(
            f"{source} was changed after it was signed (its signature does not match its "
            "contents); ask the vendor for an intact copy"
        ) from None
    license = _validate(signed["license"], source)
    _ensure_current(license, source, today)
    return license


def require_scope(license: License | None, model_name: str, scope: str) -> None:
    """Refuse a model whose scope the cluster's license does not cover, before deploying it.

    Checking expiry here too matters: a cluster may run for months past the day its
    license was loaded.
    """
    if scope == OPEN_SCOPE:
        return
    if license is None:
        raise LicenseError(
            f"model '{model_name}' needs a '{scope}' license, but no license is loaded "
            "(start with --license FILE)"
        )
    if not license.allows(scope):
        covered = ", ".join(sorted(license.scopes))
        raise LicenseError(
            f"model '{model_name}' needs a '{scope}' license; "
            f"the cluster's license covers: {covered}"
        )
    license.ensure_current()


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise LicenseError(f"license file {path} not found") from None
    except UnicodeDecodeError:
        raise LicenseError(f"license file {path} is not JSON (not UTF-8 text)") from None
    except OSError as error:
        raise LicenseError(f"cannot read license file {path}: {error.strerror}") from None


def _json(text: str, source: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise LicenseError(
            f"{source} is not JSON: {error.msg} (line {error.lineno}, column {error.colno})"
        ) from None


def _signed_bytes(fields: Any) -> bytes:
    """What a signature covers: the license fields as canonical JSON (sorted keys, no
    spaces), so reformatting the file keeps it valid and changing a value does not."""
    canonical = json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return _SIGNING_CONTEXT + canonical.encode("utf-8")


def _signature(value: Any, source: str) -> bytes:
    problem = f"{source} is not a signed license: 'signature' must be base64 of 64 bytes"
    if not isinstance(value, str):
        raise LicenseError(problem)
    try:
        signature = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise LicenseError(problem) from None
    if len(signature) != _SIGNATURE_BYTES:
        raise LicenseError(problem)
    return signature


def _validate(data: Any, source: str) -> License:
    if not isinstance(data, dict):
        raise LicenseError(
            f"{source}: the license must be a JSON object with the fields {', '.join(_EXPECTED)}"
        )
    try:
        return License.model_validate(data)
    except ValidationError as error:
        problems = "; ".join(_describe(detail) for detail in error.errors())
        raise LicenseError(f"{source}: {problems}") from None


def _ensure_current(license: License, source: str, today: date | None) -> None:
    try:
        license.ensure_current(today)
    except LicenseError as error:
        raise LicenseError(f"{source}: {error}") from None


def _describe(detail: ErrorDetails) -> str:
    """One pydantic error in an operator's words: which field, and what it must hold."""
    field = str(detail["loc"][0])
    if detail["type"] == "missing":
        return f"missing field '{field}' ({_EXPECTED[field]})"
    if detail["type"] == "extra_forbidden":
        return f"unknown field '{field}' (a license has only: {', '.join(_EXPECTED)})"
    if detail["type"] == "unknown_scope":
        return detail["msg"]
    return f"'{field}' must be {_EXPECTED[field]}, got {json.dumps(detail['input'])}"


def _utc_today() -> date:
    return datetime.now(UTC).date()
