"""License files: every way one can be wrong gets a message an operator can act on."""

import json
from collections.abc import Callable
from datetime import date
from pathlib import Path

import pytest

from preannotate.cluster.license import (
    License,
    LicenseError,
    load_license,
    require_scope,
)

TODAY = date(2026, 1, 15)
VALID = {
    "licensee": "Acme Health",
    "seats": 2,
    "scopes": ["healthcare", "finance"],
    "expires": "2027-06-30",
}


def license_text(**changes: object) -> str:
    """The valid license with some fields changed; a value of None removes the field."""
    data = {**VALID, **changes}
    return json.dumps({key: value for key, value in data.items() if value is not None})


Loader = Callable[[str], License]
"""Loads license text as `up --license` does: written to a file, with today fixed."""


@pytest.fixture
def load(tmp_path: Path) -> Loader:
    """A `Loader`: `load_license` is the only way a license enters, so text goes via a file."""

    def write_and_load(text: str) -> License:
        path = tmp_path / "license.json"
        path.write_text(text)
        return load_license(path, today=TODAY)

    return write_and_load


def test_valid_license_offers_its_seats_as_license_tokens(load: Loader) -> None:
    license = load(license_text())

    assert license.licensee == "Acme Health"
    assert license.scopes == {"healthcare", "finance"}
    assert license.expires == date(2027, 6, 30)
    assert license.resources() == {"license_token": 2.0}


def test_load_license_reads_a_file(tmp_path: Path) -> None:
    path = tmp_path / "license.json"
    path.write_text(license_text(seats=3))

    assert load_license(path, today=TODAY).seats == 3


def test_missing_file_names_the_path(tmp_path: Path) -> None:
    path = tmp_path / "nope.json"

    with pytest.raises(LicenseError, match=f"license file {path} not found"):
        load_license(path, today=TODAY)


def test_not_json_says_where(tmp_path: Path) -> None:
    path = tmp_path / "license.json"
    path.write_text('{"licensee": "Acme",\n  seats: 2}')

    with pytest.raises(LicenseError) as error:
        load_license(path, today=TODAY)

    assert str(error.value).startswith(f"license file {path} is not JSON")
    assert "line 2" in str(error.value)


def test_json_that_is_not_an_object(load: Loader) -> None:
    with pytest.raises(LicenseError, match="must be a JSON object with the fields licensee"):
        load("[1, 2]")


def test_missing_fields_are_named(load: Loader) -> None:
    with pytest.raises(LicenseError) as error:
        load(license_text(seats=None, expires=None))

    message = str(error.value)
    assert "missing field 'seats'" in message
    assert "missing field 'expires'" in message
    assert "'licensee'" not in message


def test_unknown_field_is_named(load: Loader) -> None:
    with pytest.raises(LicenseError, match="unknown field 'seat'.*licensee, seats, scopes"):
        load(license_text(seat=2))


@pytest.mark.parametrize("seats", [0, -1])
def test_non_positive_seats(seats: int, load: Loader) -> None:
    with pytest.raises(LicenseError, match=f"'seats' must be a positive whole number.*got {seats}"):
        load(license_text(seats=seats))


@pytest.mark.parametrize("seats", [1.5, "2", True])
def test_seats_must_be_a_whole_number(seats: object, load: Loader) -> None:
    with pytest.raises(LicenseError, match="'seats' must be a positive whole number"):
        load(license_text(seats=seats))


def test_unknown_scope_lists_the_allowed_ones(load: Loader) -> None:
    with pytest.raises(LicenseError) as error:
        load(license_text(scopes=["healthcare", "radiology"]))

    assert "unknown scope 'radiology'; allowed scopes: finance, healthcare, legal" in str(
        error.value
    )


def test_open_scope_in_a_license_explains_it_needs_none(load: Loader) -> None:
    with pytest.raises(LicenseError, match="'open' models need no license"):
        load(license_text(scopes=["open"]))


def test_blank_licensee(load: Loader) -> None:
    with pytest.raises(LicenseError, match="'licensee' must be a non-empty name"):
        load(license_text(licensee="  "))


def test_empty_scopes(load: Loader) -> None:
    with pytest.raises(LicenseError, match="'scopes' must be a non-empty list of scopes from"):
        load(license_text(scopes=[]))


@pytest.mark.parametrize("expires", ["30/06/2027", "2027-02-30", 20270630])
def test_expires_must_be_an_iso_date(expires: object, load: Loader) -> None:
    with pytest.raises(LicenseError, match="'expires' must be an ISO date like 2027-06-30"):
        load(license_text(expires=expires))


def test_expired_license_gives_both_dates(load: Loader) -> None:
    with pytest.raises(LicenseError) as error:
        load(license_text(expires="2025-12-31"))

    assert "expired on 2025-12-31 (today is 2026-01-15)" in str(error.value)


def test_license_is_valid_through_its_last_day(load: Loader) -> None:
    license = load(license_text(expires="2026-01-15"))

    assert license.expires == TODAY


def test_allows_its_scopes_and_open(load: Loader) -> None:
    license = load(license_text())

    assert license.allows("healthcare")
    assert license.allows("open")
    assert not license.allows("legal")


def test_require_scope_passes_covered_and_open_models(load: Loader) -> None:
    license = load(license_text())

    require_scope(license, "ner_clinical", "healthcare")
    require_scope(None, "en_core_web_sm", "open")


def test_require_scope_names_the_model_and_what_the_license_covers(
    load: Loader,
) -> None:
    license = load(license_text(scopes=["finance"]))

    with pytest.raises(LicenseError) as error:
        require_scope(license, "ner_clinical", "healthcare")

    assert str(error.value) == (
        "model 'ner_clinical' needs a 'healthcare' license; the cluster's license covers: finance"
    )


def test_require_scope_without_a_license_says_how_to_load_one() -> None:
    with pytest.raises(LicenseError, match=r"no license is loaded \(start with --license FILE\)"):
        require_scope(None, "ner_clinical", "healthcare")


def test_require_scope_refuses_once_the_license_has_expired() -> None:
    license = License(
        licensee="Acme Health", seats=1, scopes=frozenset({"healthcare"}), expires=date(2000, 1, 1)
    )

    with pytest.raises(LicenseError, match="expired on 2000-01-01"):
        require_scope(license, "ner_clinical", "healthcare")
