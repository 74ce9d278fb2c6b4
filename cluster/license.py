"""License files: which licensed model scopes a node may serve, and how many at once.

A license file is a small JSON document handed to `preannotate up --license FILE`:

    {"licensee": "Acme Health", "seats": 2, "scopes": ["healthcare", "finance"],
     "expires": "2027-06-30"}

When `up` starts a local Ray head, `seats` becomes that node's `license_token` Ray custom
resource, so Ray itself refuses to place more licensed replicas than the license pays for;
a joined cluster declares `license_token` on its own nodes instead (docs/cluster.md).
`scopes` says which kinds of licensed models may be deployed at all. Every problem surfaces
as a `LicenseError` whose message names the file, the field and what was expected, because
the person reading it is an operator starting a cluster, not a developer reading a
traceback. The file is read once, at `up`: there is no way to replace the license of a
running cluster.

No Ray imports here: `cluster.ray_cluster.start_local_head` passes `License.resources()` to
`ray start --head --resources`.
"""

import json
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictInt,
    ValidationError,
    field_validator,
)
from pydantic_core import ErrorDetails, PydanticCustomError

LICENSE_TOKEN = "license_token"
"""The Ray custom resource a licensed replica requests, one per seat it uses."""

OPEN_SCOPE = "open"
"""The Models Hub scope of models anyone may run; it never needs a license."""

LICENSED_SCOPES = frozenset({"healthcare", "finance", "legal"})
"""The scopes a license file may grant."""

_ALLOWED = ", ".join(sorted(LICENSED_SCOPES))

_EXPECTED = {
    "licensee": "a non-empty name of who holds the license",
    "seats": "a positive whole number (how many licensed replicas this node may run)",
    "scopes": f"a non-empty list of scopes from: {_ALLOWED}",
    "expires": "an ISO date like 2027-06-30",
}
"""What each field must hold, in the words used by error messages."""


class LicenseError(ValueError):
    """A license file is unusable, or a model needs a license the cluster does not have."""


class License(BaseModel):
    """A validated license. Frozen: a running node's license tokens cannot change anyway."""

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
        """The custom resources a local head offers: for `ray start --head --resources`."""
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


def load_license(path: str | Path, today: date | None = None) -> License:
    """Read and validate the license file given to `preannotate up --license`, the only way
    a license enters the cluster; `today` lets tests control the expiry check."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise LicenseError(f"license file {path} not found") from None
    except UnicodeDecodeError:
        raise LicenseError(f"license file {path} is not JSON (not UTF-8 text)") from None
    except OSError as error:
        raise LicenseError(f"cannot read license file {path}: {error.strerror}") from None
    return _parse(text, f"license file {path}", today)


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


def _parse(text: str, source: str, today: date | None) -> License:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as error:
        raise LicenseError(
            f"{source} is not JSON: {error.msg} (line {error.lineno}, column {error.colno})"
        ) from None
    if not isinstance(data, dict):
        raise LicenseError(f"{source} must be a JSON object with the fields {', '.join(_EXPECTED)}")
    try:
        license = License.model_validate(data)
    except ValidationError as error:
        problems = "; ".join(_describe(detail) for detail in error.errors())
        raise LicenseError(f"{source}: {problems}") from None
    license.ensure_current(today)
    return license


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
