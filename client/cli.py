"""The `preannotate` command line: the offline commands, the demo, `up` and `down`; the
commands that talk to a running cluster's API come from `remote.py`.

Every command that fails on bad input prints one `error:` line per problem to stderr and
exits with status 2; nothing it was given is changed.
"""

import json
import sys
import tempfile
import threading
from collections.abc import Iterator
from contextlib import ExitStack, suppress
from itertools import islice
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table
from rich.text import Text

from preannotate.client import remote
from preannotate.client.console import (
    DEBUG,
    USER_ERROR,
    ReportingGroup,
    err,
    error,
    out,
    say,
    user_errors,
)
from preannotate.client.licenses import PublicKeyOption, license_app, verified_license
from preannotate.cluster.http_ingress import default_ingress
from preannotate.cluster.local_head import HeadPorts
from preannotate.configs.errors import ConfigError
from preannotate.configs.project import load_project_config
from preannotate.configs.prompts import ExternalPrompt, PromptLibrary, read_prompt_file
from preannotate.configs.rules import RuleLibrary, read_rule_file
from preannotate.configs.textfiles import existing_file, output_file
from preannotate.hub.catalog import Hub
from preannotate.hub.validation import ValidatedConfig, validate_config
from preannotate.store.tasks_io import DocumentFields, read_task_records

if TYPE_CHECKING:
    from preannotate.annotators.visual_pipeline import VisualPipeline

app = typer.Typer(
    cls=ReportingGroup, help="Pre-annotation serving cluster on Ray.", no_args_is_help=True
)
config_app = typer.Typer(help="Check project configurations.", no_args_is_help=True)
hub_app = typer.Typer(
    help="The Models Hub: models and their predefined labels.", no_args_is_help=True
)
rules_app = typer.Typer(help="The shared rule library.", no_args_is_help=True)
prompts_app = typer.Typer(
    help="The shared prompt library: zero-shot and external LLM prompts.", no_args_is_help=True
)
app.add_typer(config_app, name="config")
app.add_typer(hub_app, name="hub")
app.add_typer(rules_app, name="rules")
app.add_typer(prompts_app, name="prompts")
app.add_typer(license_app, name="license")
app.add_typer(remote.commands)

EXAMPLES = Path(__file__).resolve().parent.parent / "configs" / "examples"


@app.callback()
def main(
    ctx: typer.Context,
    debug: Annotated[
        bool,
        typer.Option(
            "--debug",
            envvar="PREANNOTATE_DEBUG",
            help="show the traceback of an unexpected failure instead of writing it to a file",
        ),
    ] = False,
) -> None:
    """Pre-annotation serving cluster on Ray.

    Exit status: 0 done, 2 refused for something you can fix (one `error:` line per
    problem, nothing changed), 1 an unexpected failure (one `error:` line and the file
    holding its traceback).
    """
    ctx.meta[DEBUG] = debug


def load_validated(path: Path) -> ValidatedConfig:
    return validate_config(load_project_config(path))


@config_app.command("validate")
def config_validate(file: Path, as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Validate a project file (.json) or a labeling config (.xml): exit 0 if valid, 2 if not."""
    with user_errors():
        config = load_validated(file)
    summary = {
        "name": config.project.name,
        "hash": config.hash,
        "models": {name: m.version for name, m in config.models.items()},
        "rules": [r.name for r in config.rules],
        "prompts": {name: p.version for name, p in config.prompts.items()},
        "resources_per_replica": config.replica_resources(),
    }
    if as_json:
        out.print_json(data=summary)
    else:
        out.print(f"[green]valid[/green] {file} (configuration hash {config.hash})")


def _batches(records: Iterator[Any], size: int) -> Iterator[list[Any]]:
    while batch := list(islice(records, size)):
        yield batch


def _progress() -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=err,
        transient=False,
    )


@app.command()
def annotate(
    config: Annotated[Path, typer.Option(help="project file (.json) or labeling config (.xml)")],
    tasks: Annotated[Path, typer.Option(help="tasks as .json, .jsonl or .csv")],
    out_file: Annotated[
        Path | None, typer.Option("--out", help="JSONL output (default stdout)")
    ] = None,
    batch_size: Annotated[int, typer.Option(min=1, max=10_000)] = 64,
    render: Annotated[
        Path | None,
        typer.Option(help="also write one PNG per document page with its boxes to this folder"),
    ] = None,
) -> None:
    """Pre-annotate tasks offline, without a cluster: one JSON line per task. Document
    tasks name their files as `local://<path>` under PREANNOTATE_FILES_ROOT (default: the
    tasks file's folder)."""
    from preannotate.annotators.visual_pipeline import VisualPipeline, pipeline_for
    from preannotate.configs.paths import files_root

    with user_errors():
        tasks = existing_file(tasks, "tasks file")
        if out_file is not None:
            output_file(out_file)
        if render is not None and render.exists() and not render.is_dir():
            raise ConfigError([f"--render {render} is a file; give a folder for the pages"])
        validated = load_validated(config)
        fields = DocumentFields.read_by(validated.labeling)
        total = sum(1 for _ in read_task_records(tasks, fields=fields))
        root = files_root() or tasks.resolve().parent
        pipeline = pipeline_for(validated, root=root)
        if render is not None and not isinstance(pipeline, VisualPipeline):
            raise ConfigError(["--render draws documents: the configuration has no <Image>"])
        sink = out_file.open("w") if out_file else sys.stdout
        failed = 0
        try:
            with _progress() as progress:
                bar = progress.add_task("pre-annotating", total=total)
                for batch in _batches(read_task_records(tasks, fields=fields), batch_size):
                    for task, prediction in zip(batch, pipeline.annotate(batch), strict=True):
                        failed += prediction.error is not None
                        sink.write(json.dumps(prediction.as_json()) + "\n")
                        if render is not None and prediction.error is None:
                            assert isinstance(pipeline, VisualPipeline)
                            _write_pages(render, pipeline, task, prediction.result)
                    progress.advance(bar, len(batch))
        finally:
            if out_file:
                sink.close()
    err.print(
        f"{total - failed} predicted, {failed} failed" + (f" -> {out_file}" if out_file else "")
    )


def _write_pages(
    folder: Path, pipeline: "VisualPipeline", task: dict[str, Any], result: list[dict[str, Any]]
) -> None:
    """`task-<id>-page-<n>.png` for each page of the task's document, boxes drawn."""
    from preannotate.annotators.pipeline import task_data
    from preannotate.annotators.task_pages import rendered_pages

    folder.mkdir(parents=True, exist_ok=True)
    data = task_data(task)
    pages = rendered_pages(pipeline.image, data, result, pipeline.root, pipeline.limits)
    for number, png in pages:
        (folder / f"task-{task['id']}-page-{number}.png").write_bytes(png)


@hub_app.command("list")
def hub_list(as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Models in the hub with their predefined labels."""
    with user_errors():
        models = Hub().models()
    if as_json:
        out.print_json(data=[m.manifest.model_dump() | {"builtin": m.builtin} for m in models])
        return
    table = Table("Model", "Version", "Kind", "License", "Runtime", "Predefined Labels")
    for m in models:
        man = m.manifest
        table.add_row(
            man.name, man.version, man.kind, man.license_scope, man.runtime, ", ".join(man.labels)
        )
    out.print(table)


@hub_app.command("add")
def hub_add(path: Path, replace: bool = False) -> None:
    """Register a model folder (it holds manifest.json); it is copied into the hub."""
    with user_errors():
        model = Hub().add(path, replace=replace)
    out.print(
        f"added {model.name} {model.manifest.version} ({model.manifest.kind}) -> {model.folder}"
    )


@rules_app.command("add")
def rules_add(
    file: Path,
    label: Annotated[str | None, typer.Option(help="label of a dictionary CSV's matches")] = None,
    name: Annotated[
        str | None, typer.Option(help="rule name for a CSV (default: file name)")
    ] = None,
) -> None:
    """Add rules from a JSON file (one rule or a list) or a dictionary CSV."""
    with user_errors():
        library = RuleLibrary()
        for rule in read_rule_file(file, label=label, name=name):
            stored = library.add(rule)
            out.print(
                f"added rule {stored.name} v{stored.version} ({stored.kind} -> {stored.label})"
            )


@rules_app.command("list")
def rules_list(as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Rules in the shared library."""
    with user_errors():
        rules = RuleLibrary().rules()
    if as_json:
        out.print_json(data=[r.model_dump() for r in rules])
        return
    table = Table("Rule", "Version", "Kind", "Label", "Pattern / terms")
    for r in rules:
        what = r.regex if r.regex else f"{len(r.dictionary or {})} entries"
        table.add_row(r.name, str(r.version), r.kind, r.label, what)
    out.print(table)


@prompts_app.command("add")
def prompts_add(file: Path) -> None:
    """Add prompts from a JSON file (one prompt or a list); a changed prompt under a name
    already in the library gets the next version."""
    with user_errors():
        library = PromptLibrary()
        for prompt in read_prompt_file(file):
            stored = library.add(prompt)
            out.print(
                f"added prompt {stored.name} v{stored.version} "
                f"({stored.type} -> {', '.join(stored.labels)})",
                markup=False,
            )


@prompts_app.command("list")
def prompts_list(as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Prompts in the shared library."""
    with user_errors():
        prompts = PromptLibrary().prompts()
    if as_json:
        out.print_json(data=[p.model_dump() for p in prompts])
        return
    table = Table("Prompt", "Version", "Type", "Labels", "Runs on")
    for p in prompts:
        runs_on = f"{p.provider} / {p.model}" if isinstance(p, ExternalPrompt) else p.model
        table.add_row(p.name, str(p.version), p.type, ", ".join(p.labels), runs_on)
    out.print(table)


def print_predictions(tasks: list[dict[str, Any]], predictions: list[dict[str, Any]]) -> None:
    """A readable table: each task's text with its pre-annotations (entities, classes,
    assertion statuses, relations between entities)."""
    table = Table("Task", "Text", "Pre-annotations", show_lines=True)
    for task, prediction in zip(tasks, predictions, strict=True):
        if "error" in prediction:
            found = Text(prediction["error"], style="red")
        else:
            texts = {
                item["id"]: item["value"].get("text")
                for item in prediction["result"]
                if "value" in item
            }
            found = Text("\n").join(_described(item, texts) for item in prediction["result"])
        shown = task["data"].get("text") or " ".join(map(str, task["data"].values()))
        table.add_row(str(task.get("id")), shown, found)
    out.print(table)


def _described(item: dict[str, Any], texts: dict[str, str | None]) -> Text:
    """One result item as `what LABELS (model or rule)`; a relation names its two ends."""
    if item["type"] == "relation":
        what = f"{texts.get(item['from_id'])} -> {texts.get(item['to_id'])}"
        labels = item.get("labels", [])
    else:
        value, boxed = item["value"], item.get("meta", {}).get("text", [])
        what = value.get("text") or " ".join(boxed) or ", ".join(value.get("choices", []))
        labels = value.get("labels") or value.get("rectanglelabels", [])
        if "item_index" in item:
            what += f" (page {item['item_index'] + 1})"
    source = item["provenance"]
    return Text.assemble(
        f"{what} ", (", ".join(labels), "bold"), (f" ({source['type']} {source['name']})", "dim")
    )


def _examples() -> list[tuple[ValidatedConfig, list[dict[str, Any]]]]:
    return [
        (load_validated(file), list(read_task_records(file.parent / "tasks.jsonl")))
        for file in sorted(EXAMPLES.glob("*/project.json"))
    ]


def _example_documents(folder: Path) -> None:
    """The visual example's PDFs and scan, generated into `folder` (none are shipped)."""
    import runpy

    runpy.run_path(str(EXAMPLES / "visual" / "generate.py"))["write_documents"](folder)


def _demo_over_http(
    url: str,
    token: str,
    examples: list[tuple[ValidatedConfig, list[dict[str, Any]]]],
    documents: Path,
) -> None:
    """Each example as a project and a server; the visual one's documents are uploaded,
    and their tasks predicted. Every server is deployed before the first is waited for,
    so their replicas start together rather than one after another."""
    from preannotate.annotators.visual_pipeline import is_visual
    from preannotate.client.api import Client
    from preannotate.configs.files import LOCAL

    with Client(url, token) as client, remote.api_errors(url):
        deployed = []
        with err.status(f"deploying {len(examples)} example projects"):
            for config, tasks in examples:
                project = client.create_project(config.project.model_dump())
                if is_visual(config.labeling):
                    files = [documents / t["data"]["image"].removeprefix(LOCAL) for t in tasks]
                    client.upload_files(project["id"], files)
                    uploaded = client.iter_tasks(project["id"])
                    tasks = [{"id": t["id"], "data": t["data"]} for t in uploaded]
                deployed.append((config, tasks, client.deploy(project["id"])))
        for config, tasks, server in deployed:
            with err.status(f"waiting for {config.project.name} to be ready"):
                client.wait_until_ready(server["id"])
            predictions = client.predict(server["id"], tasks)
            out.rule(
                f"{config.project.name}: {server['id']} (configuration {config.hash}) at {url}"
            )
            print_predictions(tasks, predictions)


@app.command()
def demo(
    offline: Annotated[
        bool, typer.Option(help="run the pipeline in this process, no cluster")
    ] = False,
    keep: Annotated[
        bool, typer.Option(help="keep the demo's API serving afterwards, until Ctrl-C")
    ] = False,
) -> None:
    """Pre-annotate the example projects on a throwaway cluster, over HTTP.

    Starts Ray and the API in this process, deploys the example projects
    (configs/examples/) as servers and pre-annotates their tasks over HTTP;
    --offline runs the same pipeline in this process instead, without a cluster.

    The demo keeps its store, hub and rules in a temporary data directory that is
    removed when it ends: your own data directory, and any cluster that
    `preannotate up` started, stay exactly as they were.
    """
    from preannotate.annotators.visual_pipeline import pipeline_for
    from preannotate.client.launch import throwaway_cluster

    with user_errors(), tempfile.TemporaryDirectory() as folder:
        examples, documents = _examples(), Path(folder)
        _example_documents(documents)
        if offline:
            for config, tasks in examples:
                pipeline = pipeline_for(config, root=documents)
                predictions = [p.as_json() for p in pipeline.annotate(tasks)]
                out.rule(f"{config.project.name}: configuration {config.hash}")
                print_predictions(tasks, predictions)
        else:
            with ExitStack() as cluster:
                with err.status("starting a throwaway Ray cluster and the API"):
                    url, token = cluster.enter_context(throwaway_cluster())
                cluster.callback(err.print, "stopping the demo cluster and removing its data")
                _demo_over_http(url, token, examples, documents)
                if keep:
                    _serve_until_interrupted(url, token)
    _next_steps()


def _next_steps() -> None:
    """What to try after the demo: a cluster of your own, its API docs, the example files."""
    news = EXAMPLES / "news"
    out.print()
    out.print("Next steps:", style="bold")
    for line in (
        "  preannotate up                                 start a cluster that keeps running",
        "  open http://127.0.0.1:8000/docs                its HTTP API (the address `up` prints)",
        f"  preannotate projects create {news / 'project.json'}",
        f"  preannotate tasks import news {news / 'tasks.jsonl'}",
        "  preannotate run news                           deploy and pre-annotate every task",
        "  preannotate down                               stop what `up` started",
    ):
        say(line)


def _serve_until_interrupted(url: str, token: str) -> None:
    """`demo --keep`: leave the demo's API up for a look around, until Ctrl-C."""
    out.print(f"the demo API is at {url} (docs at {url}/docs); in another shell try", markup=False)
    out.print(
        f"  PREANNOTATE_URL={url} PREANNOTATE_TOKEN={token} preannotate servers list", markup=False
    )
    out.print("Ctrl-C stops it and removes its data")
    with suppress(KeyboardInterrupt):
        threading.Event().wait()


RayPort = Annotated[int, typer.Option(min=1, max=65535, help="a local head's GCS port")]
DashboardPort = Annotated[
    int, typer.Option(min=1, max=65535, help="a local head's dashboard port (`ray job submit`)")
]
ClientServerPort = Annotated[
    int, typer.Option(min=1, max=65535, help="a local head's Ray Client port (ray://)")
]


@app.command()
def up(
    address: Annotated[
        str | None,
        typer.Option(envvar="RAY_ADDRESS", help="join this Ray cluster (default: start one here)"),
    ] = None,
    host: Annotated[str, typer.Option(help="HTTP host of the API")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535, help="HTTP port of the API")] = 8000,
    license: Annotated[
        Path | None, typer.Option(help="signed license file: seats, scopes, expiry")
    ] = None,
    license_key: PublicKeyOption = None,
    num_cpus: Annotated[int | None, typer.Option(min=1, help="CPUs of a local head")] = None,
    ray_port: RayPort = HeadPorts.gcs,
    dashboard_port: DashboardPort = HeadPorts.dashboard,
    ray_client_server_port: ClientServerPort = HeadPorts.client_server,
    ingress: Annotated[
        str | None,
        typer.Option(
            help="how HTTP reaches the API on a head started here: haproxy (fast; needs the"
            " haproxy binary) or python (Serve's own proxy); default: haproxy when installed"
        ),
    ] = None,
) -> None:
    """Start (or join) the Ray cluster and serve the HTTP API.

    With no address, a local Ray head starts and keeps running until `preannotate down`.
    Its ports and the API's are checked before anything starts; if a later step fails,
    what this command started is stopped again.
    """
    from preannotate.client.preflight import check_up

    loaded = verified_license(license, license_key) if license else None
    ports = HeadPorts(ray_port, dashboard_port, ray_client_server_port)
    with user_errors():
        check_up(address, host, port, ports)  # refuses at once, before the imports below
        with err.status("starting Ray and the API"):
            from preannotate.client.launch import launch

            launched = launch(
                address, host, port, loaded, num_cpus, ports, ingress or default_ingress()
            )
    url = launched.url
    if launched.joined_running:
        say(
            f"joined the cluster that `preannotate up` started here (Ray at {launched.ray_address})"
        )
    elif launched.head is not None:
        say(
            f"Ray head at {launched.ray_address} (dashboard http://127.0.0.1:{ports.dashboard}), "
            "started for this data directory"
        )
    say(f"API at {url} (docs at {url}/docs); stop with `preannotate down`")
    say(f"admin token (local CLI commands use it already): {launched.token}")
    say("(the same on every `up` here, until `preannotate users rotate-token` replaces it)")


@app.command()
def down() -> None:
    """Stop what `up` started here, and nothing else.

    The API and its servers; and the Ray head, if `up` started one: only that head, other
    Ray clusters on this machine keep running. A cluster `up` only joined keeps running.
    """
    from preannotate.client.teardown import shutdown

    with user_errors(), err.status("stopping"):
        stopped = shutdown()
    if stopped is None:
        error("nothing to stop: `preannotate up` has not run here")
        raise typer.Exit(USER_ERROR)
    say(stopped)
