"""`Store`: every persistence operation of the cluster behind one object.

The operations live in small modules by what they hold (projects, tasks, predictions,
...); `Store` only combines them so callers construct one thing with one URL.
"""

from preannotate.store.completions import CompletionOps
from preannotate.store.exports import ExportOps
from preannotate.store.files import FileOps
from preannotate.store.jobs import JobOps
from preannotate.store.predictions import PredictionOps
from preannotate.store.projects import ProjectOps
from preannotate.store.providers import ProviderOps
from preannotate.store.servers import ServerOps
from preannotate.store.tasks import TaskOps
from preannotate.store.users import UserOps


class Store(
    ProjectOps,
    TaskOps,
    PredictionOps,
    CompletionOps,
    JobOps,
    ServerOps,
    UserOps,
    ExportOps,
    FileOps,
    ProviderOps,
):
    """The store at `url` (default: `configs.paths.database_url()`); creates missing tables.

    Safe to use from several threads and processes; returned rows are detached copies.
    """
