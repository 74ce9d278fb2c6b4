"""Project exports, streamed a page of tasks at a time.

Each page is read in one short transaction (its tasks, then their predictions and
completions with two `IN` queries), shaped into plain dicts, and only then yielded, so a
slow consumer never holds a database transaction open and memory stays one page deep.
"""

from collections import defaultdict
from collections.abc import Iterator
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from preannotate.store.db import Database, get_or_raise
from preannotate.store.errors import InvalidInput
from preannotate.store.models import Completion, Prediction, Project, User
from preannotate.store.tasks import page_of_tasks
from preannotate.store.tasks_io import (
    EXPORT_FORMATS,
    ExportFormat,
    generative_ai_lab_task,
    label_studio_task,
)

EXPORT_PAGE = 500


class ExportOps(Database):
    def export_project(
        self, project_id: int, fmt: ExportFormat = "generative-ai-lab"
    ) -> Iterator[dict[str, Any]]:
        """The project's tasks with predictions and completions, one dict per task.

        The project and format are checked now (not on first iteration), so a bad
        request fails before a caller starts writing a response.
        """
        if fmt not in EXPORT_FORMATS:
            raise InvalidInput(f"unknown export format {fmt!r}; expected one of {EXPORT_FORMATS}")
        with self._read() as session:
            get_or_raise(session, Project, project_id)
        return self._export_pages(project_id, fmt)

    def _export_pages(self, project_id: int, fmt: ExportFormat) -> Iterator[dict[str, Any]]:
        after_id = 0
        while True:
            with self._read() as session:
                page = _export_page(session, project_id, after_id, fmt)
            if not page:
                return
            yield from page
            after_id = page[-1]["id"]


def _export_page(
    session: Session, project_id: int, after_id: int, fmt: ExportFormat
) -> list[dict[str, Any]]:
    tasks = page_of_tasks(session, project_id, after_id, EXPORT_PAGE)
    ids = [task.id for task in tasks]
    predictions: defaultdict[int, list[Prediction]] = defaultdict(list)
    if ids:
        query = (
            select(Prediction)
            .where(Prediction.task_id.in_(ids))
            .order_by(Prediction.task_id, Prediction.version)
        )
        for prediction in session.scalars(query):
            predictions[prediction.task_id].append(prediction)
    completions: defaultdict[int, list[Completion]] = defaultdict(list)
    usernames: dict[int, str] = {}
    if ids:
        query = (
            select(Completion, User.name)
            .outerjoin(User, Completion.created_by == User.id)
            .where(Completion.task_id.in_(ids))
            .order_by(Completion.task_id, Completion.id)
        )
        for completion, username in session.execute(query):
            completions[completion.task_id].append(completion)
            if completion.created_by is not None:
                usernames[completion.created_by] = username
    if fmt == "label-studio":
        return [label_studio_task(t, predictions[t.id], completions[t.id]) for t in tasks]
    return [
        generative_ai_lab_task(t, predictions[t.id], completions[t.id], usernames) for t in tasks
    ]
