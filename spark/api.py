"""Pre-annotate a Spark DataFrame or Parquet/JSON Lines/CSV files on the Ray cluster.

The driver plans units (partitions or files), skips those already written, and runs the
rest as Ray tasks, a few at a time; it holds unit descriptions only, never rows, so its
memory does not grow with the input. Results come back as a Spark DataFrame
(`preannotate`) or a Ray Dataset (`preannotate_files`) read from the output folder.
"""

import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import ray

from preannotate.configs.paths import data_dir
from preannotate.scheduler.actor import find_scheduler
from preannotate.spark.outputs import Format, Output, check_free_names
from preannotate.spark.predictors import ActorPredictor, ServerPredictor, pipeline_actors
from preannotate.spark.session import connected
from preannotate.spark.sources import (
    FORMATS,
    InputError,
    Unit,
    dataframe_keys,
    file_units,
    staged_units,
)
from preannotate.spark.units import Batching, UnitDone, annotate_unit

if TYPE_CHECKING:
    from pyspark.sql import DataFrame

UNITS_IN_FLIGHT = 2
ACTOR_START_S = 600.0


@dataclass(frozen=True)
class Summary:
    units: int
    skipped: int
    """Units a previous run had already written."""
    rows: int
    failed: int
    """Rows written with an error instead of a prediction."""
    output: Output
    keys: list[str]
    """The units' names: their files are `output.path(key)`."""
    server_id: str | None
    """The server that annotated, or None when pipeline actors did."""


@dataclass(frozen=True)
class Plan:
    """Where a project's batches go, decided once before any unit runs."""

    predictor: ServerPredictor | ActorPredictor
    server_id: str | None
    text_keys: tuple[str, ...]


Progress = Callable[[int, int, UnitDone | None], None]
"""Called with (units finished, units in all, the unit just finished or None at start)."""


def _scheduler() -> Any:
    connected()
    scheduler = find_scheduler()
    if scheduler is None:
        raise InputError(
            "no pre-annotation cluster is running here: start one with `preannotate up`"
        )
    return scheduler


def _ask(call: ray.ObjectRef) -> Any:
    """The scheduler's answer; what it refused is raised as itself (ConfigError,
    NotFound, DeployRefused), not wrapped in Ray's task error."""
    try:
        return ray.get(call)
    except ray.exceptions.RayTaskError as exc:
        if isinstance(exc.cause, Exception):
            raise exc.cause from None
        raise


def plan(project: int, server: str | None = None, actors: int = 1) -> Plan:
    """The project's server (the one asked for, else a ready one with its configuration),
    or `actors` pipeline actors asking for one replica's resources when none is ready."""
    scheduler = _scheduler()
    pipeline = _ask(scheduler.project_pipeline.remote(project))
    keys = tuple(pipeline["text_keys"])
    options = _ask(scheduler.preannotate_options.remote(project))
    servers = {s["id"]: s for s in options["servers"] if s["status"] != "deleted"}
    if server is not None:
        if server not in servers:
            raise InputError(
                f"server {server} does not serve project {project}'s current configuration"
            )
        if servers[server]["status"] != "ready":
            raise InputError(f"server {server} is {servers[server]['status']}, not ready")
        return Plan(ServerPredictor(server), server, keys)
    ready = [s for s in servers.values() if s["status"] == "ready"]
    if ready:
        return Plan(ServerPredictor(ready[0]["id"]), ready[0]["id"], keys)
    predictor = pipeline_actors(pipeline, actors)
    try:
        ray.get([a.__ray_ready__.remote() for a in predictor.actors], timeout=ACTOR_START_S)
    except BaseException:
        predictor.close()
        raise
    return Plan(predictor, None, keys)


def run_units(
    keys: list[str],
    todo: list[Unit],
    output: Output,
    plan: Plan,
    text_col: str,
    progress: Progress | None = None,
) -> Summary:
    """Run the units not written yet (`todo`, of those named `keys`), UNITS_IN_FLIGHT at a time; a
    unit that fails for a reason other than its batches (unreadable input, a full disk)
    stops the run, and the units written so far stay for the next run."""
    Path(output.folder).mkdir(parents=True, exist_ok=True)
    batching = Batching(text_col, plan.text_keys)
    total = len(keys)
    finished, rows, failed = total - len(todo), 0, 0
    if progress:
        progress(finished, total, None)
    running: list[ray.ObjectRef] = []
    queue = list(reversed(todo))
    try:
        while queue or running:
            while queue and len(running) < UNITS_IN_FLIGHT:
                running.append(annotate_unit.remote(queue.pop(), output, plan.predictor, batching))
            ready, running = ray.wait(running, num_returns=1)
            done: UnitDone = _ask(ready[0])
            finished, rows, failed = finished + 1, rows + done.rows, failed + done.failed
            if progress:
                progress(finished, total, done)
    finally:
        for ref in running:
            ray.cancel(ref)
    return Summary(total, total - len(todo), rows, failed, output, keys, plan.server_id)


def run_dataframe(
    df: "DataFrame",
    project: int,
    output: Output | None = None,
    server: str | None = None,
    text_col: str = "text",
    name: str | None = None,
    actors: int = 1,
    progress: Progress | None = None,
) -> Summary:
    """Pre-annotate a DataFrame of a RayDP session into `output` (default: a folder of the
    data directory named after the input). Spark's executors write the partitions to a
    staging folder next to the output only when some still need annotating; it is removed
    once every partition is written."""
    from preannotate.spark.session import is_raydp

    if not is_raydp(df.sparkSession):
        raise InputError(
            "the DataFrame must come from a Spark session on Ray: "
            "use preannotate.spark.spark_session()"
        )
    check_free_names(df.columns)
    key, keys = dataframe_keys(df, text_col, name)
    output = output or Output(str(data_dir() / "spark" / key))
    staging = Path(output.folder) / f".staging-{key}"
    chosen = plan(project, server, actors)
    try:
        if all(output.written(k) for k in keys):
            return run_units(keys, [], output, chosen, text_col, progress)
        units = staged_units(df, keys, staging)
        todo = [u for u in units if not output.written(u.key)]
        summary = run_units(keys, todo, output, chosen, text_col, progress)
        shutil.rmtree(staging)
        return summary
    finally:
        chosen.predictor.close()


def preannotate(
    df: "DataFrame",
    project: int,
    server: str | None = None,
    text_col: str = "text",
    output: str | None = None,
    format: Format = "parquet",
    name: str | None = None,
    actors: int = 1,
) -> "DataFrame":
    """The DataFrame's rows with `prediction` (result JSON), `score`, `model_version`,
    `config_hash` and `error` added, annotated by the project's server (or, with none
    deployed, `actors` pipeline actors). Each partition is written to a file of its own
    under `output`, so a re-run on the same input skips the partitions already written.
    `df` must come from a RayDP session (`preannotate.spark.spark_session()`)."""
    summary = run_dataframe(
        df, project, Output(output, format) if output else None, server, text_col, name, actors
    )
    paths = [str(p) for key in summary.keys if (p := summary.output.path(key)).is_file()]
    reader = df.sparkSession.read
    return reader.parquet(*paths) if summary.output.format == "parquet" else reader.json(paths)


def run_files(
    path: str | Path,
    project: int,
    output: str | Path,
    server: str | None = None,
    text_col: str = "text",
    format: Format = "parquet",
    actors: int = 1,
    progress: Progress | None = None,
) -> Summary:
    """Pre-annotate Parquet, JSON Lines or CSV files (a file or a folder) without Spark."""
    units = file_units(Path(path), text_col)
    out = Output(str(output), format)
    todo = [u for u in units if not out.written(u.key)]
    chosen = plan(project, server, actors)
    try:
        return run_units([u.key for u in units], todo, out, chosen, text_col, progress)
    finally:
        chosen.predictor.close()


def preannotate_files(
    path: str | Path,
    project: int,
    output: str | Path,
    server: str | None = None,
    text_col: str = "text",
    format: Format = "parquet",
    actors: int = 1,
) -> "ray.data.Dataset":
    """`run_files`, with the written rows back as a Ray Dataset."""
    summary = run_files(path, project, output, server, text_col, format, actors)
    return _written([summary.output.path(key) for key in summary.keys], format)


def _written(paths: list[Path], format: Format) -> "ray.data.Dataset":
    """The written files as a Dataset of one block per file, read here. Ray Data's readers
    (and `from_arrow`) start tasks that each ask for a whole CPU, which wait for ever while
    the server's replicas and Spark's executors hold every CPU of the cluster."""
    import pyarrow.json as pa_json
    import pyarrow.parquet as pq

    read = pq.read_table if format == "parquet" else pa_json.read_json
    return ray.data.from_blocks([read(path) for path in paths])


TABLE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*){0,2}")


def check_input(spec: str, text_col: str) -> Path | str:
    """A path that exists (its files checked now), or a Spark table name; anything else is
    refused before any cluster is contacted."""
    path = Path(spec)
    if path.exists():
        file_units(path, text_col)
        return path
    if TABLE_NAME.fullmatch(spec) and path.suffix.lower() not in FORMATS:
        return spec
    raise InputError(f"input {spec} does not exist (and is not a Spark table name)")


def run_input(
    spec: Path | str,
    project: int,
    output: str | Path,
    server: str | None = None,
    text_col: str = "text",
    format: Format = "parquet",
    progress: Progress | None = None,
) -> Summary:
    """What `preannotate run --input` runs: files through Ray alone, a table through RayDP."""
    if isinstance(spec, Path):
        return run_files(spec, project, output, server, text_col, format, progress=progress)
    from pyspark.errors import AnalysisException

    from preannotate.spark.session import spark_session

    try:
        df = spark_session().table(spec)
    except AnalysisException as exc:
        raise InputError(f"cannot read table {spec}: {exc.getMessage()}") from None
    out = Output(str(output), format)
    return run_dataframe(
        df, project, out, server, text_col, name=f"table:{spec}", progress=progress
    )
