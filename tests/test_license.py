"""Licenses: signed files verified against the vendor's public key, every way one can be
wrong with a message an operator can act on, the `preannotate license` commands, and seats
counted across the whole cluster."""

import json
import os
import stat
from collections.abc import Callable
from datetime import date
from pathlib import Path

import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from typer.testing import CliRunner

from preannotate.client.cli import app
from preannotate.cluster.capacity import (
    NodeResources,
    ResourceRequest,
    SeatUse,
    ServerHolding,
    check_fit,
)
from preannotate.cluster.license import (
    License,
    LicenseError,
    load_license,
    require_scope,
    seal,
    sign_license,
)
from preannotate.cluster.license_keys import (
    LicenseKeyError,
    key_id,
    new_key_files,
    public_key_text,
    read_private_key,
    read_public_key,
)
from tests.conftest import RayCluster
from tests.test_serving import deploy, new_project, wait_ready
from tests.test_training import ANNOTATED, import_annotated, train_job

TODAY = date(2026, 1, 15)
VALID = {
    "licensee": "Acme Health",
    "seats": 2,
    "scopes": ["healthcare", "finance"],
    "expires": "2027-06-30",
}
VENDOR = Ed25519PrivateKey.generate()
"""The license vendor's key for the in-process tests."""
OPERATOR_KEY = VENDOR.public_key()

runner = CliRunner()


def license_text(**changes: object) -> str:
    """The valid license with some fields changed; a value of None removes the field."""
    data = {**VALID, **changes}
    return json.dumps({key: value for key, value in data.items() if value is not None})


def signed_file(path: Path, fields: object, key: Ed25519PrivateKey = VENDOR) -> Path:
    """A file signed by the vendor whatever its fields hold, as a careless signing tool
    might write it."""
    path.write_text(json.dumps(seal(fields, key)))
    return path


Loader = Callable[[str], License]
"""Loads license text as `up --license` does: signed, written to a file, with today fixed."""


@pytest.fixture
def load(tmp_path: Path) -> Loader:
    """A `Loader`: the fields are checked after the signature, so each case is signed."""

    def sign_and_load(text: str) -> License:
        path = signed_file(tmp_path / "license.json", json.loads(text))
        return load_license(path, OPERATOR_KEY, today=TODAY)

    return sign_and_load


@pytest.fixture
def signed(tmp_path: Path) -> Path:
    """The valid license, signed by `sign_license` as the vendor does."""
    plain = tmp_path / "plain.json"
    plain.write_text(license_text())
    path = tmp_path / "signed.json"
    path.write_text(sign_license(plain, VENDOR, today=TODAY))
    return path


# --- signed files --------------------------------------------------------------------------


def test_signed_license_verifies_and_offers_its_seats(signed: Path) -> None:
    license = load_license(signed, OPERATOR_KEY, today=TODAY)

    assert license.licensee == "Acme Health"
    assert license.seats == 2
    assert license.scopes == {"healthcare", "finance"}
    assert license.expires == date(2027, 6, 30)
    assert license.resources() == {"license_token": 2.0}


def test_reformatting_a_signed_file_keeps_it_valid(signed: Path) -> None:
    data = json.loads(signed.read_text())
    data["license"] = dict(reversed(data["license"].items()))
    signed.write_text(json.dumps(data, indent=8))

    assert load_license(signed, OPERATOR_KEY, today=TODAY).seats == 2


@pytest.mark.parametrize(
    "field, value",
    [("seats", 200), ("scopes", ["finance", "healthcare", "legal"]), ("expires", "2099-12-31")],
)
def test_tampered_file_is_refused(signed: Path, field: str, value: object) -> None:
    data = json.loads(signed.read_text())
    data["license"][field] = value
    signed.write_text(json.dumps(data))

    with pytest.raises(LicenseError) as error:
        load_license(signed, OPERATOR_KEY, today=TODAY)

    assert str(error.value) == (
        f"license file {signed} was changed after it was signed (its signature does not "
        "match its contents); ask the vendor for an intact copy"
    )


def test_file_signed_with_another_key_names_both_keys(signed: Path) -> None:
    other = Ed25519PrivateKey.generate().public_key()

    with pytest.raises(LicenseError) as error:
        load_license(signed, other, today=TODAY)

    assert str(error.value) == (
        f"license file {signed} was signed with key {key_id(OPERATOR_KEY)}, not with the "
        f"configured public key {key_id(other)}; configure the public key of the vendor "
        "that issued the file"
    )


def test_forged_key_id_is_still_refused(signed: Path, tmp_path: Path) -> None:
    """The key id only words the message: a file signed by someone else that claims the
    vendor's key id fails on its signature."""
    forged = signed_file(tmp_path / "forged.json", VALID, Ed25519PrivateKey.generate())
    data = json.loads(forged.read_text()) | {"key_id": key_id(OPERATOR_KEY)}
    forged.write_text(json.dumps(data))

    with pytest.raises(LicenseError, match="was changed after it was signed"):
        load_license(forged, OPERATOR_KEY, today=TODAY)


def test_unsigned_license_says_to_get_the_signed_file(tmp_path: Path) -> None:
    path = tmp_path / "license.json"
    path.write_text(license_text())

    with pytest.raises(LicenseError) as error:
        load_license(path, OPERATOR_KEY, today=TODAY)

    assert str(error.value) == (
        f"license file {path} is not signed: ask the license vendor for the signed file "
        "(vendors sign with `preannotate license sign`)"
    )


def test_without_a_public_key_nothing_is_trusted(signed: Path) -> None:
    with pytest.raises(LicenseError) as error:
        load_license(signed, None, today=TODAY)

    assert "cannot be verified: no license public key is configured" in str(error.value)
    assert "--license-key or PREANNOTATE_LICENSE_PUBLIC_KEY" in str(error.value)


@pytest.mark.parametrize(
    "change, expected",
    [
        ({"key_id": None}, "expected a JSON object with the fields license, key_id, signature"),
        ({"notes": "x"}, r"\(wrong or missing: notes\)"),
        ({"signature": "not base64!"}, "'signature' must be base64 of 64 bytes"),
        ({"signature": "AAAA"}, "'signature' must be base64 of 64 bytes"),
        ({"key_id": 7}, "'key_id' must be 16 hex digits"),
        ({"key_id": "x\nforged message"}, "'key_id' must be 16 hex digits"),
    ],
)
def test_malformed_signed_file(signed: Path, change: dict, expected: str) -> None:
    data = json.loads(signed.read_text()) | change
    signed.write_text(json.dumps({k: v for k, v in data.items() if v is not None}))

    with pytest.raises(LicenseError, match=expected) as error:
        load_license(signed, OPERATOR_KEY, today=TODAY)

    assert str(error.value).startswith(f"license file {signed} is not a signed license")


def test_signed_file_that_is_not_an_object(tmp_path: Path) -> None:
    path = tmp_path / "license.json"
    path.write_text("[1, 2]")

    with pytest.raises(LicenseError, match="is not a signed license: expected a JSON object"):
        load_license(path, OPERATOR_KEY, today=TODAY)


def test_missing_file_names_the_path(tmp_path: Path) -> None:
    path = tmp_path / "nope.json"

    with pytest.raises(LicenseError, match=f"license file {path} not found"):
        load_license(path, OPERATOR_KEY, today=TODAY)


def test_not_json_says_where(tmp_path: Path) -> None:
    path = tmp_path / "license.json"
    path.write_text('{"licensee": "Acme",\n  seats: 2}')

    with pytest.raises(LicenseError) as error:
        load_license(path, OPERATOR_KEY, today=TODAY)

    assert str(error.value).startswith(f"license file {path} is not JSON")
    assert "line 2" in str(error.value)


def test_expired_license_gives_the_file_and_both_dates(tmp_path: Path) -> None:
    path = signed_file(tmp_path / "license.json", json.loads(license_text(expires="2025-12-31")))

    with pytest.raises(LicenseError) as error:
        load_license(path, OPERATOR_KEY, today=TODAY)

    assert str(error.value) == (
        f"license file {path}: the license for Acme Health expired on 2025-12-31 "
        "(today is 2026-01-15); ask for a renewed license file"
    )


# --- the fields of a verified license -------------------------------------------------------


def test_signed_fields_that_are_not_an_object(load: Loader) -> None:
    with pytest.raises(LicenseError, match="the license must be a JSON object with the fields"):
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


# --- signing and keys ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, expected",
    [
        (license_text(seats=0), "'seats' must be a positive whole number"),
        (license_text(expires="2025-12-31"), "expired on 2025-12-31"),
        (json.dumps(seal(VALID, VENDOR)), "is already signed"),
    ],
)
def test_sign_refuses_what_no_cluster_would_accept(
    tmp_path: Path, text: str, expected: str
) -> None:
    plain = tmp_path / "plain.json"
    plain.write_text(text)

    with pytest.raises(LicenseError, match=expected):
        sign_license(plain, VENDOR, today=TODAY)


def test_new_key_files_are_private_and_never_overwritten(tmp_path: Path) -> None:
    private, public = tmp_path / "vendor.pem", tmp_path / "vendor.pub"

    key = new_key_files(private, public)

    assert stat.S_IMODE(private.stat().st_mode) == 0o600
    assert read_private_key(private).public_key() == key
    assert public.read_text() == public_key_text(key) + "\n"
    before = private.read_bytes()
    with pytest.raises(LicenseKeyError, match=f"{private} already exists"):
        new_key_files(private, tmp_path / "other.pub")
    assert private.read_bytes() == before and not (tmp_path / "other.pub").exists()


def test_public_key_as_text_file_or_pem(tmp_path: Path) -> None:
    text = public_key_text(OPERATOR_KEY)
    line = tmp_path / "vendor.pub"
    line.write_text(text + "\n")
    pem = tmp_path / "vendor_pub.pem"
    pem.write_bytes(
        OPERATOR_KEY.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )

    for value in (text, f"  {text}\n", str(line), str(pem)):
        assert key_id(read_public_key(value)) == key_id(OPERATOR_KEY)


@pytest.mark.parametrize("value", ["no-such-file", "AAAA"])
def test_a_public_key_that_is_neither_key_nor_file(value: str) -> None:
    with pytest.raises(LicenseKeyError, match="is neither a key nor an existing file"):
        read_public_key(value)


def test_a_private_key_file_that_holds_no_key(tmp_path: Path) -> None:
    path = tmp_path / "vendor.pub"
    path.write_text(public_key_text(OPERATOR_KEY))

    with pytest.raises(LicenseKeyError, match=f"{path} is not an Ed25519 private key"):
        read_private_key(path)


# --- preannotate license ..., up --license ---------------------------------------------------


def test_keygen_sign_verify_from_the_command_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    made = runner.invoke(app, ["license", "keygen", "vendor.pem"])
    assert made.exit_code == 0, made.stderr
    assert stat.S_IMODE(os.stat("vendor.pem").st_mode) == 0o600
    public = made.stdout.strip()
    assert Path("vendor.pem.pub").read_text().strip() == public
    Path("acme.json").write_text(license_text(expires="2099-12-31"))

    signed = runner.invoke(app, ["license", "sign", "--key", "vendor.pem", "acme.json", "-o", "s"])
    assert signed.exit_code == 0, signed.stderr
    by_file = runner.invoke(app, ["license", "verify", "s", "--license-key", "vendor.pem.pub"])
    by_env = runner.invoke(
        app, ["license", "verify", "s"], env={"PREANNOTATE_LICENSE_PUBLIC_KEY": public}
    )
    for verified in (by_file, by_env):
        assert verified.exit_code == 0, verified.stderr
        assert verified.stdout == (
            "valid: Acme Health: 2 seats, scopes finance, healthcare, valid through 2099-12-31\n"
        )
    to_stdout = runner.invoke(app, ["license", "sign", "--key", "vendor.pem", "acme.json"])
    assert json.loads(to_stdout.stdout)["license"] == json.loads(Path("s").read_text())["license"]


def test_each_refusal_on_the_command_line_is_one_error_line(tmp_path: Path) -> None:
    current = VALID | {"expires": "2099-12-31"}
    tampered = seal(current, VENDOR)
    tampered["license"] = current | {"seats": 90}
    cases = {
        "tampered": ("was changed after it was signed", tampered),
        "wrong key": ("was signed with key", seal(current, Ed25519PrivateKey.generate())),
        "unsigned": ("is not signed", current),
        "malformed": ("is not a signed license", {"license": current}),
        "expired": ("expired on 2020-01-31", seal(VALID | {"expires": "2020-01-31"}, VENDOR)),
    }
    for name, (expected, content) in cases.items():
        path = tmp_path / f"{name}.json"
        path.write_text(json.dumps(content))
        for command in (["license", "verify"], ["up", "--license"]):
            result = runner.invoke(
                app,
                [*command, str(path)],
                env={"PREANNOTATE_LICENSE_PUBLIC_KEY": public_key_text(OPERATOR_KEY)},
            )
            assert result.exit_code == 2, (name, command, result.output)
            assert result.stderr.startswith(f"error: license file {path}"), result.stderr
            assert expected in result.stderr and result.stderr.count("\n") == 1, result.stderr


def test_up_refuses_a_bad_license_key_before_starting_anything(tmp_path: Path) -> None:
    path = signed_file(tmp_path / "license.json", VALID)

    result = runner.invoke(app, ["up", "--license", str(path), "--license-key", "nope"])

    assert result.exit_code == 2
    assert result.stderr.startswith("error: license public key 'nope' is neither a key nor")


def test_keygen_and_sign_refusals(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert runner.invoke(app, ["license", "keygen", "vendor.pem"]).exit_code == 0
    again = runner.invoke(app, ["license", "keygen", "vendor.pem"])
    assert again.exit_code == 2 and "vendor.pem already exists" in again.stderr
    Path("acme.json").write_text(license_text(seats=0))
    bad = runner.invoke(app, ["license", "sign", "--key", "vendor.pem", "acme.json", "-o", "s"])
    assert bad.exit_code == 2 and "'seats' must be a positive whole number" in bad.stderr
    no_key = runner.invoke(app, ["license", "sign", "--key", "nope.pem", "acme.json", "-o", "s"])
    assert no_key.exit_code == 2 and "private key file nope.pem not found" in no_key.stderr
    assert not Path("s").exists()


# --- seats, counted across the cluster ----------------------------------------------------


def licensed_nodes(*tokens: float) -> list[NodeResources]:
    """Nodes with 4 CPUs each and the given license tokens, all free."""
    return [
        NodeResources(node_id=f"n{i}", total=resources, available=dict(resources))
        for i, count in enumerate(tokens)
        for resources in [{"CPU": 4.0, "license_token": count}]
    ]


LICENSED = ResourceRequest(num_cpus=1, license_tokens=1)


def test_more_nodes_with_tokens_bring_no_more_seats() -> None:
    """Ray has tokens free on both nodes, yet the license's 2 seats are taken."""
    holdings = [ServerHolding(server_id="server-1", resources={"CPU": 2, "license_token": 2})]
    seats = SeatUse(seats=2, servers={"server-1": 2})

    result = check_fit(LICENSED, licensed_nodes(2, 2), holdings, seats)

    assert not result.fits and not result.never_fits
    assert result.message == (
        "Cannot deploy: no license seat is free (the license has 2 seats, in use by server-1 "
        "(2 licensed replicas)). Delete one of these servers on the Clusters page to free it: "
        "server-1."
    )
    assert check_fit(LICENSED, licensed_nodes(2, 2), holdings).fits  # Ray alone would place it


def test_a_licensed_training_run_holds_a_seat() -> None:
    result = check_fit(LICENSED, licensed_nodes(1), seats=SeatUse(seats=1, training_jobs=[7]))

    assert result.explain("train") == (
        "Cannot train: no license seat is free (the license has 1 seat, in use by training "
        "job 7). No deployed server holds enough of it; wait for running training jobs to "
        "finish."
    )
    assert result.delete_candidates == []


def test_replicas_beyond_the_free_seats() -> None:
    request = ResourceRequest(num_cpus=1, license_tokens=1, replicas=2)
    seats = SeatUse(seats=3, servers={"server-1": 1, "server-2": 1})
    holdings = [
        ServerHolding(server_id=f"server-{n}", resources={"CPU": 1, "license_token": 1})
        for n in (1, 2)
    ]

    result = check_fit(request, licensed_nodes(4), holdings, seats)

    assert result.missing == [
        "seats: need 2, 1 of 3 free (in use by server-1 (1 licensed replica), "
        "server-2 (1 licensed replica))"
    ]
    assert "it needs 2 license seats but only 1 of the license's 3 seats is free" in result.message
    assert result.delete_candidates == ["server-1", "server-2"]
    assert not result.delete_together


def test_servers_that_must_go_together_to_free_seats() -> None:
    request = ResourceRequest(num_cpus=1, license_tokens=1, replicas=2)
    seats = SeatUse(seats=2, servers={"server-1": 1, "server-2": 1})
    holdings = [
        ServerHolding(server_id=f"server-{n}", resources={"CPU": 1, "license_token": 1})
        for n in (1, 2)
    ]

    result = check_fit(request, licensed_nodes(4), holdings, seats)

    assert result.delete_together and result.delete_candidates == ["server-1", "server-2"]


def test_more_replicas_than_the_license_has_seats_never_fit() -> None:
    request = ResourceRequest(num_cpus=1, license_tokens=1, replicas=3)

    result = check_fit(request, licensed_nodes(4), seats=SeatUse(seats=2))

    assert result.never_fits
    assert result.message == (
        "Cannot deploy: it needs 3 license seats (one per licensed replica) but the license "
        "has 2 seats. Deleting servers will not help: ask for fewer replicas, or for a "
        "license with more seats."
    )


def test_open_models_take_no_seat() -> None:
    result = check_fit(ResourceRequest(num_cpus=1), licensed_nodes(0), seats=SeatUse(seats=0))

    assert result.fits


def test_seats_are_counted_for_servers_and_training_runs_on_the_cluster(
    api: httpx.Client, ray_cluster: RayCluster
) -> None:
    """The session's license has 1 seat: a licensed server holds it against a second
    licensed server and a licensed training run; deleting the server frees it for the run,
    which then holds it until it is cancelled."""
    assert ray_cluster.license.seats == 1
    first = new_project(api, "PERSON", model="ner_licensed_demo")
    second = new_project(api, "ORG", model="ner_licensed_demo")
    deployed = deploy(api, first)
    assert deployed.status_code == 202, deployed.text
    server = wait_ready(api, deployed.json()["id"])
    in_use = (
        f"no license seat is free (the license has 1 seat, in use by {server['id']} "
        "(1 licensed replica))"
    )

    refused = deploy(api, second)
    assert refused.status_code == 409
    assert in_use in refused.json()["detail"]
    assert refused.json()["delete_candidates"] == [server["id"]]
    training = import_annotated(api, ANNOTATED[:40])
    run = {"model_name": "seat", "base_model": "ner_licensed_demo", "epochs": 200}
    run["resources"] = {"num_cpus": 0.5}
    no_seat = train_job(api, training, **run)
    assert no_seat.status_code == 409
    assert no_seat.json()["detail"].startswith(f"Cannot train: {in_use}")

    assert api.delete(f"/servers/{server['id']}").status_code == 200
    started = train_job(api, training, **run)
    assert started.status_code == 202, started.text
    job = started.json()["id"]
    refused = deploy(api, second)
    assert refused.status_code == 409
    assert (
        f"no license seat is free (the license has 1 seat, in use by training job {job})"
        in refused.json()["detail"]
    )

    assert api.delete(f"/jobs/{job}").json()["state"] == "cancelled"
    accepted = deploy(api, second)
    assert accepted.status_code == 202, accepted.text
    assert wait_ready(api, accepted.json()["id"])["nodes"] == [ray_cluster.license_node]
