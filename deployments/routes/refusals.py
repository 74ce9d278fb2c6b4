"""Capacity refusals as the caller may read them.

A refused deploy or training run says what holds the cluster: which servers hold the GPU
or the license seats, which training runs hold seats, which servers to delete. Servers
and training runs of projects the caller has no role in are not named to them (admins see
all): they are told how many of other projects' servers and runs hold it, and are asked
to delete only servers they may delete, told who deletes the others.
"""

import re
from collections.abc import Iterator
from contextlib import contextmanager

from preannotate.configs.wording import joined
from preannotate.deployments.access_cache import may_use
from preannotate.deployments.routes.context import Context, caller_roles
from preannotate.deployments.routes.servers import may_control
from preannotate.scheduler.errors import DeployRefused
from preannotate.store import NotFound
from preannotate.store.models import User

NAMED_SERVER = re.compile(r"(?<![\w.'\"-])server-\d+(?![\w'\"-])")
"""A server as capacity messages name it: bare, where a model or prompt is quoted."""
NAMED_RUN = re.compile(r"(?<![\w.'\"-])training job (\d+)(?![\w'\"-])")
OTHERS = {"server": "a server of another project", "run": "a training run of another project"}
_OTHERS_LISTED = re.compile(
    "(?:(?:{0}|{1})(?: \\([^)]*\\))?, )*(?:{0}|{1})(?: \\([^)]*\\))?".format(*OTHERS.values())
)
"""A list of others' servers and runs, each perhaps with what it holds in parentheses."""
ADVICE = re.compile(r"Delete (one|all) of these servers on the Clusters page to free it: .*$")
"""The closing advice of `FitResult.explain` (`cluster/capacity.py`)."""


def for_caller(
    ctx: Context, roles: dict[int, str] | None, message: str, candidates: list[str]
) -> tuple[str, list[str]]:
    """`message` and the servers to delete, without naming what the caller (`roles`, from
    `caller_roles`) may not see. It asks the store: call it off the event loop."""
    if roles is None:
        return message, candidates

    def visible_run(job_id: str) -> bool:
        try:
            return ctx.store.get_job(int(job_id)).project_id in roles
        except NotFound:
            return False

    using = {s.id: s.project_ids for s in ctx.store.list_servers(include_deleted=True)}
    named = set(NAMED_SERVER.findall(message)) | set(candidates)
    shown = {s for s in named if may_use(roles, using.get(s, ()))}
    mine = [s for s in candidates if may_control(roles, using.get(s, ()))]
    advice = ADVICE.search(message)
    partial = bool(advice) and len(mine) < len(candidates)
    if advice and partial:
        others = [c for c in candidates if c not in mine]
        seen = [c for c in others if c in shown]
        advice_text = _advice(advice[1] == "all", mine, seen, len(others) - len(seen))
        message = message[: advice.start()] + advice_text
    text = NAMED_SERVER.sub(lambda m: m[0] if m[0] in shown else OTHERS["server"], message)
    text = NAMED_RUN.sub(lambda m: m[0] if visible_run(m[1]) else OTHERS["run"], text)
    together_with_others = partial and advice is not None and advice[1] == "all"
    return _OTHERS_LISTED.sub(_counted, text), [] if together_with_others else mine


def _advice(together: bool, mine: list[str], named: list[str], hidden: int) -> str:
    """The advice when some servers to delete are not the caller's to delete: `named`, those
    they see, and `hidden` more they do not."""
    if mine and not together:
        return f"Delete one of these servers on the Clusters page to free it: {', '.join(mine)}."
    unnamed = [] if not hidden else [OTHERS["server"] if hidden == 1 else _others(hidden)]
    servers = (mine if together else []) + named
    listed = joined(servers + unnamed, "and")
    who = "servers you may not delete are deleted by their projects' managers or an admin"
    if together:
        return f"Deleting {listed} together would free it; {who}."
    any_of = "" if len(named) + hidden == 1 else "any one of "
    return f"Deleting {any_of}{listed} would free it; {who}."


def _others(count: int) -> str:
    return f"{_count(count, 'server')} of other projects"


def _count(count: int, noun: str) -> str:
    """ "1 server", "2 servers"."""
    return f"{count} {noun}{'s' if count != 1 else ''}"


LICENSED_REPLICAS = re.compile(r"\((\d+) licensed replicas?\)")


def _counted(found: re.Match[str]) -> str:
    """ "a server of another project (1 licensed replica), a server of another project (2
    licensed replicas)" as "2 servers (3 licensed replicas) of other projects"."""
    servers, runs = (found[0].count(OTHERS[kind]) for kind in ("server", "run"))
    if servers + runs == 1:
        return found[0]
    seats = sum(int(n) for n in LICENSED_REPLICAS.findall(found[0]))
    held = f" ({_count(seats, 'licensed replica')})" if seats else ""
    parts = [f"{_count(servers, 'server')}{held}"] if servers else []
    parts += [_count(runs, "training run")] if runs else []
    return f"{' and '.join(parts)} of other projects"


@contextmanager
def refusals_for(ctx: Context, user: User) -> Iterator[None]:
    """Re-raise a `DeployRefused` from the scheduler (Ray wraps it) as `for_caller` words it."""
    try:
        yield
    except DeployRefused as exc:
        cause = getattr(exc, "cause", exc)
        roles = caller_roles(ctx, user)
        message, candidates = for_caller(ctx, roles, cause.message, cause.delete_candidates)
        raise DeployRefused(message, candidates) from None
