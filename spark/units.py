"""One unit pre-annotated on a Ray worker: read in batches, annotated, written, renamed.

A few batches are in flight at once. A batch whose call fails is sent again after a pause;
tasks the pipeline answered with an error are sent again too; what still fails after
ATTEMPTS lands in the `error` column of its rows, and the unit goes on.
"""

import time
from collections import deque
from dataclasses import dataclass
from typing import Any, Protocol

import pyarrow as pa
import ray

from preannotate.spark.outputs import Output, check_free_names, with_predictions
from preannotate.spark.sources import InputError, Unit, check_text_column

Json = dict[str, Any]
ATTEMPTS = 3
RETRY_PAUSE_S = 0.5
UNIT_CPUS = 0
"""A unit task mostly waits for its batches. It reserves no CPU, so it never waits for one
held by the server's replicas or Spark's executors; the driver bounds how many run."""


class Predictor(Protocol):
    def submit(self, tasks: list[Json]) -> Any: ...

    def result(self, call: Any) -> list[Json]: ...


@dataclass(frozen=True)
class UnitDone:
    key: str
    rows: int
    failed: int


@dataclass(frozen=True)
class Batching:
    text_col: str
    text_keys: tuple[str, ...]
    """The task data keys the project's configuration reads its text from."""
    batch_size: int = 128
    in_flight: int = 4


def _tasks(texts: list[Any], keys: tuple[str, ...]) -> list[Json]:
    return [{"id": i, "data": {key: text for key in keys}} for i, text in enumerate(texts)]


def _rows(predictor: Predictor, tasks: list[Json], first_call: Any) -> list[Json]:
    """One output row per task: its prediction, or the error it still had after ATTEMPTS."""
    done: dict[int, Json] = {}
    errors: dict[int, str] = {}
    todo, call = tasks, first_call
    for attempt in range(ATTEMPTS):
        try:
            answers = predictor.result(call)
        except Exception as exc:
            errors.update({t["id"]: f"{type(exc).__name__}: {exc}" for t in todo})
        else:
            for answer in answers:
                task_id = answer["task_id"]
                if answer.get("error"):
                    errors[task_id] = answer["error"]
                    continue
                errors.pop(task_id, None)
                done[task_id] = {
                    "prediction": answer["result"],
                    "score": answer["score"],
                    "model_version": answer["model_version"],
                    "config_hash": answer["model_version"],
                }
            todo = [t for t in todo if t["id"] not in done]
        if not todo or attempt == ATTEMPTS - 1:
            break
        time.sleep(RETRY_PAUSE_S * 2**attempt)
        call = predictor.submit(todo)
    return [done.get(t["id"]) or {"error": errors[t["id"]]} for t in tasks]


@ray.remote(num_cpus=UNIT_CPUS, max_retries=0)
def annotate_unit(unit: Unit, output: Output, predictor: Predictor, batching: Batching) -> UnitDone:
    writer = output.writer(unit.key)
    pending: deque[tuple[pa.Table, list[Json], Any]] = deque()
    rows = failed = 0

    def flush_one() -> None:
        nonlocal rows, failed
        table, tasks, call = pending.popleft()
        out = _rows(predictor, tasks, call) if tasks else []
        failed += sum(1 for row in out if "error" in row)
        rows += table.num_rows
        writer.write(with_predictions(table, out))

    try:
        for table in unit.reader.batches(batching.batch_size):
            if table.num_rows:
                check_text_column(table.schema.names, batching.text_col, unit.where)
            check_free_names(table.schema.names)
            texts = table.column(batching.text_col).to_pylist() if table.num_rows else []
            tasks = _tasks(texts, batching.text_keys)
            pending.append((table, tasks, predictor.submit(tasks) if tasks else None))
            if len(pending) >= batching.in_flight:
                flush_one()
        while pending:
            flush_one()
        writer.commit()
    except (pa.ArrowInvalid, InputError) as exc:
        writer.discard()
        raise InputError(f"{unit.where}: {exc}") from None
    except BaseException:
        writer.discard()
        raise
    return UnitDone(unit.key, rows, failed)
