"""`preannotate license ...`: make the vendor's keys, sign license files, check them; and
the verification `preannotate up --license` runs before it starts anything.

The vendor keeps the private key (`keygen` writes it with mode 0600) and signs each
customer's license JSON with it (`sign`). Operators only ever hold the public key: they
give it to `up` and `verify` with `--license-key`, or in PREANNOTATE_LICENSE_PUBLIC_KEY,
as the key's one-line text or the path of a file holding it. Every refusal is one
`error:` line and exit status 2.
"""

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer

from preannotate.client.console import USER_ERROR, err, error
from preannotate.cluster.license import License, LicenseError, load_license, sign_license
from preannotate.cluster.license_keys import (
    PUBLIC_KEY_ENV,
    LicenseKeyError,
    key_id,
    new_key_files,
    public_key_text,
    read_private_key,
    read_public_key,
)

license_app = typer.Typer(
    help="Signed license files: vendor keys, signing, checking.", no_args_is_help=True
)

PublicKeyOption = Annotated[
    str | None,
    typer.Option(
        "--license-key",
        envvar=PUBLIC_KEY_ENV,
        help="the license vendor's public key: its base64 line, or a file holding it",
        show_envvar=True,
    ),
]


@contextmanager
def license_errors() -> Iterator[None]:
    """A license or key the user must fix: one `error:` line, exit status 2."""
    try:
        yield
    except (LicenseError, LicenseKeyError) as exc:
        error(str(exc))
        raise typer.Exit(USER_ERROR) from None


def verified_license(path: Path, public_key: str | None) -> License:
    """The license `up --license` starts with, verified against the configured key; exits
    with status 2 and says why when it is unusable."""
    with license_errors():
        key = read_public_key(public_key) if public_key else None
        return load_license(path, key)


@license_app.command("keygen")
def keygen(
    private_key: Annotated[Path, typer.Argument(help="where to write the private key (PEM)")],
    public_key: Annotated[
        Path | None,
        typer.Option("--public", help="where to write the public key (default: KEY.pub)"),
    ] = None,
) -> None:
    """Make a vendor key pair: a private key file (mode 0600) and its public key.

    The private key signs licenses; the public key, printed and written to KEY.pub, is what
    operators configure.
    """
    public_path = public_key or private_key.with_name(private_key.name + ".pub")
    with license_errors():
        public = new_key_files(private_key, public_path)
    err.print(f"private key {private_key} (keep it secret), public key {public_path}")
    err.print(f"key id {key_id(public)}; operators set {PUBLIC_KEY_ENV} to:")
    typer.echo(public_key_text(public))


@license_app.command("sign")
def sign(
    license_file: Annotated[Path, typer.Argument(help="the plain license JSON to sign")],
    key: Annotated[Path, typer.Option("--key", help="the vendor's private key file")],
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="the signed file (default: stdout)")
    ] = None,
) -> None:
    """Sign a license JSON with the vendor's private key.

    The license ({"licensee", "seats", "scopes", "expires"}) is checked first: an invalid
    or expired one is refused.
    """
    with license_errors():
        signed = sign_license(license_file, read_private_key(key))
        if output is None:
            typer.echo(signed, nl=False)
            return
        try:
            output.write_text(signed, encoding="utf-8")
        except OSError as exc:
            raise LicenseError(f"cannot write {output}: {exc.strerror}") from None
    err.print(f"signed license -> {output}")


@license_app.command("verify")
def verify(
    license_file: Annotated[Path, typer.Argument(help="the signed license file")],
    public_key: PublicKeyOption = None,
) -> None:
    """Check a signed license file as `preannotate up --license` would, and show it."""
    license = verified_license(license_file, public_key)
    typer.echo(f"valid: {license.summary()}")
