"""`preannotate run PROJECT --input ...`: pre-annotate files or a Spark table, not the
project's stored tasks, on the cluster (`preannotate.spark`), with a progress bar.

The input is checked before anything is contacted; the caller's right to pre-annotate the
project is checked by the API (`remote.run`); the work itself goes through Ray.
"""

from enum import StrEnum
from pathlib import Path

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from preannotate.client.console import USER_ERROR, err, error, say, user_errors


class OutputFormat(StrEnum):
    parquet = "parquet"
    jsonl = "jsonl"


def checked_input(
    spec: str, output: Path | None, text_col: str, for_tasks: bool
) -> tuple[Path | str, Path]:
    """The input (a path, or a Spark table name) and the output folder, or exit 2 with one
    `error:` line; `for_tasks` says options for stored tasks were given too."""
    from preannotate.spark.api import check_input
    from preannotate.spark.sources import InputError

    problem = None
    if not spec.strip():
        problem = "--input is empty; give a file, a folder or a Spark table name"
    elif output is None:
        problem = "--input needs --output, the folder the results are written to"
    elif for_tasks:
        problem = "--task-id and --detach apply to the project's tasks, not to --input"
    elif output.exists() and not output.is_dir():
        problem = f"--output {output} is a file; it must be a folder"
    if problem:
        error(problem)
        raise typer.Exit(USER_ERROR)
    try:
        return check_input(spec, text_col), output
    except InputError as exc:
        error(str(exc))
        raise typer.Exit(USER_ERROR) from None


def run_input(
    spec: Path | str,
    project_id: int,
    output: Path,
    server: str | None,
    text_col: str,
    format: OutputFormat,
) -> None:
    """Run it with a bar of units (files, row groups, partitions) done; report the rows."""
    from preannotate.scheduler.errors import DeployRefused
    from preannotate.spark.api import run_input as run
    from preannotate.spark.sources import InputError
    from preannotate.spark.units import UnitDone

    progress = Progress(
        TextColumn(f"project {project_id}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("units {task.fields[rows]}"),
        TimeRemainingColumn(),
        console=err,
    )
    bar = progress.add_task("", total=None, rows="")
    rows = 0

    def show(finished: int, total: int, done: UnitDone | None) -> None:
        nonlocal rows
        rows += done.rows if done else 0
        progress.update(bar, total=total, completed=finished, rows=f"{rows} rows")

    with user_errors():
        try:
            with progress:
                summary = run(spec, project_id, output, server, text_col, format.value, show)
        except (InputError, DeployRefused) as exc:
            error(str(exc))
            raise typer.Exit(USER_ERROR) from None
    by = f"server {summary.server_id}" if summary.server_id else "pipeline actors"
    say(
        f"wrote {summary.rows} rows ({summary.failed} with an error) to {output} by {by}; "
        f"{summary.skipped} of {summary.units} units were already written"
    )
