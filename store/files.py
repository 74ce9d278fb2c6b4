"""Uploaded documents: their bytes on disk by content hash, their rows, and their tasks.

A file is written once under `<files dir>/<sha[:2]>/<sha>` (to a temporary name, then
renamed, so a reader never sees half a file, and the same bytes uploaded twice are kept
once); each upload becomes one task whose data names the file by hash. Bytes the project
already has as a task with the same data become no second task: annotating one document
twice is work nobody asked for, so the upload answers with the task that exists.
"""

import hashlib
import json
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import insert, select

from preannotate.configs.files import blob_path, uploaded
from preannotate.store.db import Database, get_or_raise
from preannotate.store.models import Project, StoredFile, Task, utcnow


@dataclass(frozen=True)
class NewFile:
    """An upload that passed its checks: what it is, and its bytes."""

    name: str
    kind: str
    pages: int
    content: bytes

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.content).hexdigest()


def keep_blob(sha256: str, content: bytes) -> None:
    """Write the bytes under their hash unless they are there already."""
    path = blob_path(sha256)
    if path.is_file():
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=path.parent, delete=False) as out:
        out.write(content)
    os.replace(out.name, path)


def file_task_data(field: str, pages_listed: bool, sha256: str, pages: int) -> dict[str, Any]:
    """A document's task data: its reference under the `<Image>`'s key, or for
    `valueList`, one reference per page."""
    if pages_listed:
        return {field: [uploaded(sha256, page) for page in range(pages)]}
    return {field: uploaded(sha256)}


@dataclass(frozen=True)
class Upload:
    """One file of an upload and its row; `duplicate` when the project already had it as
    a task with the same data, which is the task this row names."""

    file: StoredFile
    duplicate: bool

    def as_dict(self) -> dict[str, Any]:
        return self.file.as_dict() | {"duplicate": self.duplicate}


class FileOps(Database):
    def add_files(
        self, project_id: int, field: str, pages_listed: bool, files: Sequence[NewFile]
    ) -> list[Upload]:
        """Keep the files and make each one a task unless the project has it already, all
        in one transaction."""
        with self._write() as session:
            # two uploads of the same bytes at once: the second waits, then finds the first
            get_or_raise(session, Project, project_id, for_update=True)
            shas = {file.sha256 for file in files}
            known = session.execute(
                select(StoredFile, Task.data)
                .join(Task, StoredFile.task_id == Task.id)
                .where(StoredFile.project_id == project_id, StoredFile.sha256.in_(shas))
                .order_by(StoredFile.id)
            )
            same: dict[tuple[str, str], StoredFile] = {}
            for row, data in known:
                same.setdefault((row.sha256, json.dumps(data, sort_keys=True)), row)
            uploads = []
            for file in files:
                sha = file.sha256
                data = file_task_data(field, pages_listed, sha, file.pages)
                key = (sha, json.dumps(data, sort_keys=True))
                if key in same:
                    uploads.append(Upload(same[key], duplicate=True))
                    continue
                keep_blob(sha, file.content)
                now = utcnow()
                task_id = session.scalar(
                    insert(Task)
                    .values(project_id=project_id, data=data, created_at=now)
                    .returning(Task.id)
                )
                row = StoredFile(
                    project_id=project_id,
                    task_id=task_id,
                    sha256=sha,
                    name=file.name,
                    kind=file.kind,
                    size=len(file.content),
                    pages=file.pages,
                    created_at=now,
                )
                session.add(row)
                same[key] = row
                uploads.append(Upload(row, duplicate=False))
            session.flush()
            return uploads

    def project_files(self, project_id: int) -> list[StoredFile]:
        """The project's uploads, oldest first."""
        with self._read() as session:
            get_or_raise(session, Project, project_id)
            query = select(StoredFile).where(StoredFile.project_id == project_id)
            return list(session.scalars(query.order_by(StoredFile.id)))
