"""Persistence for projects, tasks, versioned predictions, completions, jobs, servers, users."""

from preannotate.store.errors import (
    AlreadyExists,
    InvalidInput,
    InvalidState,
    NotFound,
    StoreError,
    StoreNotHere,
)
from preannotate.store.models import JobKind, JobState, Role, ServerStatus
from preannotate.store.repository import Store
from preannotate.store.tasks import AddedTasks, TaskDocument, TaskSummary

__all__ = [
    "AddedTasks",
    "AlreadyExists",
    "InvalidInput",
    "InvalidState",
    "JobKind",
    "JobState",
    "NotFound",
    "Role",
    "ServerStatus",
    "Store",
    "StoreError",
    "StoreNotHere",
    "TaskDocument",
    "TaskSummary",
]
