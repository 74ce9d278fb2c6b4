"""Where the `preannotate` commands write, and how they report what the user must fix.

Shared by the offline commands (`cli.py`) and those that talk to the API (`remote.py`), so
every command prints its `error:` lines the same way and exits with the same status.
"""

from collections.abc import Iterator
from contextlib import contextmanager

import typer
from rich.console import Console
from rich.markup import escape

from preannotate.configs.errors import ConfigError
from preannotate.hub.catalog import HubError
from preannotate.store.errors import StoreError

USER_ERROR = 2
"""Exit status of a command refused for input the user can fix (as for a usage error)."""

out = Console()
err = Console(stderr=True, soft_wrap=True)


def error(message: str) -> None:
    """One `error:` line on stderr; the message is printed as it is, not as rich markup
    (paths and names from users or the API may hold brackets)."""
    err.print(f"[red]error:[/red] {escape(message)}", highlight=False)


@contextmanager
def user_errors() -> Iterator[None]:
    """Turn the errors a user can fix into `error:` lines and exit status 2."""
    try:
        yield
    except ConfigError as exc:
        for problem in exc.problems:
            error(problem)
        raise typer.Exit(USER_ERROR) from None
    except (HubError, StoreError, OSError) as exc:
        error(str(exc))
        raise typer.Exit(USER_ERROR) from None
