"""`Store`: every persistence operation of the cluster behind one object.

The operations live in small modules by what they hold (projects, tasks, predictions,
...); `Store` only combines them so callers construct one thing with one URL.
"""

from store.completions import CompletionOps
from store.exports import ExportOps
from store.jobs import JobOps
from store.predictions import PredictionOps
from store.projects import ProjectOps
from store.servers import ServerOps
from store.tasks import TaskOps
from store.users import UserOps


class Store(
    ProjectOps, TaskOps, PredictionOps, CompletionOps, JobOps, ServerOps, UserOps, ExportOps
):
    """The store at `url` (default: `configs.paths.database_url()`); creates missing tables.

    Safe to use from several threads and processes; returned rows are detached copies.
    """
