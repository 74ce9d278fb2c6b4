"""Completions: human annotations, possibly started as a copy of a prediction's result."""

import copy
from collections.abc import Collection, Iterator
from typing import Any

from sqlalchemy import func, select

from preannotate.store.db import Database, get_or_raise
from preannotate.store.errors import InvalidInput
from preannotate.store.models import Completion, Prediction, Project, Task, User, utcnow
from preannotate.store.projects import read_document_fields
from preannotate.store.tasks_io import task_data


class CompletionOps(Database):
    def create_completion(
        self,
        task_id: int,
        result: list[dict[str, Any]] | None = None,
        *,
        copied_from: int | None = None,
        created_by: int | None = None,
    ) -> Completion:
        """A completion with `result`, or a copy of prediction `copied_from`'s result.

        The copy is a separate row holding its own deep copy of the result, so the
        prediction stays the record of what the model said.
        """
        if (result is None) == (copied_from is None):
            raise InvalidInput("give either a result or a prediction to copy, not both or neither")
        with self._write() as session:
            get_or_raise(session, Task, task_id)
            if created_by is not None:
                get_or_raise(session, User, created_by)
            if copied_from is not None:
                prediction = get_or_raise(session, Prediction, copied_from)
                if prediction.task_id != task_id:
                    raise InvalidInput(
                        f"prediction {copied_from} belongs to task {prediction.task_id}, "
                        f"not task {task_id}"
                    )
                result = copy.deepcopy(prediction.result)
            completion = Completion(
                task_id=task_id,
                result=result,
                copied_from_prediction_id=copied_from,
                created_by=created_by,
            )
            session.add(completion)
        return completion

    def complete_document(
        self,
        project_id: int,
        data: dict[str, Any],
        keys: Collection[str],
        result: list[dict[str, Any]],
        *,
        created_by: int | None = None,
    ) -> tuple[Completion, bool]:
        """A completion with `result` for the project's task that holds the same document:
        the first task whose data has the same values at `keys` (the fields the project's
        configuration reads), or a new task with `data` when none has. Returns the
        completion and whether its task is new.

        Another tool's annotation finds its task this way, as the two tools number tasks
        independently. One transaction, with the project locked, so two annotations of the
        same new document make one task.
        """
        if not isinstance(result, list) or not all(isinstance(i, dict) for i in result):
            raise InvalidInput("an annotation's result must be a list of objects")
        document = {key: data[key] for key in keys if isinstance(data.get(key), str)}
        with self._write() as session:
            get_or_raise(session, Project, project_id, for_update=True)
            task = None
            if document:
                query = select(Task).where(Task.project_id == project_id)
                for key, value in document.items():
                    query = query.where(Task.data[key].as_string() == value)
                task = session.scalars(query.order_by(Task.id).limit(1)).first()
            created = task is None
            if task is None:
                fields = read_document_fields(session, project_id)
                task = Task(
                    project_id=project_id, data=task_data(data, "the annotated task", fields)
                )
                session.add(task)
                session.flush()
            now = utcnow()
            completion = Completion(
                task_id=task.id,
                result=result,
                created_by=created_by,
                created_at=now,
                updated_at=now,
            )
            session.add(completion)
        return completion, created

    def completions_for_task(self, task_id: int) -> list[Completion]:
        with self._read() as session:
            get_or_raise(session, Task, task_id)
            query = select(Completion).where(Completion.task_id == task_id).order_by(Completion.id)
            return list(session.scalars(query))

    def annotated_tasks(
        self, project_id: int, page_size: int = 1000
    ) -> Iterator[tuple[Task, Completion]]:
        """Each task that has completions, with its latest one: what training learns from."""
        after = 0
        while True:
            with self._read() as session:
                get_or_raise(session, Project, project_id)
                latest = (
                    select(Completion.task_id, func.max(Completion.id).label("completion_id"))
                    .join(Task, Task.id == Completion.task_id)
                    .where(Task.project_id == project_id, Task.id > after)
                    .group_by(Completion.task_id)
                    .order_by(Completion.task_id)
                    .limit(page_size)
                    .subquery()
                )
                rows = session.execute(
                    select(Task, Completion)
                    .join(latest, latest.c.task_id == Task.id)
                    .join(Completion, Completion.id == latest.c.completion_id)
                    .order_by(Task.id)
                ).all()
            if not rows:
                return
            yield from ((task, completion) for task, completion in rows)
            after = rows[-1][0].id
