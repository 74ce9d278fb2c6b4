"""Where the `preannotate` commands write, and how they report what went wrong.

Shared by the offline commands (`cli.py`) and those that talk to the API (`remote.py`), so
every command prints its `error:` lines the same way and exits with the same status:
2 for what the user can fix, 1 for an unexpected failure (its traceback goes to a file).
"""

import os
import tempfile
import time
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.markup import escape
from typer.core import TyperGroup
from typer.exceptions import TyperException

from preannotate.cluster.local_head import ClusterError
from preannotate.configs.errors import ConfigError
from preannotate.configs.paths import data_dir
from preannotate.hub.catalog import HubError
from preannotate.store.errors import StoreError

USER_ERROR = 2
"""Exit status of a command refused for input the user can fix (as for a usage error)."""
INTERNAL_ERROR = 1
"""Exit status of a command that failed on something unexpected."""
DEBUG = "preannotate.debug"
"""Where `--debug` is kept in the click context's `meta`."""

out = Console()
err = Console(stderr=True, soft_wrap=True)


def error(message: str) -> None:
    """One `error:` line on stderr; the message is printed as it is, not as rich markup
    (paths and names from users or the API may hold brackets)."""
    err.print(f"[red]error:[/red] {escape(message)}", highlight=False)


def say(text: str, console: Console = out) -> None:
    """Print a line as it is: not rich markup (names and messages from users or the API may
    hold brackets), and not wrapped (a token or a path must stay whole)."""
    console.print(text, markup=False, highlight=False, soft_wrap=True)


@contextmanager
def user_errors() -> Iterator[None]:
    """Turn the errors a user can fix into `error:` lines and exit status 2."""
    try:
        yield
    except ConfigError as exc:
        for problem in exc.problems:
            error(problem)
        raise typer.Exit(USER_ERROR) from None
    except BrokenPipeError:  # stdout's reader went away: `ReportingGroup` ends quietly
        raise
    except (HubError, StoreError, ClusterError, OSError) as exc:
        error(str(exc))
        raise typer.Exit(USER_ERROR) from None


def _write_traceback(exc: BaseException) -> Path:
    """The traceback in a new file of `<data dir>/logs` (the system's temporary folder when
    that cannot be written), readable by its owner only."""
    text = "".join(traceback.format_exception(exc))
    try:
        folder = data_dir() / "logs"
        folder.mkdir(exist_ok=True)
    except OSError:
        folder = Path(tempfile.gettempdir())
    stamp = time.strftime("%Y%m%d-%H%M%S")
    with tempfile.NamedTemporaryFile(
        "w", dir=folder, prefix=f"error-{stamp}-", suffix=".log", delete=False
    ) as file:
        file.write(text)
    return Path(file.name)


def report_unexpected(exc: BaseException, debug: bool) -> None:
    """One `error:` line for a failure no command expected, and where its traceback is
    (with `debug`, the traceback itself first)."""
    lines = str(exc).strip().splitlines()
    what = f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__
    if debug:
        err.print("".join(traceback.format_exception(exc)), markup=False, highlight=False)
        error(f"unexpected {what}")
        return
    path = _write_traceback(exc)
    error(f"unexpected {what} (traceback in {path}; `preannotate --debug ...` shows it here)")


class ReportingGroup(TyperGroup):
    """The `preannotate` command group: a command that fails on something unexpected ends
    with one `error:` line and exit status 1, not with pages of framework internals."""

    def invoke(self, ctx: typer.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (typer.Exit, typer.Abort, TyperException):  # help, exit codes, usage errors
            raise
        except BrokenPipeError:
            # The reader of stdout went away (`preannotate ... | head`): stop without a word,
            # with status 1 as Rich and Click do, stdout pointed at nothing so the
            # interpreter's last flush does not fail again.
            os.dup2(os.open(os.devnull, os.O_WRONLY), 1)
            raise typer.Exit(INTERNAL_ERROR) from None
        except Exception as exc:
            report_unexpected(exc, debug=ctx.meta.get(DEBUG, False))
            raise typer.Exit(INTERNAL_ERROR) from None
