"""How a bulk job cuts its tasks into batches (by count, by text size, spread over several
batches when the job is small) and how many it keeps in flight. Runs `BulkJob` on a real
SQLite store with the news pipeline called in this process, without Ray."""

import asyncio
import io
import json
from pathlib import Path
from typing import Any, NamedTuple

import pytest

from preannotate.annotators.pipeline import Pipeline
from preannotate.configs.project import load_project_config
from preannotate.hub.validation import validate_config
from preannotate.scheduler.bulk import (
    BATCH_CHARS,
    IN_FLIGHT,
    MAX_BULK_PER_REPLICA,
    MIN_BATCH_SIZE,
    BulkJob,
    batches,
    in_flight_for,
)
from preannotate.store import JobState, Store
from preannotate.store.models import Server
from tests.conftest import ROOT


class Doc(NamedTuple):
    id: int
    data: Any


def test_batches_hold_at_most_their_size_and_their_characters() -> None:
    short = [Doc(i, {"text": "x" * 10}) for i in range(10)]
    assert [len(b) for b in batches(short, 4)] == [4, 4, 2]

    long = [Doc(i, {"text": "y" * 400, "title": "z" * 100}) for i in range(5)]
    assert [len(b) for b in batches(long, 4, chars=1_000)] == [2, 2, 1]  # 500 each
    huge = [Doc(0, {"text": "w" * (BATCH_CHARS + 1)}), *short[:2]]
    assert [len(b) for b in batches(huge, 4)] == [1, 2]  # a task longer than the limit alone
    assert [d.id for b in batches(long, 4, chars=1_000) for d in b] == [0, 1, 2, 3, 4]


def server(replicas: int = 1, autoscaling: dict[str, Any] | None = None) -> Server:
    return Server(config={"resources": {"autoscaling": autoscaling}}, replicas=replicas)


def test_a_server_with_more_replicas_gets_more_batches_in_flight() -> None:
    assert in_flight_for(server(1)) == in_flight_for(server(4)) == IN_FLIGHT
    assert in_flight_for(server(6)) == 12  # two for each replica's bulk process
    scaling = {"min_replicas": 1, "max_replicas": 5, "target_ongoing_requests": 4}
    assert in_flight_for(server(1, scaling)) == 20  # enough for Serve to scale up to 5
    small = {"min_replicas": 0, "max_replicas": 2, "target_ongoing_requests": 1.5}
    assert in_flight_for(server(0, small)) == IN_FLIGHT
    greedy = {"min_replicas": 1, "max_replicas": 2, "target_ongoing_requests": 500}
    assert in_flight_for(server(1, greedy)) == 2 * MAX_BULK_PER_REPLICA  # room for predict


@pytest.fixture(scope="module")
def pipeline() -> Pipeline:
    config = load_project_config(ROOT / "configs" / "examples" / "news" / "project.json")
    return Pipeline(validate_config(config))


class RecordingServer:
    """A server that answers after a moment (the job sends more batches meanwhile) with the
    pipeline's predictions, recording each batch's size and the most it held at once."""

    def __init__(self, pipeline: Pipeline):
        self.pipeline = pipeline
        self.sizes: list[int] = []
        self.running = self.peak = 0

    async def __call__(self, tasks: list[dict[str, Any]]) -> list[dict[str, Any]]:
        self.sizes.append(len(tasks))
        self.running += 1
        self.peak = max(self.peak, self.running)
        await asyncio.sleep(0.05)
        self.running -= 1
        return [p.as_encoded_json() for p in self.pipeline.annotate(tasks)]


def run_job(
    tmp_path: Path, pipeline: Pipeline, count: int, done: int = 0, **options: int
) -> tuple[Store, int, RecordingServer]:
    """A job over `count` news tasks, the first `done` of them already predicted by it (as
    for a resumed job), run to its end: (the store, the job's id, its server)."""
    store = Store(f"sqlite:///{tmp_path / 'store.sqlite'}")
    project = store.create_project("news")
    lines = [
        json.dumps({"data": {"text": f"Tim Cook visited Paris on day {n}."}}) for n in range(count)
    ]
    store.import_tasks(project.id, io.BytesIO("\n".join(lines).encode()), "jsonl")
    job = store.create_job(project.id, "preannotate", params={}, total=count)
    earlier = store.task_documents(project.id, 0, done) if done else []
    rows = [
        {"task_id": t.id, "job_id": job.id, "result": [], "config_hash": "c", "model_version": "c"}
        for t in earlier
    ]
    store.add_predictions(rows, job.id)
    server = RecordingServer(pipeline)
    asyncio.run(BulkJob(store, job.id, "server-1", server, **options).run())
    return store, job.id, server


def test_a_small_job_goes_out_in_several_batches_and_stores_every_prediction(
    tmp_path: Path, pipeline: Pipeline
) -> None:
    store, job_id, server = run_job(tmp_path, pipeline, 100)

    assert server.sizes == [MIN_BATCH_SIZE] * 6 + [4]  # 100 tasks over about IN_FLIGHT batches
    assert server.peak == len(server.sizes)  # all of them at once
    done = store.get_job(job_id)
    assert (done.state, done.done, done.failed) == (JobState.SUCCEEDED, 100, 0)
    first = store.task_documents(done.project_id, 0, 1)[0].id
    [stored] = store.predictions_for_task(first)
    found = {(i["value"]["text"], i["value"]["labels"][0]) for i in stored.result}
    assert ("Tim Cook", "PERSON") in found


def test_a_job_keeps_as_many_batches_in_flight_as_it_is_given(
    tmp_path: Path, pipeline: Pipeline
) -> None:
    store, job_id, server = run_job(tmp_path, pipeline, 400, in_flight=12)

    assert server.sizes == [34] * 11 + [26] and server.peak == 12
    assert store.get_job(job_id).done == 400


def test_a_resumed_job_spreads_what_is_left(tmp_path: Path, pipeline: Pipeline) -> None:
    store, job_id, server = run_job(tmp_path, pipeline, 1000, done=900)

    assert server.sizes == [MIN_BATCH_SIZE] * 6 + [4]  # the 100 left, not 1,000 / IN_FLIGHT
    assert store.get_job(job_id).done == 1000


def test_a_job_cancelled_before_it_starts_stays_cancelled_and_sends_nothing(
    tmp_path: Path, pipeline: Pipeline
) -> None:
    """A restarted scheduler reads the unfinished jobs, then starts them; one cancelled in
    between is left as it is."""
    store = Store(f"sqlite:///{tmp_path / 'store.sqlite'}")
    project = store.create_project("news")
    store.import_tasks(project.id, io.BytesIO(b'{"text": "Tim Cook visited Paris."}'), "jsonl")
    job = store.create_job(project.id, "preannotate", params={}, total=1)
    store.set_job_state(job.id, JobState.CANCELLED, "user asked")
    server = RecordingServer(pipeline)
    asyncio.run(BulkJob(store, job.id, "server-1", server).run())
    assert server.sizes == []
    cancelled = store.get_job(job.id)
    assert (cancelled.state, cancelled.reason, cancelled.done) == ("cancelled", "user asked", 0)


def test_a_job_cancelled_while_it_starts_ends_cancelled_and_sends_nothing(
    tmp_path: Path, pipeline: Pipeline
) -> None:
    """A cancel (or its server's delete) that comes while the job reads its row and marks
    itself running ends it as cancelled, with the reason, rather than leaving it queued."""
    store = Store(f"sqlite:///{tmp_path / 'store.sqlite'}")
    project = store.create_project("news")
    store.import_tasks(project.id, io.BytesIO(b'{"text": "Tim Cook visited Paris."}'), "jsonl")
    job = store.create_job(project.id, "preannotate", params={}, total=1)
    server = RecordingServer(pipeline)

    async def cancel_while_starting() -> None:
        runner = BulkJob(store, job.id, "server-1", server)
        runner.cancel_reason = "server server-1 was deleted"
        started = asyncio.create_task(runner.run())
        await asyncio.sleep(0)  # the job now reads its row, in a thread
        started.cancel()
        await asyncio.gather(started, return_exceptions=True)

    asyncio.run(cancel_while_starting())
    assert server.sizes == []
    ended = store.get_job(job.id)
    assert (ended.state, ended.reason) == ("cancelled", "server server-1 was deleted")
