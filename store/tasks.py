"""Tasks: file imports streamed into chunked inserts, keyset paging, per-task counts.

Projects can hold hundreds of thousands of tasks, so nothing here loads a whole project:
inserts go in chunks of plain rows (no ORM objects kept), and reads page by task id
(`WHERE id > after_id ORDER BY id LIMIT n`), which stays fast and stable while tasks are
being added, unlike OFFSET paging.
"""

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from itertools import islice
from typing import Any, TypeVar

from sqlalchemy import Row, Select, func, insert, select
from sqlalchemy.orm import InstrumentedAttribute, Session

from preannotate.store.db import Database, get_or_raise
from preannotate.store.errors import InvalidInput
from preannotate.store.models import Completion, Prediction, Project, Task, utcnow
from preannotate.store.projects import read_document_fields
from preannotate.store.tasks_io import DocumentFields, TaskFormat, TaskSource, read_task_records

T = TypeVar("T")

TaskDocument = Row[tuple[int, Any]]
"""A task's `(id, data)`, readable as `.id` and `.data`."""

INSERT_CHUNK = 1000
DEFAULT_PAGE = 1000


@dataclass(frozen=True)
class AddedTasks:
    """What an insert stored. Ids are increasing; `first_id..last_id` is contiguous when
    nothing else inserted tasks at the same time (always so with SQLite's single writer)."""

    count: int
    first_id: int | None
    last_id: int | None


@dataclass(frozen=True)
class TaskSummary:
    """A task with how many predictions and completions it has, for task lists."""

    id: int
    data: dict[str, Any]
    created_at: datetime
    predictions: int
    completions: int


class TaskOps(Database):
    def import_tasks(
        self,
        project_id: int,
        source: TaskSource,
        fmt: TaskFormat | None = None,
        name: str | None = None,
    ) -> AddedTasks:
        """Import a JSON, JSONL or CSV file (see `tasks_io.read_task_records`; errors call
        it `name`), all or nothing: one transaction, so a bad task (named by its line or
        position) leaves the project as it was. Rows are inserted in chunks as the file is
        read, so a large JSONL or CSV file never sits in memory. Tasks that carry
        `completions` (or `annotations`) get them as completions. A task holds its document
        in the fields the project's configuration pre-annotates (`document_fields`)."""
        fields = self.document_fields(project_id)
        return self._insert_tasks(project_id, read_task_records(source, fmt, name, fields))

    def document_fields(self, project_id: int) -> DocumentFields:
        """Where the project's tasks hold their document (`projects.read_document_fields`)."""
        with self._read() as session:
            return read_document_fields(session, project_id)

    def _insert_tasks(self, project_id: int, records: Iterable[dict[str, Any]]) -> AddedTasks:
        count, first_id, last_id = 0, None, None
        with self._write() as session:
            get_or_raise(session, Project, project_id)
            statement = insert(Task).returning(Task.id, sort_by_parameter_order=True)
            for chunk in chunks(records, INSERT_CHUNK):
                now = utcnow()
                rows = [
                    {"project_id": project_id, "data": r["data"], "created_at": now} for r in chunk
                ]
                ids = session.scalars(statement, rows).all()
                completions = [
                    {"task_id": task_id, "result": result, "created_at": now, "updated_at": now}
                    for task_id, record in zip(ids, chunk, strict=True)
                    for result in record.get("completions", [])
                ]
                if completions:
                    session.execute(insert(Completion), completions)
                first_id = ids[0] if first_id is None else first_id
                last_id = ids[-1]
                count += len(ids)
        return AddedTasks(count, first_id, last_id)

    def get_task(self, task_id: int) -> Task:
        with self._read() as session:
            return get_or_raise(session, Task, task_id)

    def count_tasks(self, project_id: int) -> int:
        with self._read() as session:
            get_or_raise(session, Project, project_id)
            query = select(func.count()).select_from(Task).where(Task.project_id == project_id)
            return session.scalar(query) or 0

    def task_documents(
        self,
        project_id: int,
        after_id: int = 0,
        limit: int = DEFAULT_PAGE,
        among: Iterable[int] | None = None,
    ) -> list[TaskDocument]:
        """`(id, data)` of up to `limit` tasks with id > `after_id`, by id, and with `among`
        only those ids (ids of other projects are left out). What a job reads: plain rows,
        since building ORM objects costs more than the query itself."""
        query = keyset_page(select(Task.id, Task.data), project_id, after_id, limit)
        if among is not None:
            query = query.where(Task.id.in_(list(among)))
        with self._read() as session:
            get_or_raise(session, Project, project_id)
            return list(session.execute(query))

    def missing_task_ids(self, project_id: int, task_ids: Iterable[int]) -> list[int]:
        """Which of `task_ids` are not tasks of the project, in order (ids only are read)."""
        ids = sorted(set(task_ids))
        found: set[int] = set()
        with self._read() as session:
            get_or_raise(session, Project, project_id)
            for chunk in chunks(ids, DEFAULT_PAGE):
                query = select(Task.id).where(Task.project_id == project_id, Task.id.in_(chunk))
                found.update(session.scalars(query))
        return [task_id for task_id in ids if task_id not in found]

    def task_summaries(
        self, project_id: int, after_id: int = 0, limit: int = DEFAULT_PAGE
    ) -> list[TaskSummary]:
        """Up to `limit` tasks with id > `after_id`, by id, with their prediction and
        completion counts: a page of the task list."""
        with self._read() as session:
            get_or_raise(session, Project, project_id)
            tasks = page_of_tasks(session, project_id, after_id, limit)
            ids = [task.id for task in tasks]
            predictions = _counts(session, Prediction.task_id, ids)
            completions = _counts(session, Completion.task_id, ids)
        return [
            TaskSummary(
                task.id,
                task.data,
                task.created_at,
                predictions.get(task.id, 0),
                completions.get(task.id, 0),
            )
            for task in tasks
        ]


def chunks(items: Iterable[T], size: int) -> Iterator[list[T]]:
    """`items` in lists of `size` (the last may be shorter), read lazily."""
    iterator = iter(items)
    while chunk := list(islice(iterator, size)):
        yield chunk


def keyset_page(query: Select[Any], project_id: int, after_id: int, limit: int) -> Select[Any]:
    """`query` narrowed to up to `limit` of the project's tasks with id > `after_id`, by id."""
    if limit < 1:
        raise InvalidInput(f"page limit must be at least 1, not {limit}")
    return (
        query.where(Task.project_id == project_id, Task.id > after_id)
        .order_by(Task.id)
        .limit(limit)
    )


def page_of_tasks(session: Session, project_id: int, after_id: int, limit: int) -> list[Task]:
    """The keyset page query, shared with exports."""
    return list(session.scalars(keyset_page(select(Task), project_id, after_id, limit)))


def _counts(
    session: Session, task_column: InstrumentedAttribute[int], task_ids: list[int]
) -> dict[int, int]:
    if not task_ids:
        return {}
    query = select(task_column, func.count()).where(task_column.in_(task_ids)).group_by(task_column)
    return {task_id: count for task_id, count in session.execute(query)}
