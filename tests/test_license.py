"""License files: every way one can be wrong gets a message an operator can act on."""

import json
from datetime import date
from pathlib import Path

import pytest

from preannotate.cluster.license import (
    License,
    LicenseError,
    load_license,
    parse_license,
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


def test_valid_license_offers_its_seats_as_license_tokens() -> None:
    license = parse_license(license_text(), today=TODAY)

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


def test_json_that_is_not_an_object() -> None:
    with pytest.raises(LicenseError, match="must be a JSON object with the fields licensee"):
        parse_license("[1, 2]", today=TODAY)


def test_missing_fields_are_named() -> None:
    with pytest.raises(LicenseError) as error:
        parse_license(license_text(seats=None, expires=None), today=TODAY)

    message = str(error.value)
    assert "missing field 'seats'" in message
    assert "missing field 'expires'" in message
    assert "'licensee'" not in message


def test_unknown_field_is_named() -> None:
    with pytest.raises(LicenseError, match="unknown field 'seat'.*licensee, seats, scopes"):
        parse_license(license_text(seat=2), today=TODAY)


@pytest.mark.parametrize("seats", [0, -1])
def test_non_positive_seats(seats: int) -> None:
    with pytest.raises(LicenseError, match=f"'seats' must be a positive whole number.*got {seats}"):
        parse_license(license_text(seats=seats), today=TODAY)


@pytest.mark.parametrize("seats", [1.5, "2", True])
def test_seats_must_be_a_whole_number(seats: object) -> None:
    with pytest.raises(LicenseError, match="'seats' must be a positive whole number"):
        parse_license(license_text(seats=seats), today=TODAY)


def test_unknown_scope_lists_the_allowed_ones() -> None:
    with pytest.raises(LicenseError) as error:
        parse_license(license_text(scopes=["healthcare", "radiology"]), today=TODAY)

    assert "unknown scope 'radiology'; allowed scopes: finance, healthcare, legal" in str(
        error.value
    )


def test_open_scope_in_a_license_explains_it_needs_none() -> None:
    with pytest.raises(LicenseError, match="'open' models need no license"):
        parse_license(license_text(scopes=["open"]), today=TODAY)


def test_blank_licensee() -> None:
    with pytest.raises(LicenseError, match="'licensee' must be a non-empty name"):
        parse_license(license_text(licensee="  "), today=TODAY)


def test_empty_scopes() -> None:
    with pytest.raises(LicenseError, match="'scopes' must be a non-empty list of scopes from"):
        parse_license(license_text(scopes=[]), today=TODAY)


@pytest.mark.parametrize("expires", ["30/06/2027", "2027-02-30", 20270630])
def test_expires_must_be_an_iso_date(expires: object) -> None:
    with pytest.raises(LicenseError, match="'expires' must be an ISO date like 2027-06-30"):
        parse_license(license_text(expires=expires), today=TODAY)


def test_expired_license_gives_both_dates() -> None:
    with pytest.raises(LicenseError) as error:
        parse_license(license_text(expires="2025-12-31"), today=TODAY)

    assert "expired on 2025-12-31 (today is 2026-01-15)" in str(error.value)


def test_license_is_valid_through_its_last_day() -> None:
    license = parse_license(license_text(expires="2026-01-15"), today=TODAY)

    assert license.expires == TODAY


def test_allows_its_scopes_and_open() -> None:
    license = parse_license(license_text(), today=TODAY)

    assert license.allows("healthcare")
    assert license.allows("open")
    assert not license.allows("legal")


def test_require_scope_passes_covered_and_open_models() -> None:
    license = parse_license(license_text(), today=TODAY)

    require_scope(license, "ner_clinical", "healthcare")
    require_scope(None, "en_core_web_sm", "open")


def test_require_scope_names_the_model_and_what_the_license_covers() -> None:
    license = parse_license(license_text(scopes=["finance"]), today=TODAY)

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
