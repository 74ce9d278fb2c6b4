"""The store on a real SQLite file and a real PostgreSQL server: what the router, scheduler
and CLI rely on. Every test that works through the `store` fixture runs on both backends;
the default location and the bytes of the database file are SQLite's own, and selecting
PostgreSQL and its concurrent schema creation are PostgreSQL's.
"""

import hashlib
import io
import json
import re
import threading
import uuid
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC
from pathlib import Path

import pytest
from sqlalchemy import create_engine, inspect, make_url, text

from preannotate.annotators.results import TaskPrediction
from preannotate.configs.labeling import parse_labeling_config
from preannotate.configs.paths import database_url
from preannotate.store import (
    AddedTasks,
    AlreadyExists,
    InvalidInput,
    InvalidState,
    JobState,
    NotFound,
    Store,
    StoreNotHere,
)
from preannotate.store.db import EncodedJSON
from preannotate.store.tasks_io import DocumentFields, task_data

DATA = Path(__file__).parent / "data" / "store"


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "store" / "preannotate.sqlite"


@pytest.fixture
def postgres_database(postgres_url: str) -> Iterator[str]:
    """A fresh, empty database on the session's PostgreSQL server, as a URL."""
    name = f"test_{uuid.uuid4().hex}"
    admin = create_engine(postgres_url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as connection:
            connection.execute(text(f'CREATE DATABASE "{name}"'))
        yield postgres_url.rsplit("/", 1)[0] + f"/{name}"
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE "{name}" WITH (FORCE)'))
    finally:
        admin.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest, db_path: Path) -> str:
    """The URL of an empty store on each backend (another `Store` on it is another client)."""
    if request.param == "sqlite":
        return f"sqlite:///{db_path}"
    return request.getfixturevalue("postgres_database")


@pytest.fixture
def store(store_url: str) -> Iterator[Store]:
    store = Store(store_url)
    yield store
    store.close()


def span(start: int, end: int, label: str, from_name: str = "label") -> dict:
    return {
        "id": f"{from_name}-{start}-{end}-{label}",
        "from_name": from_name,
        "to_name": "text",
        "type": "labels",
        "value": {"start": start, "end": end, "labels": [label]},
    }


def choice(*choices: str) -> dict:
    return {
        "id": "class",
        "from_name": "class",
        "to_name": "text",
        "type": "choices",
        "value": {"choices": list(choices)},
    }


def relation(from_id: str, to_id: str, label: str) -> dict:
    return {
        "from_id": from_id,
        "to_id": to_id,
        "type": "relation",
        "direction": "right",
        "labels": [label],
    }


def prediction(task_id: int, result: list[dict], **extra) -> dict:
    return {
        "task_id": task_id,
        "result": result,
        "config_hash": "cfg-1",
        "model_version": "ner@1",
        **extra,
    }


def together(*calls: Callable[[], object]) -> list[BaseException]:
    """Run the calls in threads released at the same moment; returns what they raised
    (a thread would swallow it)."""
    barrier = threading.Barrier(len(calls))
    errors: list[BaseException] = []

    def run(call: Callable[[], object]) -> None:
        barrier.wait()
        try:
            call()
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=run, args=(call,)) for call in calls]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return errors


class LineStream(io.TextIOBase):
    """A text stream that reads its lines from an iterator only when asked for them, so a
    test can act in the middle of an import (and a large one needs no large string)."""

    def __init__(self, lines: Iterable[str]) -> None:
        super().__init__()
        self._lines = iter(lines)

    def readable(self) -> bool:
        return True

    def readline(self, size: int | None = -1) -> str:
        return next(self._lines, "")


def add_texts(store: Store, project_id: int, texts: Iterable[str]) -> AddedTasks:
    """Import tasks with these texts as JSONL, the way the task upload route does."""
    lines = (json.dumps({"text": text}) + "\n" for text in texts)
    return store.import_tasks(project_id, LineStream(lines), "jsonl")


def task_ids(store: Store, project_id: int) -> list[int]:
    """Every task id of a project, by id, read a page at a time as a bulk job reads them."""
    ids: list[int] = []
    while page := store.task_documents(project_id, after_id=ids[-1] if ids else 0):
        ids += [row.id for row in page]
    return ids


def project_with_tasks(store: Store, count: int, name: str = "notes") -> tuple[int, list[int]]:
    project = store.create_project(name)
    add_texts(store, project.id, (f"note {i}" for i in range(count)))
    return project.id, task_ids(store, project.id)


def test_default_url_is_a_file_in_the_data_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = tmp_path / "home"
    monkeypatch.setenv("PREANNOTATE_HOME", str(home))
    monkeypatch.delenv("PREANNOTATE_DATABASE_URL", raising=False)
    store = Store()
    try:
        store.create_project("p")
    finally:
        store.close()
    assert (home / "preannotate.sqlite").is_file()


def test_a_relative_data_directory_gives_an_absolute_store_url(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The URL travels to Ray's processes, whose working directories are not this one."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PREANNOTATE_HOME", "relative-home")
    monkeypatch.delenv("PREANNOTATE_DATABASE_URL", raising=False)
    assert database_url() == f"sqlite:///{tmp_path / 'relative-home' / 'preannotate.sqlite'}"


def test_database_url_from_the_environment_selects_postgresql(
    postgres_database: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PREANNOTATE_DATABASE_URL", postgres_database)
    store = Store()
    try:
        assert store.engine.dialect.name == "postgresql"
        project = store.create_project("p")
        assert [p.name for p in store.list_projects()] == ["p"]
        assert store.get_project(project.id).name == "p"
    finally:
        store.close()


def test_stores_starting_together_create_the_schema_once(postgres_database: str) -> None:
    """The router, the scheduler and the CLI may all open a new database at once; on
    PostgreSQL each would otherwise find no tables and all but one CREATE TABLE fail."""
    stores: list[Store] = []
    errors = together(*[lambda: stores.append(Store(postgres_database))] * 4)
    for opened in stores:
        opened.close()
    assert errors == []
    store = Store(postgres_database)
    try:
        assert store.create_project("p").id == 1
    finally:
        store.close()


def test_a_replica_opens_the_store_without_touching_the_schema(store_url: str) -> None:
    """A replica (or the scheduler, or the router) opens the store the control plane made,
    without the DDL (and the write lock it takes) while a bulk job may be writing. Where it
    finds no SQLite file it runs on another machine than the store: it says so, and makes
    no empty store of its own."""
    if store_url.startswith("sqlite"):
        with pytest.raises(StoreNotHere, match="not on this machine .* PREANNOTATE_DATABASE_URL"):
            Store(store_url, create_schema=False)
        assert not Path(make_url(store_url).database or "").exists()
    else:
        replica = Store(store_url, create_schema=False)
        assert inspect(replica.engine).get_table_names() == []
        replica.close()
    control_plane = Store(store_url)
    control_plane.create_project("p")
    control_plane.close()
    replica = Store(store_url, create_schema=False)
    try:
        assert [p.name for p in replica.list_projects()] == ["p"]
    finally:
        replica.close()


def test_a_database_from_an_older_version_gains_the_new_columns(store_url: str) -> None:
    """`preannotate up` on an existing data directory: servers recorded before a column
    existed stay readable, with the column empty."""
    store = Store(store_url)
    project = store.create_project("p")
    store.record_server(config={}, config_hash="h", project_ids=[project.id])
    with store.engine.begin() as connection:
        for column in ("snapshot", "message"):
            connection.execute(text(f"ALTER TABLE servers DROP COLUMN {column}"))
    store.close()
    reopened = Store(store_url)
    try:
        server = reopened.get_server("server-1")
        assert (server.snapshot, server.message, server.project_ids) == (None, None, [project.id])
        failed = reopened.set_server_status("server-1", "failed", "not restored: no license")
        assert failed.message == "not restored: no license"
    finally:
        reopened.close()


def test_config_versions(store: Store) -> None:
    project = store.create_project("notes")
    assert store.current_config(project.id) is None

    assert store.set_config(project.id, {"labels": ["DRUG"]}, "h1") == 1
    first = store.current_config(project.id)
    assert first is not None
    assert store.set_config(project.id, {"labels": ["DRUG"]}, "h1") == 1  # same hash
    unchanged = store.current_config(project.id)
    assert unchanged is not None and unchanged.id == first.id  # no new row: servers stay current
    assert store.set_config(project.id, {"labels": ["DRUG", "DOSE"]}, "h2") == 2

    current = store.current_config(project.id)
    assert current is not None
    assert (current.version, current.config_hash) == (2, "h2")
    assert current.config == {"labels": ["DRUG", "DOSE"]}
    # Going back to an earlier configuration is a new version, not a rewrite of history.
    assert store.set_config(project.id, {"labels": ["DRUG"]}, "h1") == 3
    current = store.current_config(project.id)
    assert current is not None
    assert (current.version, current.config_hash) == (3, "h1")
    with pytest.raises(NotFound, match="project 999 not found"):
        store.current_config(999)


def test_project_names_are_unique_and_missing_ids_are_named(store: Store) -> None:
    store.create_project("notes")
    with pytest.raises(AlreadyExists, match="'notes' already exists"):
        store.create_project("notes")
    with pytest.raises(NotFound, match="project 999 not found"):
        store.get_project(999)
    with pytest.raises(NotFound, match="task 12345 not found"):
        store.predictions_for_task(12345)
    with pytest.raises(NotFound, match="project 999 not found"):
        add_texts(store, 999, ["orphan"])
    with pytest.raises(NotFound, match="server 'server-9' not found"):
        store.get_server("server-9")
    with pytest.raises(NotFound, match="job 5 not found"):
        store.set_job_state(5, "running")


def test_import_json_jsonl_and_csv(store: Store) -> None:
    project = store.create_project("notes")

    added = store.import_tasks(project.id, DATA / "tasks.json")
    assert added.count == 3
    store.import_tasks(project.id, DATA / "tasks.jsonl")
    with open(DATA / "tasks.csv", encoding="utf-8", newline="") as stream:
        store.import_tasks(project.id, stream)  # an open stream; format from its name

    tasks = store.task_summaries(project.id, limit=100)
    assert [task.data for task in tasks] == [
        {"text": "Aspirin 81 mg daily."},
        {"text": "No known allergies.", "source": "note-17"},
        {"text": "Patient denies chest pain.", "source": "flat"},
        {"text": "Metformin 500 mg twice a day."},
        {"text": "Blood pressure 120/80."},
        {"text": "Follow up in two weeks."},
        {"text": "Ibuprofen, 400 mg, as needed.", "source": "clinic-a", "language": "en"},
        {"text": "Two lines:\nfirst and second.", "source": "clinic-b", "language": "en"},
        {"text": "Paracetamol at night.", "source": "clinic-c", "language": "fr"},
    ]
    # The store numbers tasks itself: the file's id 17 is not taken over.
    assert [task.id for task in tasks] == list(range(added.first_id, added.first_id + 9))
    assert tasks[0].created_at.tzinfo == UTC


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("bad_line.jsonl", r"bad_line\.jsonl line 3: not valid JSON"),
        ("missing_text.json", r"missing_text\.json task 2: task has no text"),
        ("missing_text.csv", r"missing_text\.csv line 3: task has no text"),
        ("no_text_column.csv", r"no 'text', 'image' or 'pdf' column \(columns: body, source\)"),
    ],
)
def test_bad_file_names_the_line_and_imports_nothing(store: Store, name: str, message: str) -> None:
    project = store.create_project("notes")
    add_texts(store, project.id, ["already here"])

    with pytest.raises(InvalidInput, match=message):
        store.import_tasks(project.id, DATA / name)

    assert [row.data["text"] for row in store.task_documents(project.id)] == ["already here"]


def test_tasks_hold_their_document_where_the_projects_configuration_reads_it(
    store: Store,
) -> None:
    """A project whose `<Text>` reads `$review` imports tasks (JSON and CSV, and an
    annotated document) with a `review` and no `text`; a task without a review, or with a
    blank one, is refused naming the field."""
    reviews = store.create_project("reviews")
    xml = (
        '<View><Labels name="label" toName="review"><Label value="ORG"/></Labels>'
        '<Text name="review" value="$review"/></View>'
    )
    store.set_config(reviews.id, {"name": "reviews", "labeling_config": xml}, "h1")
    as_json = io.StringIO(json.dumps([{"data": {"review": "Acme ships fast."}}]))
    assert store.import_tasks(reviews.id, as_json, "json").count == 1
    as_csv = io.StringIO("review,stars\nAcme broke twice.,1\n")
    assert store.import_tasks(reviews.id, as_csv, "csv").count == 1
    _, created = store.complete_document(reviews.id, {"review": "Acme again."}, ["review"], [])
    assert created
    titles = io.StringIO(json.dumps([{"data": {"text": "a text, no review"}}]))
    with pytest.raises(InvalidInput, match="titles.json task 1: task has no text in 'review'"):
        store.import_tasks(reviews.id, titles, "json", "titles.json")
    blank = io.StringIO("review,stars\nAcme again.,5\n ,1\n")
    with pytest.raises(InvalidInput, match="t.csv line 3: task has no text in 'review'"):
        store.import_tasks(reviews.id, blank, "csv", "t.csv")
    with pytest.raises(InvalidInput, match="t.csv: no 'review' column"):
        store.import_tasks(reviews.id, io.StringIO("text\nno review\n"), "csv", "t.csv")
    assert [row.data for row in store.task_documents(reviews.id)] == [
        {"review": "Acme ships fast."},
        {"review": "Acme broke twice.", "stars": "1"},
        {"review": "Acme again."},
    ]
    unconfigured = store.create_project("plain")
    with pytest.raises(InvalidInput, match="give a non-empty 'text' field"):
        store.import_tasks(unconfigured.id, io.StringIO('[{"review": "x"}]'), "json")


@pytest.mark.parametrize(
    ("xml", "holds", "lacks", "message"),
    [
        (  # a field only annotators classify is not required; the one models read is
            '<View><Labels name="l" toName="body"><Label value="ORG"/></Labels>'
            '<Choices name="c" toName="title"><Choice value="A"/></Choices>'
            '<Text name="body" value="$body"/><Text name="title" value="$title"/></View>',
            {"body": "Acme"},
            {"title": "Acme", "body": " "},
            "task has no text in 'body'",
        ),
        (  # nothing pre-annotated: the fields shown are the document
            '<View><Text name="review" value="$review"/></View>',
            {"review": "Acme"},
            {"text": "Acme"},
            "task has no text in 'review'",
        ),
        (  # a document's pages, listed
            '<View><RectangleLabels name="r" toName="page"><Label value="SIGNATURE"/>'
            '</RectangleLabels><Image name="page" valueList="$pages"/></View>',
            {"pages": ["p1.png", "p2.png"]},
            {"pages": "p1.png"},
            "task has no list of pages in 'pages'",
        ),
    ],
)
def test_a_task_holds_the_fields_pre_annotation_reads(
    xml: str, holds: dict, lacks: dict, message: str
) -> None:
    fields = DocumentFields.read_by(parse_labeling_config(xml))
    assert task_data(holds, "t", fields) == holds
    with pytest.raises(InvalidInput, match=f"^t: {re.escape(message)}$"):
        task_data(lacks, "t", fields)


def test_unknown_file_type_is_refused(store: Store, tmp_path: Path) -> None:
    project = store.create_project("notes")
    path = tmp_path / "tasks.txt"
    path.write_text("hello\n")
    with pytest.raises(InvalidInput, match="cannot tell the format"):
        store.import_tasks(project.id, path)
    assert store.import_tasks(project.id, DATA / "tasks.jsonl", fmt="jsonl").count == 3


def test_keyset_paging_returns_every_task_once(store: Store) -> None:
    project = store.create_project("big")
    other = store.create_project("other")
    add_texts(store, other.id, ["not mine"])
    added = add_texts(store, project.id, (f"note {i}" for i in range(2000)))
    add_texts(store, other.id, ["not mine either"])
    assert added.count == 2000
    assert store.count_tasks(project.id) == 2000

    seen: list[int] = []  # the task list, as the HTTP API pages it
    while page := store.task_summaries(project.id, after_id=seen[-1] if seen else 0, limit=300):
        seen += [task.id for task in page]
    assert len(seen) == 2000
    assert seen == sorted(set(seen))
    assert seen[0] == added.first_id and seen[-1] == added.last_id
    documents: list[tuple[int, str]] = []  # what a bulk job reads, in other page sizes
    after_id = 0
    while page := store.task_documents(project.id, after_id=after_id, limit=700):
        documents += [(row.id, row.data["text"]) for row in page]
        after_id = page[-1].id
    assert [task_id for task_id, _ in documents] == seen
    assert {text for _, text in documents} == {f"note {i}" for i in range(2000)}
    with pytest.raises(InvalidInput, match="page limit must be at least 1, not 0"):
        store.task_summaries(project.id, limit=0)


def test_jobs_read_plain_task_rows_and_find_ids_outside_the_project(store: Store) -> None:
    project, ids = project_with_tasks(store, 1500)
    other, other_ids = project_with_tasks(store, 2, "other")

    page = store.task_documents(project, after_id=ids[0], limit=2)
    assert [(row.id, row.data) for row in page] == [
        (ids[1], {"text": "note 1"}),
        (ids[2], {"text": "note 2"}),
    ]
    picked = store.task_documents(project, limit=10, among=[ids[5], other_ids[0], ids[3]])
    assert [row.id for row in picked] == [ids[3], ids[5]]
    assert store.missing_task_ids(project, [*ids, other_ids[1], 10**9]) == [other_ids[1], 10**9]
    assert store.missing_task_ids(other, other_ids) == []


def test_a_reader_works_while_a_large_import_is_being_written(store: Store, store_url: str) -> None:
    """The reader is neither blocked nor shown a half-done import. On SQLite that is WAL's
    doing: the import outgrows the page cache, which in rollback-journal mode would lock
    the file."""
    project = store.create_project("notes")
    reader = Store(store_url)  # as another process would
    seen_mid_import: list[int] = []
    long_text = "Patient reports mild headache. " * 160  # ~5 kB: 2,000 tasks exceed the cache

    def texts() -> Iterator[str]:
        for i in range(2500):
            if i == 2100:  # two chunks already inserted, not committed
                seen_mid_import.append(reader.count_tasks(project.id))
            yield f"{i}: {long_text}"

    try:
        add_texts(store, project.id, texts())
        assert seen_mid_import == [0]
        assert reader.count_tasks(project.id) == 2500
    finally:
        reader.close()


def test_task_summaries_count_predictions_and_completions(store: Store) -> None:
    project_id, (first, second, third) = project_with_tasks(store, 3)
    store.add_predictions([prediction(first, []), prediction(first, []), prediction(third, [])])
    store.create_completion(first, [span(0, 4, "DRUG")])

    summaries = store.task_summaries(project_id, after_id=0, limit=10)
    counts = {s.id: (s.predictions, s.completions) for s in summaries}
    assert counts == {first: (2, 1), second: (0, 0), third: (1, 0)}
    assert [s.id for s in store.task_summaries(project_id, after_id=first, limit=1)] == [second]


def test_each_batch_adds_a_new_version_per_task(store: Store) -> None:
    _, (a, b, c) = project_with_tasks(store, 3)
    assert store.add_predictions([prediction(a, [span(0, 4, "DRUG")]), prediction(b, [])]) == 2
    assert store.add_predictions([prediction(b, []), prediction(c, [])]) == 2
    assert store.add_predictions([prediction(a, [], server_id="server-2", score=0.5)]) == 1

    assert [p.version for p in store.predictions_for_task(a)] == [1, 2]
    assert [p.version for p in store.predictions_for_task(b)] == [1, 2]
    assert [p.version for p in store.predictions_for_task(c)] == [1]
    first, latest = store.predictions_for_task(a)
    assert first.result == [span(0, 4, "DRUG")]
    assert (latest.server_id, latest.score, latest.config_hash) == ("server-2", 0.5, "cfg-1")


def test_a_result_encoded_where_it_was_made_is_stored_as_the_same_json(store: Store) -> None:
    """A bulk batch's results arrive as JSON text; they read back as the items they encode
    (on PostgreSQL too, whose JSON column parses them), and text that is not a list of
    items is refused."""
    _, (a, b) = project_with_tasks(store, 2)
    items = [span(0, 4, "DRUG"), span(5, 9, "DOSE")]
    encoded = TaskPrediction(task_id=a, model_version="ner@1", result=items).as_encoded_json()
    assert isinstance(encoded["result"], str)
    assert store.add_predictions([prediction(a, EncodedJSON(encoded["result"]))]) == 1
    assert store.predictions_for_task(a)[0].result == items

    with pytest.raises(InvalidInput, match="must be a list of result items"):
        store.add_predictions([prediction(b, EncodedJSON('{"start": 0}'))])
    with pytest.raises(TypeError, match="takes JSON text, not list"):
        EncodedJSON(items)  # its repr would pass for JSON
    assert store.predictions_for_task(b) == []


def test_concurrent_writers_never_share_a_version(store: Store, store_url: str) -> None:
    _, task_ids = project_with_tasks(store, 2)
    other = Store(store_url)
    errors: list[BaseException] = []

    def write(target: Store) -> None:
        try:
            for _ in range(15):
                target.add_predictions([prediction(task_id, []) for task_id in task_ids])
        except BaseException as error:  # reported below; a thread would swallow it
            errors.append(error)

    threads = [threading.Thread(target=write, args=(s,)) for s in (store, other, store)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    other.close()

    assert errors == []
    for task_id in task_ids:
        assert [p.version for p in store.predictions_for_task(task_id)] == list(range(1, 46))


def test_concurrent_configuration_saves_get_distinct_versions(store: Store) -> None:
    project = store.create_project("notes")
    versions: dict[int, int] = {}

    def save(n: int) -> None:
        versions[n] = store.set_config(project.id, {"labels": [str(n)]}, f"h{n}")

    assert together(*[lambda n=n: save(n) for n in range(6)]) == []
    assert sorted(versions.values()) == [1, 2, 3, 4, 5, 6]
    current = store.current_config(project.id)
    assert current is not None
    last = next(n for n, version in versions.items() if version == 6)
    assert (current.version, current.config_hash, current.config) == (
        6,
        f"h{last}",
        {"labels": [str(last)]},
    )


def test_concurrent_batches_of_a_job_count_every_prediction(store: Store) -> None:
    """A bulk job writes several batches at once; its `done` must not lose any of them."""
    project_id, task_ids = project_with_tasks(store, 60)
    job = store.create_job(project_id, "preannotate", total=60)

    def write(tasks: list[int]) -> None:
        for task_id in tasks:
            store.add_predictions([prediction(task_id, [], job_id=job.id)], job.id)

    assert together(*[lambda i=i: write(task_ids[i::4]) for i in range(4)]) == []
    assert store.get_job(job.id).done == 60
    assert store.task_ids_with_job_prediction(job.id, task_ids) == set(task_ids)


def test_racing_job_transitions_cannot_rewrite_history(store: Store) -> None:
    """A cancel and a success arriving together: one wins, the other is refused."""
    project_id, _ = project_with_tasks(store, 1)
    for _ in range(10):
        job = store.create_job(project_id, "preannotate")
        store.set_job_state(job.id, "running")
        errors = together(
            lambda job_id=job.id: store.set_job_state(job_id, "succeeded"),
            lambda job_id=job.id: store.set_job_state(job_id, "cancelled"),
        )
        assert [type(error) for error in errors] == [InvalidState]
        assert store.get_job(job.id).state in errors[0].args[0]


def test_a_job_writes_each_task_once(store: Store) -> None:
    project_id, (a, b, c) = project_with_tasks(store, 3)
    job = store.create_job(project_id, "preannotate", total=3)
    batch = [prediction(a, [], job_id=job.id), prediction(b, [], job_id=job.id)]

    assert store.add_predictions(batch) == 2
    assert store.add_predictions(batch) == 0  # a resumed job resending its batch
    assert store.add_predictions([*batch, prediction(c, [], job_id=job.id)]) == 1
    assert store.add_predictions([prediction(a, [])]) == 1  # an interactive call still adds

    assert store.task_ids_with_job_prediction(job.id, [a, b, c]) == {a, b, c}
    assert [p.job_id for p in store.predictions_for_task(a)] == [job.id, None]
    with pytest.raises(NotFound, match="job 99 not found"):
        store.add_predictions([prediction(a, [], job_id=99)])
    with pytest.raises(NotFound, match="task 999 not found"):
        store.add_predictions([prediction(a, [], job_id=job.id), prediction(999, [])])
    with pytest.raises(InvalidInput, match=r"prediction 1: missing fields \['config_hash'\]"):
        store.add_predictions([{"task_id": a, "result": [], "model_version": "x"}])


def test_nan_is_refused_in_json_documents(store: Store) -> None:
    """Not JSON: PostgreSQL would reject it and exports could not carry it, so no backend
    stores it."""
    _, (task,) = project_with_tasks(store, 1)
    nan_score = {**span(0, 4, "DRUG"), "value": {"confidence": float("nan")}}
    with pytest.raises(InvalidInput, match="NaN and Infinity are not JSON"):
        store.add_predictions([prediction(task, []), prediction(task, [nan_score])])
    assert store.predictions_for_task(task) == []
    project = store.create_project("other")
    # Python's json module reads the non-standard token Infinity as a float.
    tasks = io.StringIO('{"text": "ok"}\n{"text": "bad", "weight": Infinity}\n')
    with pytest.raises(InvalidInput, match="NaN and Infinity are not JSON"):
        store.import_tasks(project.id, tasks, "jsonl")
    assert store.count_tasks(project.id) == 0


def test_compare_predictions(store: Store) -> None:
    _, (task, other_task) = project_with_tasks(store, 2)
    drug, dose = span(0, 7, "DRUG"), span(8, 14, "DOSE")
    before = [
        drug,
        dose,
        span(20, 25, "DRUG"),
        choice("medication"),
        relation(drug["id"], dose["id"], "has_dose"),
    ]
    renamed_drug = span(0, 7, "TREATMENT")  # a new item id, as a new run would generate
    after = [
        renamed_drug,
        dose,
        span(30, 36, "DOSE"),
        choice("allergy"),
        relation(renamed_drug["id"], dose["id"], "has_dose"),
    ]
    store.add_predictions([prediction(task, before), prediction(other_task, [])])
    store.add_predictions([prediction(task, after)])
    a, b = (p.id for p in store.predictions_for_task(task))

    diff = store.compare_predictions(a, b)

    assert diff["added"] == [span(30, 36, "DOSE")]
    assert diff["removed"] == [span(20, 25, "DRUG")]
    assert [(c["a"], c["b"]) for c in diff["changed"]] == [
        (drug, renamed_drug),
        (choice("medication"), choice("allergy")),
    ]
    assert diff["unchanged"] == 2  # the DOSE span and the relation between the same spans
    assert store.compare_predictions(a, a) == {
        "added": [],
        "removed": [],
        "changed": [],
        "unchanged": 5,
    }
    other = store.predictions_for_task(other_task)[0].id
    with pytest.raises(InvalidInput, match="different tasks"):
        store.compare_predictions(a, other)


def test_compare_pairs_several_items_on_one_span(store: Store) -> None:
    _, (task,) = project_with_tasks(store, 1)
    entity, present = span(0, 5, "PROBLEM"), span(0, 5, "Present")
    store.add_predictions([prediction(task, [entity, present])])
    store.add_predictions([prediction(task, [span(0, 5, "Absent"), entity])])
    a, b = (p.id for p in store.predictions_for_task(task))

    diff = store.compare_predictions(a, b)

    assert diff["unchanged"] == 1
    assert diff["changed"] == [{"a": present, "b": span(0, 5, "Absent")}]
    assert diff["added"] == diff["removed"] == []


def test_completion_copied_from_a_prediction(store: Store) -> None:
    _, (task, other_task) = project_with_tasks(store, 2)
    store.add_predictions([prediction(task, [span(0, 4, "DRUG")])])
    predicted = store.predictions_for_task(task)[0]
    reviewer = store.create_user("ana")

    copied = store.create_completion(task, copied_from=predicted.id, created_by=reviewer.id)
    written = store.create_completion(task, [span(0, 4, "TREATMENT")], created_by=reviewer.id)

    stored = store.completions_for_task(task)
    assert [c.id for c in stored] == [copied.id, written.id]
    assert (stored[0].result, stored[0].copied_from_prediction_id) == (
        [span(0, 4, "DRUG")],
        predicted.id,
    )
    assert (stored[1].result, stored[1].copied_from_prediction_id) == (
        [span(0, 4, "TREATMENT")],
        None,
    )
    assert {c.created_by for c in stored} == {reviewer.id}
    assert store.get_prediction(predicted.id).result == [span(0, 4, "DRUG")]
    assert store.completions_for_task(other_task) == []

    with pytest.raises(InvalidInput, match=f"belongs to task {task}, not task {other_task}"):
        store.create_completion(other_task, copied_from=predicted.id)
    with pytest.raises(InvalidInput, match="either a result or a prediction"):
        store.create_completion(task, [], copied_from=predicted.id)
    with pytest.raises(NotFound, match="prediction 404 not found"):
        store.create_completion(task, copied_from=404)
    with pytest.raises(NotFound, match="user 77 not found"):
        store.create_completion(task, [], created_by=77)


def test_tokens_resolve_to_their_user(store: Store) -> None:
    ana = store.create_user("ana")
    bob = store.create_user("bob", is_admin=True)
    token = store.issue_token(ana.id)
    second = store.issue_token(ana.id)
    bob_token = store.issue_token(bob.id)

    assert store.user_for_token(token).name == "ana"
    assert store.user_for_token(second).name == "ana"
    resolved = store.user_for_token(bob_token)
    assert (resolved.name, resolved.is_admin) == ("bob", True)
    assert store.user_for_token(token + "x") is None
    with pytest.raises(AlreadyExists, match="user named 'ana'"):
        store.create_user("ana")


def test_tokens_are_stored_hashed(db_path: Path) -> None:
    """Read the database's files themselves (SQLite): the clear token is nowhere in them."""
    store = Store(f"sqlite:///{db_path}")
    token = store.issue_token(store.create_user("ana").id)
    assert store.user_for_token(token).name == "ana"

    store.close()  # checkpoints the WAL into the main file
    stored = b"".join(p.read_bytes() for p in db_path.parent.iterdir())
    assert token.encode() not in stored
    assert hashlib.sha256(token.encode()).hexdigest().encode() in stored


def test_roles(store: Store) -> None:
    project = store.create_project("notes")
    ana = store.create_user("ana")
    assert store.role_of(ana.id, project.id) is None

    store.set_role(ana.id, project.id, "annotator")
    assert store.role_of(ana.id, project.id) == "annotator"
    store.set_role(ana.id, project.id, "manager")  # replaces, never duplicates
    assert store.role_of(ana.id, project.id) == "manager"

    for name in ("bob", "cy", "dee", "eve", "fay"):  # several requests for a new member
        user = store.create_user(name)
        join = [lambda user_id=user.id: store.set_role(user_id, project.id, "annotator")] * 4
        assert together(*join) == []
        assert store.role_of(user.id, project.id) == "annotator"

    with pytest.raises(InvalidInput, match="unknown role 'boss'; expected one of owner"):
        store.set_role(ana.id, project.id, "boss")
    with pytest.raises(NotFound, match="user 77 not found"):
        store.set_role(77, project.id, "owner")


def test_job_progress_states_and_recovery(store: Store) -> None:
    project_id, _ = project_with_tasks(store, 1)
    job = store.create_job(project_id, "preannotate", params={"batch": 8}, total=500)
    train = store.create_job(project_id, "train")
    assert (job.state, job.done, job.errors) == ("queued", 0, [])

    store.set_job_state(job.id, "running")
    store.record_job_progress(job.id, done=90)
    for start in range(0, 150, 50):
        errors = [{"task_id": t, "error": f"boom {t}"} for t in range(start, start + 50)]
        store.record_job_progress(job.id, done=0, failed=50, errors=errors)
    job = store.get_job(job.id)
    assert (job.done, job.failed) == (90, 150)
    assert len(job.errors) == 100
    assert job.errors[0] == {"task_id": 50, "error": "boom 50"}  # the latest are kept
    assert job.errors[-1] == {"task_id": 149, "error": "boom 149"}
    assert job.started_at is not None and job.finished_at is None

    requeued = store.set_job_state(job.id, JobState.QUEUED)  # by a restarted scheduler
    assert (requeued.state, requeued.finished_at, requeued.done) == ("queued", None, 90)
    store.set_job_state(job.id, "running")
    assert [j.id for j in store.unfinished_jobs()] == [job.id, train.id]
    cancelled = store.set_job_state(job.id, "cancelled", reason="user asked")
    assert (cancelled.reason, cancelled.finished_at is not None) == ("user asked", True)
    assert [j.id for j in store.unfinished_jobs()] == [train.id]
    assert [j.id for j in store.list_jobs(project_id, states=["cancelled"])] == [job.id]
    with pytest.raises(InvalidState, match=f"job {job.id} is cancelled; it cannot become queued"):
        store.set_job_state(job.id, JobState.QUEUED)

    store.set_job_state(train.id, "running")
    store.set_job_state(train.id, "succeeded")
    with pytest.raises(
        InvalidState, match=f"job {train.id} is succeeded; it cannot become running"
    ):
        store.set_job_state(train.id, "running")
    with pytest.raises(InvalidInput, match="unknown job kind 'export'"):
        store.create_job(project_id, "export")
    assert json.dumps(store.get_job(job.id).as_dict())  # ready for the HTTP API


def test_servers(store: Store) -> None:
    first = store.create_project("a")
    second = store.create_project("b")
    config = {"models": ["ner"]}
    one = store.record_server(
        config=config,
        config_hash="h1",
        project_ids=[first.id, second.id],
        resources={"num_cpus": 0.5, "license_token": 1},
    )
    two = store.record_server(config=config, config_hash="h2", project_ids=[second.id])
    assert (one.id, two.id) == ("server-1", "server-2")
    assert one.project_ids == [first.id, second.id]
    assert one.status == "deploying"

    assert store.set_server_status("server-1", "ready").status == "ready"
    assert [s.id for s in store.list_servers(project_id=first.id)] == ["server-1"]
    deleted = store.mark_server_deleted("server-1")
    assert deleted.deleted_at is not None
    assert [s.id for s in store.list_servers()] == ["server-2"]
    assert [s.id for s in store.list_servers(include_deleted=True)] == ["server-1", "server-2"]
    with pytest.raises(InvalidState, match="'server-1' was deleted"):
        store.set_server_status("server-1", "ready")
    with pytest.raises(InvalidInput, match="unknown server status 'up'"):
        store.set_server_status("server-2", "up")

    # Redeploying under a known id makes it active again with its new projects.
    again = store.record_server(
        server_id="server-1", config=config, config_hash="h3", project_ids=[first.id]
    )
    assert (again.deleted_at, again.project_ids, again.config_hash) == (None, [first.id], "h3")
    assert store.record_server(config=config, config_hash="h4").id == "server-3"
    assert store.get_server("server-1").as_dict()["project_ids"] == [first.id]


def _exportable(store: Store) -> tuple[int, int, int, tuple[int, int]]:
    """A project with one task holding a prediction, a completion copied from it by a
    reviewer and one written with another result by nobody in particular."""
    project_id, (task, empty_task) = project_with_tasks(store, 2)
    store.add_predictions([prediction(task, [span(0, 4, "DRUG")], score=0.9)])
    predicted = store.predictions_for_task(task)[0]
    reviewer = store.create_user("ana")
    copied = store.create_completion(task, copied_from=predicted.id, created_by=reviewer.id)
    written = store.create_completion(task, [span(0, 4, "TREATMENT")])
    return project_id, task, predicted.id, (copied.id, written.id)


def test_generative_ai_lab_export(store: Store) -> None:
    project_id, task, prediction_id, (copied_id, written_id) = _exportable(store)

    # Through JSON text, as the export route streams it.
    exported = json.loads(json.dumps(list(store.export_project(project_id, "generative-ai-lab"))))

    assert len(exported) == 2
    first = exported[0]
    assert (first["id"], first["data"]) == (task, {"text": "note 0"})
    [predicted] = first["predictions"]
    assert predicted["id"] == prediction_id
    assert predicted["result"] == [span(0, 4, "DRUG")]
    assert (predicted["score"], predicted["model_version"]) == (0.9, "ner@1")
    assert predicted["created_username"] == "preannotate"
    copied, written = first["completions"]
    assert (copied["id"], copied["result"]) == (copied_id, [span(0, 4, "DRUG")])
    assert copied["copied_from"] == f"prediction: {prediction_id}"
    assert copied["created_username"] == "ana"
    assert (written["id"], written["result"]) == (written_id, [span(0, 4, "TREATMENT")])
    assert "copied_from" not in written and "created_username" not in written
    assert (exported[1]["predictions"], exported[1]["completions"]) == ([], [])


def test_label_studio_export(store: Store) -> None:
    project_id, task, _, (copied_id, written_id) = _exportable(store)

    exported = list(store.export_project(project_id, "label-studio"))

    assert exported[0] == {
        "id": task,
        "data": {"text": "note 0"},
        "predictions": [{"model_version": "ner@1", "score": 0.9, "result": [span(0, 4, "DRUG")]}],
        "annotations": [
            {"id": copied_id, "result": [span(0, 4, "DRUG")]},
            {"id": written_id, "result": [span(0, 4, "TREATMENT")]},
        ],
    }
    assert len(exported) == 2
    with pytest.raises(InvalidInput, match="unknown export format 'coco'"):
        store.export_project(project_id, "coco")  # type: ignore[arg-type]
    with pytest.raises(NotFound, match="project 999 not found"):
        store.export_project(999)


def test_a_label_studio_export_imports_its_annotations_but_not_the_skipped_ones(
    store: Store,
) -> None:
    project = store.create_project("from-ls")
    exported = [
        {
            "id": 300,
            "data": {"text": "Aspirin at night."},
            "annotations": [
                {"id": 1, "result": [span(0, 7, "DRUG")], "was_cancelled": False},
                {"id": 2, "result": [], "was_cancelled": True},
            ],
        }
    ]
    added = store.import_tasks(project.id, io.StringIO(json.dumps(exported)), "json")
    [completion] = store.completions_for_task(added.first_id)
    assert completion.result == [span(0, 7, "DRUG")]


def test_export_pages_through_a_large_project(store: Store) -> None:
    project_id, task_ids = project_with_tasks(store, 1200)
    store.add_predictions([prediction(t, []) for t in task_ids[::100]])

    exported = store.export_project(project_id)

    assert [t["id"] for t in exported] == task_ids
    counts = [len(t["predictions"]) for t in store.export_project(project_id, "label-studio")]
    assert sum(counts) == 12
