"""Jobs: state, progress and errors of bulk pre-annotation and training runs.

The scheduler is the only writer of a job but may be restarted at any time; it rebuilds
its queue from `unfinished_jobs()`. States move along fixed transitions, so a late or
repeated message (a second "succeeded", a "running" after a cancel, a resume of a job
that already succeeded) cannot rewrite a job's history.
"""

from collections.abc import Iterable, Mapping
from typing import Any

from sqlalchemy import func, select

from preannotate.store.db import Database, get_or_raise
from preannotate.store.errors import InvalidState
from preannotate.store.models import (
    UNFINISHED_JOB_STATES,
    Job,
    JobKind,
    JobState,
    Project,
    parse_choice,
    utcnow,
)

JOB_ERRORS_KEPT = 100
JOB_LOG_KEPT = 500
"""How many of the latest task errors a job keeps; `failed` counts all of them."""

_TRANSITIONS: dict[JobState, set[JobState]] = {
    JobState.QUEUED: {JobState.RUNNING, JobState.CANCELLED, JobState.FAILED},
    # Back to queued: a restarted scheduler re-queues the bulk jobs that were running when
    # it died; they keep their ids, so tasks they already predicted are skipped.
    JobState.RUNNING: {JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED, JobState.QUEUED},
    JobState.FAILED: set(),
    JobState.CANCELLED: set(),
    JobState.SUCCEEDED: set(),
}
_FINISHED = {JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED}
LLM_USAGE = ("llm_requests", "prompt_tokens", "completion_tokens")
"""The job's columns that count external LLM calls and their tokens."""


def tokens_used(job: Job) -> int:
    """Prompt and completion tokens a job has spent on external LLMs so far."""
    return (job.prompt_tokens or 0) + (job.completion_tokens or 0)


class JobOps(Database):
    def create_job(
        self,
        project_id: int,
        kind: str,
        *,
        params: dict[str, Any] | None = None,
        server_id: str | None = None,
        total: int = 0,
    ) -> Job:
        """A queued job of `kind` ('preannotate' or 'train') over `total` tasks."""
        job_kind = parse_choice(JobKind, kind, "job kind")
        with self._write() as session:
            get_or_raise(session, Project, project_id)
            job = Job(
                project_id=project_id,
                kind=job_kind.value,
                state=JobState.QUEUED.value,
                server_id=server_id,
                params=params or {},
                total=total,
                done=0,
                failed=0,
                errors=[],
            )
            session.add(job)
        return job

    def get_job(self, job_id: int) -> Job:
        with self._read() as session:
            return get_or_raise(session, Job, job_id)

    def list_jobs(
        self, project_id: int | None = None, states: Iterable[str] | None = None
    ) -> list[Job]:
        """Jobs by id, optionally of one project and/or in some states."""
        query = select(Job).order_by(Job.id)
        if project_id is not None:
            query = query.where(Job.project_id == project_id)
        if states is not None:
            wanted = [parse_choice(JobState, state, "job state").value for state in states]
            query = query.where(Job.state.in_(wanted))
        with self._read() as session:
            return list(session.scalars(query))

    def job_totals(self) -> list[tuple[str, str, str | None, int, int, int]]:
        """`(kind, state, server_id, jobs, done, failed)` per group, in one aggregate query:
        what the metrics page reads at every scrape, without loading a job row."""
        query = select(
            Job.kind,
            Job.state,
            Job.server_id,
            func.count(),
            func.coalesce(func.sum(Job.done), 0),
            func.coalesce(func.sum(Job.failed), 0),
        ).group_by(Job.kind, Job.state, Job.server_id)
        with self._read() as session:
            return [tuple(row) for row in session.execute(query)]  # type: ignore[misc]

    def unfinished_jobs(self) -> list[Job]:
        """Queued and running jobs, oldest first: what a restarted scheduler must pick up."""
        return self.list_jobs(states=UNFINISHED_JOB_STATES)

    def record_job_progress(
        self,
        job_id: int,
        *,
        done: int = 0,
        failed: int = 0,
        errors: Iterable[Mapping[str, Any]] = (),
        usage: Mapping[str, int] | None = None,
    ) -> Job:
        """Add to the done/failed counts, append `{task_id, error}` entries, and add the
        external LLM calls and tokens spent (`usage`: `LLM_USAGE` keys).

        Only the latest `JOB_ERRORS_KEPT` errors are kept so a job failing on every task
        of a huge project does not grow one row without bound.
        """
        new_errors = [{"task_id": e["task_id"], "error": str(e["error"])} for e in errors]
        with self._write() as session:
            job = get_or_raise(session, Job, job_id, for_update=True)
            job.done += done
            job.failed += failed
            job.errors = (job.errors + new_errors)[-JOB_ERRORS_KEPT:]
            for key, amount in (usage or {}).items():
                if key in LLM_USAGE and amount:
                    setattr(job, key, (getattr(job, key) or 0) + amount)
        return job

    def update_job_details(self, job_id: int, log: str | None = None, **fields: Any) -> Job:
        """Merge `fields` into the job's details and append `log` to its kept log lines."""
        with self._write() as session:
            job = get_or_raise(session, Job, job_id, for_update=True)
            details = dict(job.details or {}) | fields
            if log is not None:
                details["log"] = [*details.get("log", []), log][-JOB_LOG_KEPT:]
            job.details = details
        return job

    def set_job_state(self, job_id: int, state: str, reason: str | None = None) -> Job:
        """Move a job to `state` with an optional reason (why it failed or was cancelled).

        Setting the state it already has is a no-op, so a retried message is harmless.
        The row is locked while the transition is checked, so of two racing changes (a
        cancel and a success) the second sees the first's result and is refused.
        """
        target = parse_choice(JobState, state, "job state")
        with self._write() as session:
            job = get_or_raise(session, Job, job_id, for_update=True)
            current = JobState(job.state)
            if target == current:
                return job
            if target not in _TRANSITIONS[current]:
                raise InvalidState(f"job {job_id} is {current}; it cannot become {target}")
            job.state = target.value
            job.reason = reason
            if target == JobState.RUNNING:
                job.started_at = utcnow()
            job.finished_at = utcnow() if target in _FINISHED else None
        return job
