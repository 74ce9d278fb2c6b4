"""Projects and their versioned configurations."""

from functools import lru_cache
from typing import Any

from sqlalchemy import Select, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from preannotate.configs.labeling import parse_labeling_config
from preannotate.store.db import Database, get_or_raise
from preannotate.store.errors import AlreadyExists
from preannotate.store.models import Membership, Project, ProjectConfigVersion, Role, User
from preannotate.store.tasks_io import TEXT_OR_DOCUMENT, DocumentFields


class ProjectOps(Database):
    def create_project(
        self,
        name: str,
        *,
        owner_id: int | None = None,
        config: tuple[dict[str, Any], str] | None = None,
    ) -> Project:
        """A new project; names are unique so users and the CLI can refer by name.

        With `owner_id` the user becomes its Owner, with `config` (a configuration and its
        hash) that is its first configuration version: one transaction, so a project
        exists complete or not at all, and a refused configuration never takes its name.
        """
        try:
            with self._write() as session:
                if owner_id is not None:
                    get_or_raise(session, User, owner_id)
                project = Project(name=name)
                session.add(project)
                session.flush()  # the project's id, for the rows that refer to it
                if owner_id is not None:
                    session.add(
                        Membership(user_id=owner_id, project_id=project.id, role=Role.OWNER.value)
                    )
                if config is not None:
                    data, config_hash = config
                    session.add(
                        ProjectConfigVersion(
                            project_id=project.id, version=1, config=data, config_hash=config_hash
                        )
                    )
        except IntegrityError:
            raise AlreadyExists(f"a project named {name!r} already exists") from None
        return project

    def get_project(self, project_id: int) -> Project:
        with self._read() as session:
            return get_or_raise(session, Project, project_id)

    def list_projects(self) -> list[Project]:
        with self._read() as session:
            return list(session.scalars(select(Project).order_by(Project.id)))

    def set_config(self, project_id: int, config: dict[str, Any], config_hash: str) -> int:
        """Record `config` as the project's current configuration; returns its version.

        Saving a configuration identical (by hash) to the current one keeps the current
        version, so re-saving an unchanged config does not invalidate deployed servers.
        """
        with self._write() as session:
            # Locked, so concurrent saves queue for the next version instead of colliding.
            get_or_raise(session, Project, project_id, for_update=True)
            current = session.scalar(_latest_config(project_id))
            if current is not None and current.config_hash == config_hash:
                return current.version
            version = 1 if current is None else current.version + 1
            session.add(
                ProjectConfigVersion(
                    project_id=project_id, version=version, config=config, config_hash=config_hash
                )
            )
        return version

    def current_config(self, project_id: int) -> ProjectConfigVersion | None:
        """The highest version, or None for a project that was never configured."""
        with self._read() as session:
            get_or_raise(session, Project, project_id)
            return session.scalar(_latest_config(project_id))


def _latest_config(project_id: int) -> Select[ProjectConfigVersion]:
    return (
        select(ProjectConfigVersion)
        .where(ProjectConfigVersion.project_id == project_id)
        .order_by(ProjectConfigVersion.version.desc())
        .limit(1)
    )


def read_document_fields(session: Session, project_id: int) -> DocumentFields:
    """Where the project's tasks hold their document: the fields its pre-annotation reads
    (`LabelingConfig.pre_annotated`; `text`, `image` or `pdf` for a project not
    configured)."""
    record = session.scalar(_latest_config(project_id))
    if record is None:
        return TEXT_OR_DOCUMENT
    return _document_fields(record.config["labeling_config"])


@lru_cache(maxsize=64)
def _document_fields(xml: str) -> DocumentFields:
    """A labeling config's document fields, parsed once (pages and imports ask often)."""
    return DocumentFields.read_by(parse_labeling_config(xml))
