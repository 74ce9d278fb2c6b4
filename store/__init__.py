"""Persistence for projects, tasks, versioned predictions, completions, jobs, servers, users."""

from store.errors import AlreadyExists, InvalidInput, InvalidState, NotFound, StoreError
from store.models import JobKind, JobState, Role, ServerStatus
from store.repository import Store
from store.tasks import AddedTasks, TaskDocument, TaskSummary

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
    "TaskDocument",
    "TaskSummary",
]
