"""The database tables.

Results, configurations and task data are stored as JSON documents because they are
opaque to the store (their schema belongs to `configs` and `annotators`); everything the
store queries on (ids, versions, states, hashes) is a real column.
"""

from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, ClassVar, TypeVar

from sqlalchemy import (
    DDL,
    JSON,
    Column,
    Dialect,
    ForeignKey,
    String,
    Table,
    Text,
    UniqueConstraint,
    event,
    inspect,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship
from sqlalchemy.types import DateTime, TypeDecorator

from preannotate.store.errors import InvalidInput


class UTCDateTime(TypeDecorator[datetime]):
    """A timestamp that always comes back timezone-aware in UTC.

    SQLite has no timezone-aware type and returns naive datetimes; storing naive UTC and
    re-attaching UTC on the way out makes every backend give callers the same values.
    """

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("timestamps must be timezone-aware (naive values are ambiguous)")
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        return None if value is None else value.replace(tzinfo=UTC)


def utcnow() -> datetime:
    """Now, in UTC (the only timezone the store writes)."""
    return datetime.now(UTC)


class JobKind(StrEnum):
    PREANNOTATE = "preannotate"
    TRAIN = "train"


class JobState(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


UNFINISHED_JOB_STATES = (JobState.QUEUED, JobState.RUNNING)


class ServerStatus(StrEnum):
    """The server states the architecture reports separately, plus `deleted` for history."""

    DEPLOYING = "deploying"
    LOADING = "loading"
    READY = "ready"
    FAILED = "failed"
    DELETING = "deleting"
    DELETED = "deleted"


class Role(StrEnum):
    OWNER = "owner"
    MANAGER = "manager"
    ANNOTATOR = "annotator"


ChoiceT = TypeVar("ChoiceT", bound=StrEnum)


def parse_choice(enum: type[ChoiceT], value: str, what: str) -> ChoiceT:
    """`value` as a member of `enum`, or `InvalidInput` listing the accepted words."""
    try:
        return enum(value)
    except ValueError:
        choices = ", ".join(member.value for member in enum)
        raise InvalidInput(f"unknown {what} {value!r}; expected one of {choices}") from None


class Base(DeclarativeBase):
    type_annotation_map: ClassVar[dict[Any, Any]] = {datetime: UTCDateTime}

    label: ClassVar[str]
    """What a row is called in messages such as "project 7 not found"."""

    def as_dict(self) -> dict[str, Any]:
        """The row's columns as JSON-ready values, so the HTTP API never serialises ORM state."""
        values: dict[str, Any] = {}
        for attribute in inspect(type(self)).column_attrs:
            value = getattr(self, attribute.key)
            values[attribute.key] = value.isoformat() if isinstance(value, datetime) else value
        return values


class Project(Base):
    __tablename__ = "projects"
    label = "project"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class ProjectConfigVersion(Base):
    """One version of a project's configuration; the highest version is the current one."""

    __tablename__ = "project_configs"
    __table_args__ = (UniqueConstraint("project_id", "version"),)
    label = "project configuration"

    id: Mapped[int] = mapped_column(primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id"))
    version: Mapped[int]
    config: Mapped[dict[str, Any]] = mapped_column(JSON)
    config_hash: Mapped[str] = mapped_column(String(128))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Task(Base):
    __tablename__ = "tasks"
    label = "task"

    id: Mapped[int] = mapped_column(primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id"), index=True)
    data: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class StoredFile(Base):
    """A document uploaded to a project: its bytes live content-addressed on disk
    (`configs/files.py`), and the task it became names it by `sha256`."""

    __tablename__ = "files"
    label = "file"

    id: Mapped[int] = mapped_column(primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id"), index=True)
    task_id: Mapped[int] = mapped_column(ForeignKey("tasks.id"), index=True)
    sha256: Mapped[str] = mapped_column(String(64), index=True)
    name: Mapped[str] = mapped_column(String(200))
    kind: Mapped[str] = mapped_column(String(10))
    size: Mapped[int]
    pages: Mapped[int]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Prediction(Base):
    """A server's output for a task. Never updated: every run adds a version.

    `(task_id, job_id)` is unique so a resumed job cannot write a task twice; its index
    (task_id first) also serves lookups by task, so task_id has no separate index.
    """

    __tablename__ = "predictions"
    __table_args__ = (
        UniqueConstraint("task_id", "version"),
        UniqueConstraint("task_id", "job_id"),
    )
    label = "prediction"

    id: Mapped[int] = mapped_column(primary_key=True)
    task_id: Mapped[int] = mapped_column(ForeignKey("tasks.id"))
    version: Mapped[int]
    # Provenance only: a server row may be gone from the cluster, the prediction stays.
    server_id: Mapped[str | None] = mapped_column(String(200))
    config_hash: Mapped[str] = mapped_column(String(128))
    job_id: Mapped[int | None] = mapped_column(ForeignKey("jobs.id"))
    result: Mapped[list[dict[str, Any]]] = mapped_column(JSON)
    score: Mapped[float | None]
    model_version: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Completion(Base):
    """A human annotation; when copied from a prediction it is an independent, editable copy."""

    __tablename__ = "completions"
    label = "completion"

    id: Mapped[int] = mapped_column(primary_key=True)
    task_id: Mapped[int] = mapped_column(ForeignKey("tasks.id"), index=True)
    result: Mapped[list[dict[str, Any]]] = mapped_column(JSON)
    copied_from_prediction_id: Mapped[int | None] = mapped_column(ForeignKey("predictions.id"))
    created_by: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class Job(Base):
    """A bulk pre-annotation or training run. `errors` keeps only the latest failures;
    `failed` stays the exact count."""

    __tablename__ = "jobs"
    label = "job"

    id: Mapped[int] = mapped_column(primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id"), index=True)
    kind: Mapped[str] = mapped_column(String(20))
    state: Mapped[str] = mapped_column(String(20), index=True)
    server_id: Mapped[str | None] = mapped_column(String(200))
    params: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    total: Mapped[int] = mapped_column(default=0)
    done: Mapped[int] = mapped_column(default=0)
    failed: Mapped[int] = mapped_column(default=0)
    errors: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    details: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    """Kind-specific progress: a training run's epoch, loss, log lines, metrics, model."""
    reason: Mapped[str | None] = mapped_column(Text)
    llm_requests: Mapped[int | None]
    """Calls to external LLM providers a bulk job made (NULL: none), and their tokens."""
    prompt_tokens: Mapped[int | None]
    completion_tokens: Mapped[int | None]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]


server_projects = Table(
    "server_projects",
    Base.metadata,
    Column("server_id", ForeignKey("servers.id"), primary_key=True),
    Column("project_id", ForeignKey("projects.id"), primary_key=True),
)


class Server(Base):
    """A deployed configuration. Deleted servers keep their row (predictions name them)."""

    __tablename__ = "servers"
    label = "server"

    id: Mapped[str] = mapped_column(String(200), primary_key=True)
    config_hash: Mapped[str] = mapped_column(String(128))
    config: Mapped[dict[str, Any]] = mapped_column(JSON)
    status: Mapped[str] = mapped_column(String(20))
    message: Mapped[str | None] = mapped_column(Text)
    """Why the server is in its status, when that needs saying (e.g. not restored)."""
    resources: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    replicas: Mapped[int] = mapped_column(default=1)
    snapshot: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    """What was deployed (models with labels and versions, rules), as it was at deploy
    time: listing servers never re-validates a configuration against today's hub."""
    deployed_at: Mapped[datetime] = mapped_column(default=utcnow)
    deleted_at: Mapped[datetime | None]
    # Loaded with the server so the list is still readable after the session closes.
    projects: Mapped[list[Project]] = relationship(
        secondary=server_projects, lazy="selectin", order_by=Project.id
    )

    @property
    def project_ids(self) -> list[int]:
        return [project.id for project in self.projects]

    def as_dict(self) -> dict[str, Any]:
        return {**super().as_dict(), "project_ids": self.project_ids}


class User(Base):
    __tablename__ = "users"
    label = "user"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    is_admin: Mapped[bool] = mapped_column(default=False)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    deleted_at: Mapped[datetime | None]
    """A deleted user keeps its row, as completions name their author, but has no tokens
    and no roles left; its name stays taken."""


class ApiToken(Base):
    """Only the SHA-256 of a token is kept, so a leaked database leaks no credentials."""

    __tablename__ = "api_tokens"
    label = "API token"

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Membership(Base):
    __tablename__ = "memberships"
    __table_args__ = (UniqueConstraint("user_id", "project_id"),)
    label = "membership"

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id"), index=True)
    role: Mapped[str] = mapped_column(String(20))


class ProviderKind(StrEnum):
    OPENAI = "openai"
    AZURE_OPENAI = "azure-openai"


class Provider(Base):
    """An external LLM service that prompts call. Its API key is kept only sealed under the
    operator's secret key (`store/secrets.py`); `as_dict` leaves it out."""

    __tablename__ = "providers"
    label = "provider"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    kind: Mapped[str] = mapped_column(String(20))
    base_url: Mapped[str] = mapped_column(String(2000))
    api_version: Mapped[str | None] = mapped_column(String(50))
    sealed_key: Mapped[str] = mapped_column(Text)
    timeout_s: Mapped[float | None]
    """Seconds one request may take (NULL: the client's default in `annotators/llm.py`)."""
    concurrency: Mapped[int | None]
    """Requests in flight per replica (NULL: the default in `annotators/llm.py`)."""
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    def as_dict(self) -> dict[str, Any]:
        return {k: v for k, v in super().as_dict().items() if k != "sealed_key"}


class AccessEpoch(Base):
    """One row, counting revocations: a token revoked, a user deleted, a member removed.
    What a router replica remembers about who may do what holds only while the count it
    read stands, so one cheap read tells every replica that its cache is stale."""

    __tablename__ = "access_epoch"
    label = "access epoch"

    id: Mapped[int] = mapped_column(primary_key=True)
    value: Mapped[int] = mapped_column(default=0)


ACCESS_EPOCH_ROW = 1
event.listen(
    AccessEpoch.__table__,
    "after_create",
    DDL(f"INSERT INTO access_epoch (id, value) VALUES ({ACCESS_EPOCH_ROW}, 0)"),
)
