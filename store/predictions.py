"""Predictions: append-only, versioned per task, written once per (task, job).

A batch is one transaction. Its tasks are locked first (`SELECT ... FOR NO KEY UPDATE` on
PostgreSQL; SQLite's write transactions already exclude each other), so two writers
never hand out the same version for a task, whichever order their batches interleave in.
Tasks are locked in id order, so two batches sharing tasks cannot deadlock; the job
whose `done` a batch counts is locked next, before anything is inserted, so concurrent
batches of one job never lose an increment.
"""

from collections.abc import Iterable, Mapping
from typing import Any

from sqlalchemy import func, insert, select

from preannotate.store.compare import compare_results
from preannotate.store.db import ROW_LOCK, Database, EncodedJSON, get_or_raise
from preannotate.store.errors import InvalidInput, NotFound
from preannotate.store.models import Job, Prediction, Task, utcnow

_REQUIRED = ("task_id", "result", "config_hash", "model_version")
_OPTIONAL = ("score", "server_id", "job_id")


class PredictionOps(Database):
    def add_predictions(
        self, rows: Iterable[Mapping[str, Any]], count_for_job: int | None = None
    ) -> int:
        """Write a batch of predictions; returns how many were written.

        Each row holds task_id, result (a list, or the `EncodedJSON` of one),
        config_hash, model_version and optionally score, server_id, job_id. A row whose
        job already has a prediction for its task is skipped, so a resumed job can resend
        a batch without duplicating anything.
        With `count_for_job`, that job's `done` grows by the rows written, in the same
        transaction, so progress never disagrees with what is stored.
        """
        values = [_prediction_values(row, number) for number, row in enumerate(rows, 1)]
        if not values:
            return 0
        task_ids = sorted({row["task_id"] for row in values})
        job_ids = sorted({row["job_id"] for row in values if row["job_id"] is not None})
        with self._write() as session:
            locked = (
                select(Task.id)
                .where(Task.id.in_(task_ids))
                .order_by(Task.id)
                .with_for_update(**ROW_LOCK)
            )
            missing = set(task_ids) - set(session.scalars(locked))
            if missing:
                raise NotFound(f"task {min(missing)} not found ({len(missing)} missing)")
            counted = (
                None
                if count_for_job is None
                else get_or_raise(session, Job, count_for_job, for_update=True)
            )
            for job_id in job_ids:
                get_or_raise(session, Job, job_id)
            latest_versions = (
                select(Prediction.task_id, func.max(Prediction.version))
                .where(Prediction.task_id.in_(task_ids))
                .group_by(Prediction.task_id)
            )
            latest = {task_id: version for task_id, version in session.execute(latest_versions)}
            job_predictions = select(Prediction.task_id, Prediction.job_id).where(
                Prediction.task_id.in_(task_ids), Prediction.job_id.in_(job_ids)
            )
            written = {(task_id, job_id) for task_id, job_id in session.execute(job_predictions)}
            new_rows = []
            now = utcnow()
            for row in values:
                if row["job_id"] is not None:
                    if (row["task_id"], row["job_id"]) in written:
                        continue
                    written.add((row["task_id"], row["job_id"]))
                version = latest.get(row["task_id"], 0) + 1
                latest[row["task_id"]] = version
                new_rows.append({**row, "version": version, "created_at": now})
            if new_rows:
                # Core's executemany: the ORM's bulk path costs more than the insert.
                session.execute(insert(Prediction.__table__), new_rows)
                if counted is not None:
                    counted.done += len(new_rows)
        return len(new_rows)

    def get_prediction(self, prediction_id: int) -> Prediction:
        with self._read() as session:
            return get_or_raise(session, Prediction, prediction_id)

    def predictions_for_task(self, task_id: int) -> list[Prediction]:
        """Every version, oldest first."""
        with self._read() as session:
            get_or_raise(session, Task, task_id)
            query = (
                select(Prediction).where(Prediction.task_id == task_id).order_by(Prediction.version)
            )
            return list(session.scalars(query))

    def task_ids_with_job_prediction(self, job_id: int, task_ids: Iterable[int]) -> set[int]:
        """Which of `task_ids` the job has already predicted: a resumed job skips them."""
        ids = list(task_ids)
        if not ids:
            return set()
        with self._read() as session:
            query = select(Prediction.task_id).where(
                Prediction.job_id == job_id, Prediction.task_id.in_(ids)
            )
            return set(session.scalars(query))

    def compare_predictions(self, a_id: int, b_id: int) -> dict[str, Any]:
        """How prediction `b` differs from `a` (see `store.compare.compare_results`)."""
        with self._read() as session:
            a = get_or_raise(session, Prediction, a_id)
            b = get_or_raise(session, Prediction, b_id)
        if a.task_id != b.task_id:
            raise InvalidInput(
                f"predictions {a_id} and {b_id} belong to different tasks "
                f"({a.task_id} and {b.task_id}); only predictions of one task compare"
            )
        return compare_results(a.result, b.result)


def _prediction_values(row: Mapping[str, Any], number: int) -> dict[str, Any]:
    missing = [key for key in _REQUIRED if key not in row]
    unknown = sorted(set(row) - set(_REQUIRED) - set(_OPTIONAL))
    if missing:
        raise InvalidInput(f"prediction {number}: missing fields {missing}")
    if unknown:
        raise InvalidInput(f"prediction {number}: unknown fields {unknown}")
    result = row["result"]
    if not (isinstance(result, list) or (isinstance(result, EncodedJSON) and result[:1] == "[")):
        raise InvalidInput(f"prediction {number}: 'result' must be a list of result items")
    return {key: row[key] for key in _REQUIRED} | {key: row.get(key) for key in _OPTIONAL}
