"""Capacity refusals as the caller may read them.

A refused deploy or training run says what holds the cluster: which servers hold the GPU
or the license seats, which training runs hold seats, which servers to delete. Servers
and training runs of projects the caller has no role in are not named to them (admins see
all); the caller is told how many of the cluster's other projects' servers and runs hold
it, and is offered only servers they may see to delete.
"""

import re
from collections.abc import Iterator
from contextlib import contextmanager

from preannotate.deployments.routes.context import Context, caller_roles
from preannotate.scheduler.errors import DeployRefused
from preannotate.store import NotFound
from preannotate.store.models import User

NAMED_SERVER = re.compile(r"\bserver-\d+\b")
NAMED_RUN = re.compile(r"\btraining job (\d+)\b")
OTHERS = {"server": "a server of another project", "run": "a training run of another project"}
_RUNS_OF_OTHERS = re.compile(
    "(?:(?:{0}|{1})(?: \\([^)]*\\))?, )*(?:{0}|{1})(?: \\([^)]*\\))?".format(*OTHERS.values())
)
"""A list of others' servers and runs, each perhaps with what it holds in parentheses."""


def for_caller(
    ctx: Context, user: User, message: str, candidates: list[str]
) -> tuple[str, list[str]]:
    """`message` and the servers to delete, without naming what the caller may not see.
    It asks the store: call it off the event loop."""
    roles = caller_roles(ctx, user)
    if roles is None:
        return message, candidates

    def visible_server(server_id: str) -> bool:
        try:
            return bool(roles.keys() & set(ctx.store.get_server(server_id).project_ids))
        except NotFound:
            return False

    def visible_run(job_id: str) -> bool:
        try:
            return ctx.store.get_job(int(job_id)).project_id in roles
        except NotFound:
            return False

    shown = {s for s in set(NAMED_SERVER.findall(message)) | set(candidates) if visible_server(s)}
    text = NAMED_SERVER.sub(lambda m: m[0] if m[0] in shown else OTHERS["server"], message)
    text = NAMED_RUN.sub(lambda m: m[0] if visible_run(m[1]) else OTHERS["run"], text)
    return _RUNS_OF_OTHERS.sub(_counted, text), [s for s in candidates if s in shown]


def _counted(found: re.Match[str]) -> str:
    """ "a server of another project (1 licensed replica), a server of another project" as
    "2 servers of other projects"."""
    servers, runs = (found[0].count(OTHERS[kind]) for kind in ("server", "run"))
    if servers + runs == 1:
        return found[0]
    parts = [f"{servers} server{'s' if servers > 1 else ''}"] if servers else []
    parts += [f"{runs} training run{'s' if runs > 1 else ''}"] if runs else []
    return f"{' and '.join(parts)} of other projects"


@contextmanager
def refusals_for(ctx: Context, user: User) -> Iterator[None]:
    """Re-raise a `DeployRefused` from the scheduler (Ray wraps it) as `for_caller` words it."""
    try:
        yield
    except DeployRefused as exc:
        cause = getattr(exc, "cause", exc)
        message, candidates = for_caller(ctx, user, cause.message, cause.delete_candidates)
        raise DeployRefused(message, candidates) from None
