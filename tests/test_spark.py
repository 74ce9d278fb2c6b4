"""Pre-annotating Spark DataFrames and Parquet/JSONL/CSV files on the real cluster, and the
Spark NLP runtime's mapping of Spark NLP's own annotations.

One RayDP session and one deployed server serve the whole module (a JVM start costs tens of
seconds); the mapping, the input checks and the refusal without a jar need neither.
"""

import json
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq
import pytest
import ray
from sparknlp.annotation import Annotation
from typer.testing import CliRunner

from preannotate.annotators.pipeline import check_runnable
from preannotate.annotators.spans import Source, Span
from preannotate.annotators.spark_nlp import (
    JAR_ENV,
    chunk_relations,
    chunk_spans,
    chunk_statuses,
    document_scores,
    jar_problem,
)
from preannotate.client.cli import app
from preannotate.hub.catalog import Hub, HubError
from preannotate.hub.validation import validate_config
from tests.conftest import ModelMaker, RayCluster, labels_xml, project

pytestmark = pytest.mark.timeout(600)
NAMES = ["Barack Obama", "Angela Merkel", "Paris", "Google", "Tokyo", "the United Nations"]
runner = CliRunner()


def rows(count: int, start: int = 0) -> list[dict]:
    return [
        {"doc": i, "text": f"{NAMES[i % 6]} met {NAMES[(i + 1) % 6]} in {NAMES[(i + 2) % 6]}."}
        for i in range(start, start + count)
    ]


def write_parquet(path: Path, records: list[dict], row_group_size: int = 1000) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(records), path, row_group_size=row_group_size)
    return path


def read_parts(folder: Path) -> list[dict]:
    out = []
    for part in sorted(folder.glob("part-*")):
        if part.suffix == ".parquet":
            out += pq.read_table(part).to_pylist()
        else:
            out += [json.loads(line) for line in part.read_text().splitlines()]
    return out


def labels_of(row: dict) -> list[tuple[str, str]]:
    return [(i["value"]["text"], i["value"]["labels"][0]) for i in json.loads(row["prediction"])]


# -- on the cluster ------------------------------------------------------------------------


@dataclass(frozen=True)
class Project:
    id: int
    config_hash: str
    server_id: str | None


@pytest.fixture(scope="module")
def admin(ray_cluster: RayCluster) -> Iterator[httpx.Client]:
    headers = {"Authorization": f"Bearer {ray_cluster.admin_token}"}
    with httpx.Client(base_url=ray_cluster.url, timeout=120, headers=headers) as client:
        yield client


def make_project(admin: httpx.Client, labels: tuple[str, ...]) -> tuple[int, str]:
    config = {
        "name": f"spark-{uuid.uuid4().hex[:8]}",
        "labeling_config": labels_xml(
            *(f'value="{lab}" model="ner_general_en_sm"' for lab in labels)
        ),
        "resources": {"num_cpus": 0.5},
    }
    created = admin.post("/projects", json=config)
    assert created.status_code == 201, created.text
    project_id = created.json()["id"]
    options = admin.get(f"/projects/{project_id}/preannotate/options").json()
    return project_id, options["config_hash"]


@pytest.fixture(scope="module")
def served(admin: httpx.Client) -> Iterator[Project]:
    """A project whose server is deployed and ready."""
    project_id, config_hash = make_project(admin, ("PERSON", "GPE", "ORG"))
    server = admin.post(f"/projects/{project_id}/deploy").json()["id"]
    deadline = time.monotonic() + 180
    while admin.get(f"/servers/{server}").json()["status"] != "ready":
        assert time.monotonic() < deadline, admin.get(f"/servers/{server}").json()
        time.sleep(0.3)
    yield Project(project_id, config_hash, server)
    admin.delete(f"/servers/{server}")


@pytest.fixture(scope="module")
def spark(ray_cluster: RayCluster) -> Iterator:
    from preannotate.spark import spark_session, stop_spark

    yield spark_session("preannotate-tests", executor_memory="500M")
    stop_spark()


def test_dataframe_preannotated_by_the_projects_server(
    spark, served: Project, tmp_path: Path
) -> None:
    from preannotate.spark import preannotate

    source = write_parquet(tmp_path / "in" / "docs.parquet", rows(60))
    df = spark.read.parquet(str(source)).repartition(3)
    out = preannotate(df, served.id, text_col="text", output=str(tmp_path / "out"))
    got = sorted(out.collect(), key=lambda r: r["doc"])

    assert [r["doc"] for r in got] == list(range(60))
    assert set(out.columns) >= {"doc", "text", "prediction", "score", "model_version", "error"}
    assert len(list((tmp_path / "out").glob("part-*.parquet"))) == 3  # one file per partition
    first = got[0].asDict()
    assert first["error"] is None and first["config_hash"] == served.config_hash
    assert ("Barack Obama", "PERSON") in labels_of(first)
    assert ("Paris", "GPE") in labels_of(first)


def test_a_users_jvm_options_add_to_the_java_17_flags() -> None:
    from preannotate.spark.session import java_options_configs, with_ours

    ours = java_options_configs()
    theirs = {"spark.driver.extraJavaOptions": "-Dmine=1", "spark.sql.shuffle.partitions": "4"}
    merged = with_ours(ours, theirs)
    assert merged["spark.driver.extraJavaOptions"] == (
        ours["spark.driver.extraJavaOptions"] + " -Dmine=1"
    )
    assert merged["spark.executor.extraJavaOptions"] == ours["spark.executor.extraJavaOptions"]
    assert merged["spark.sql.shuffle.partitions"] == "4"


def test_the_driver_jvm_logs_into_this_ray_sessions_folder(spark) -> None:
    """Not `/tmp/ray/session_latest/logs`, RayDP's agent's default, which fails to start
    the driver when that link points to a session since cleaned away."""
    logs = Path(ray._private.worker._global_node.get_logs_dir_path())
    assert spark._jvm.java.lang.System.getProperty("ray.logging.dir") == str(logs)
    assert logs.is_dir()


def test_files_without_spark_in_each_format(served: Project, tmp_path: Path) -> None:
    from preannotate.spark import preannotate_files

    records = rows(30)
    inputs = tmp_path / "in"
    inputs.mkdir()
    (inputs / "docs.jsonl").write_text("\n".join(json.dumps(r) for r in records) + "\n")
    pa_csv.write_csv(pa.Table.from_pylist(records), inputs / "docs.csv")
    write_parquet(inputs / "docs.parquet", records, row_group_size=7)
    results = {}
    for name, fmt in [("docs.jsonl", "jsonl"), ("docs.csv", "parquet"), ("docs.parquet", "jsonl")]:
        ds = preannotate_files(inputs / name, served.id, tmp_path / name, format=fmt)
        results[name] = {r["doc"]: labels_of(r) for r in ds.take_all()}
    assert results["docs.jsonl"] == results["docs.csv"] == results["docs.parquet"]
    assert sorted(results["docs.csv"]) == list(range(30))
    assert ("Angela Merkel", "PERSON") in results["docs.csv"][1]


def test_a_project_without_a_server_runs_on_pipeline_actors(
    admin: httpx.Client, tmp_path: Path
) -> None:
    from ray.util.state import list_actors

    from preannotate.spark import run_files

    project_id, config_hash = make_project(admin, ("PERSON",))
    source = write_parquet(tmp_path / "docs.parquet", rows(12))
    summary = run_files(source, project_id, tmp_path / "out")

    assert summary.server_id is None and (summary.rows, summary.failed) == (12, 0)
    written = read_parts(tmp_path / "out")
    assert {r["config_hash"] for r in written} == {config_hash}
    assert ("Barack Obama", "PERSON") in labels_of(written[0])
    actors = list_actors(filters=[("class_name", "=", "PipelineActor")])
    assert actors and all(a.state == "DEAD" for a in actors)  # their resources are free again


def test_resume_skips_written_units_and_writes_nothing_twice(
    served: Project, tmp_path: Path
) -> None:
    from preannotate.spark import run_files

    inputs = tmp_path / "in"
    for n in range(4):
        write_parquet(inputs / f"part{n}.parquet", rows(20, start=20 * n))
    out = tmp_path / "out"
    first = run_files(inputs, served.id, out)
    assert (first.units, first.skipped, first.rows) == (4, 0, 80)
    # A crash after two units: the others are gone, one left a half-written temporary file.
    parts = sorted(out.glob("part-*.parquet"))
    kept = {p: (p.stat().st_ino, p.stat().st_mtime_ns) for p in parts[:2]}
    for lost in parts[2:]:
        lost.unlink()
    (out / f".{parts[2].name}.0123.tmp").write_bytes(b"PAR1 half")

    again = run_files(inputs, served.id, out)

    assert (again.units, again.skipped, again.rows) == (4, 2, 40)
    assert {p: (p.stat().st_ino, p.stat().st_mtime_ns) for p in parts[:2]} == kept
    docs = [r["doc"] for r in read_parts(out)]
    assert sorted(docs) == list(range(80))  # every row once
    assert not list(out.glob(".*.tmp"))


def test_rows_that_fail_land_in_the_error_column(served: Project, tmp_path: Path) -> None:
    from preannotate.spark import run_files

    records = rows(10)
    records[3]["text"] = None
    records[7]["text"] = "x" * 1_000_001
    source = write_parquet(tmp_path / "docs.parquet", records)
    summary = run_files(source, served.id, tmp_path / "out")

    assert (summary.rows, summary.failed) == (10, 2)
    by_doc = {r["doc"]: r for r in read_parts(tmp_path / "out")}
    assert "no text" in by_doc[3]["error"] and by_doc[3]["prediction"] is None
    assert "1,000,000" in by_doc[7]["error"]
    assert by_doc[4]["error"] is None and labels_of(by_doc[4])


def test_deploying_a_spark_nlp_model_without_the_jar_is_refused(
    ray_cluster: RayCluster, admin: httpx.Client, tmp_path: Path
) -> None:
    folder = spark_nlp_model(tmp_path, "ner_spark_nlp_refused")
    Hub(ray_cluster.hub_root).add(folder)
    config = {
        "name": f"spark-nlp-{uuid.uuid4().hex[:8]}",
        "labeling_config": labels_xml('value="PER" model="ner_spark_nlp_refused"'),
    }
    project_id = admin.post("/projects", json=config).json()["id"]
    refused = admin.post(f"/projects/{project_id}/deploy")
    assert refused.status_code == 422 and JAR_ENV in refused.json()["detail"]
    assert not [s for s in admin.get("/servers").json() if project_id in s["projects"]]


# -- without a cluster ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda d: d / "missing.parquet", "does not exist"),
        (lambda d: (d / "notes.txt", (d / "notes.txt").write_text("x"))[0], "must be one of"),
        (lambda d: (d / "a.csv", (d / "a.csv").write_text("body\nhi\n"))[0], "no column 'text'"),
    ],
)
def test_cli_refuses_bad_input_with_one_error_line(tmp_path: Path, make, message: str) -> None:
    result = runner.invoke(
        app, ["run", "1", "--input", str(make(tmp_path)), "--output", str(tmp_path / "out")]
    )
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert result.exit_code == 2, result.output
    assert len(lines) == 1 and lines[0].startswith("error:") and message in lines[0]
    assert not (tmp_path / "out").exists()


TEXT = "Patient denies chest pain but reports fever since Monday."


def at(part: str) -> tuple[int, int]:
    """Spark NLP's offsets of a part of TEXT: begin and end, both inclusive."""
    begin = TEXT.index(part)
    return begin, begin + len(part) - 1


def chunk(part: str, entity: str | None, confidence: str = "0.9") -> Annotation:
    meta = {"sentence": "0", "confidence": confidence} | ({"entity": entity} if entity else {})
    return Annotation("chunk", *at(part), part, meta, [])


def test_spark_nlp_chunks_become_whole_spans() -> None:
    source = Source("model", "ner_clinical", "1")
    annotations = [
        chunk("fever", "PROBLEM", "0.8"),
        chunk("chest pain", "PROBLEM"),
        chunk("chest pain", "PROBLEM"),  # the same chunk from a second output column
        chunk("Patient", None),  # a chunk without a label (a chunker's) is no entity
        Annotation("token", *at("chest"), "chest", {"sentence": "0"}, []),
    ]
    spans = chunk_spans(annotations, source)
    assert [(TEXT[s.start : s.end], s.label, s.confidence) for s in spans] == [
        ("chest pain", "PROBLEM", 0.9),
        ("fever", "PROBLEM", 0.8),
    ]


def test_spark_nlp_assertions_relations_and_categories_map_to_our_chunks() -> None:
    source = Source("model", "m", "1")
    chunks = [Span(at(p)[0], at(p)[1] + 1, "PROBLEM", source) for p in ("chest pain", "fever")]
    chunks.append(Span(at("Monday")[0], at("Monday")[1] + 1, "DATE", source))
    annotations = [
        Annotation("assertion", *at("chest pain"), "absent", {"confidence": "0.97"}, []),
        Annotation("assertion", *at("fever"), "present", {"confidence": "0.9"}, []),
        Annotation(
            "category",
            at("fever")[0],
            at("Monday")[1],
            "started_on",
            {
                "entity1_begin": str(at("fever")[0]),
                "entity1_end": str(at("fever")[1]),
                "entity2_begin": str(at("Monday")[0]),
                "entity2_end": str(at("Monday")[1]),
                "confidence": "0.88",
            },
            [],
        ),
        Annotation(
            "category",
            0,
            len(TEXT) - 1,
            "urgent",
            {"sentence": "0", "urgent": "0.8", "routine": "0.2"},
            [],
        ),
    ]
    assert chunk_statuses(annotations, chunks) == ["absent", "present", None]
    assert chunk_relations(annotations, chunks) == [(1, 2, "started_on")]
    assert document_scores(annotations) == {"urgent": 0.8, "routine": 0.2}
    assert document_scores([Annotation("category", 0, 9, "spam", {"confidence": "0.7"}, [])]) == {
        "spam": 0.7
    }


def spark_nlp_model(tmp_path: Path, name: str, labels: list[str] | None = None) -> Path:
    folder = tmp_path / name
    (folder / "pipeline").mkdir(parents=True)
    manifest = {
        "name": name,
        "version": "1",
        "kind": "ner",
        "labels": labels or ["PER"],
        "embeddings": "none",
        "runtime": "spark-nlp",
        "path": "pipeline",
        "resources": {"cpus": 0.5, "gpus": 0, "memory_mb": 2048},
    }
    (folder / "manifest.json").write_text(json.dumps(manifest))
    return folder


def test_spark_nlp_models_are_refused_before_loading_without_the_jar(
    make_model: ModelMaker, hub: Hub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    make_model("ner_spark", labels=["PER"], runtime="spark-nlp", embeddings="none")
    config = validate_config(project(labels_xml('value="PER" model="ner_spark"')), hub)
    monkeypatch.delenv(JAR_ENV, raising=False)
    with pytest.raises(HubError, match=JAR_ENV):
        check_runnable(config)
    monkeypatch.setenv(JAR_ENV, str(tmp_path / "spark-nlp-missing.jar"))
    with pytest.raises(HubError, match=f"{JAR_ENV} names .*spark-nlp-missing.jar"):
        check_runnable(config)


@pytest.mark.skipif(
    jar_problem() is not None, reason=f"needs the Spark NLP jar: set {JAR_ENV} to its path"
)
def test_a_saved_spark_nlp_pipeline_annotates_offline(tmp_path: Path) -> None:
    from pyspark.ml import Pipeline as SparkPipeline
    from sparknlp.annotator import EntityRulerApproach, Tokenizer
    from sparknlp.base import DocumentAssembler

    from preannotate.annotators.runtimes import load_runtime
    from preannotate.annotators.spark_nlp import spark_nlp_session
    from preannotate.hub.catalog import HubModel, read_manifest

    folder = spark_nlp_model(tmp_path, "ner_rules_spark", ["PER"])
    patterns = tmp_path / "patterns.jsonl"
    patterns.write_text(json.dumps({"label": "PER", "patterns": ["Alice", "Bob"]}) + "\n")
    spark = spark_nlp_session(512)
    stages = [
        DocumentAssembler().setInputCol("text").setOutputCol("document"),
        Tokenizer().setInputCols(["document"]).setOutputCol("token"),
        EntityRulerApproach()
        .setInputCols(["document", "token"])
        .setOutputCol("entities")
        .setPatternsResource(str(patterns), "JSON_LINES"),
    ]
    fitted = SparkPipeline(stages=stages).fit(spark.createDataFrame([("x",)], ["text"]))
    fitted.write().overwrite().save(str(folder / "pipeline"))
    runtime = load_runtime(HubModel(read_manifest(folder), folder))
    text = "Alice called Bob."
    spans = runtime.entities([text])[0]
    assert [(text[s.start : s.end], s.label) for s in spans] == [("Alice", "PER"), ("Bob", "PER")]
