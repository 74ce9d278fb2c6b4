"""How a bulk job cuts its tasks into batches: by count, by text size, and spread over
several batches when the job is small. Runs `BulkJob` on a real SQLite store with the
news pipeline called in this process, without Ray."""

import asyncio
import io
import json
from pathlib import Path
from typing import Any, NamedTuple

from preannotate.annotators.pipeline import Pipeline
from preannotate.configs.project import load_project_config
from preannotate.hub.validation import validate_config
from preannotate.scheduler.bulk import BATCH_CHARS, IN_FLIGHT, MIN_BATCH_SIZE, BulkJob, batches
from preannotate.store import JobState, Store
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


def test_a_small_job_goes_out_in_several_batches_and_stores_every_prediction(
    tmp_path: Path,
) -> None:
    config = load_project_config(ROOT / "configs" / "examples" / "news" / "project.json")
    pipeline = Pipeline(validate_config(config))
    store = Store(f"sqlite:///{tmp_path / 'store.sqlite'}")
    project = store.create_project("news")
    lines = [
        json.dumps({"data": {"text": f"Tim Cook visited Paris on day {n}."}}) for n in range(100)
    ]
    store.import_tasks(project.id, io.BytesIO("\n".join(lines).encode()), "jsonl")
    job = store.create_job(project.id, "preannotate", params={}, total=100)
    sizes: list[int] = []

    async def predict(tasks: list[dict[str, Any]]) -> list[dict[str, Any]]:
        sizes.append(len(tasks))
        return [p.as_encoded_json() for p in pipeline.annotate(tasks)]

    asyncio.run(BulkJob(store, job.id, "server-1", predict).run())

    assert sizes == [MIN_BATCH_SIZE] * 6 + [4]  # 100 tasks over about IN_FLIGHT batches
    assert len(sizes) <= IN_FLIGHT
    done = store.get_job(job.id)
    assert (done.state, done.done, done.failed) == (JobState.SUCCEEDED, 100, 0)
    first = store.task_documents(project.id, 0, 1)[0].id
    [stored] = store.predictions_for_task(first)
    assert ("Tim Cook", "PERSON") in {
        (i["value"]["text"], i["value"]["labels"][0]) for i in stored.result
    }
