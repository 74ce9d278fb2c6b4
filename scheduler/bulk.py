"""Bulk pre-annotation jobs: stream a job's tasks to a server and store its predictions.

Tasks are read a page at a time and sent in batches, bounded in tasks and in characters
of text, with a bounded number in flight, so memory does not grow with the job; each
batch's predictions are written in one transaction. A task the pipeline fails on is sent
again a few times, then recorded as failed while the job goes on. A batch whose replica
died is resent until the server has a replica again. The store skips (task, job) pairs
already written, and a resumed job skips tasks that already have its prediction:
nothing is lost or written twice.

A job with a token budget counts the tokens its external LLM prompts spend (each batch's
answers carry their usage) and sends no new batch once the budget is reached: the
batches under way finish and are written, then the job ends as cancelled with the
reason. So a job may pass its budget by what its last batches spent, at most
`BUDGET_IN_FLIGHT` batches of `BUDGET_BATCH_SIZE` tasks.
"""

import asyncio
import math
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any

from preannotate.deployments.bulk_process import BATCHES_AT_CHILD
from preannotate.deployments.model_server import MAX_ONGOING_REQUESTS
from preannotate.scheduler.errors import ServerGone
from preannotate.scheduler.metrics import Throughput
from preannotate.store import InvalidState, JobState, Store, TaskDocument
from preannotate.store.db import EncodedJSON
from preannotate.store.jobs import LLM_USAGE, tokens_used
from preannotate.store.models import Job, Server
from preannotate.store.tasks import chunks

Predict = Callable[[list[dict[str, Any]]], Awaitable[list[dict[str, Any]]]]

PAGE_SIZE = 1024
BATCH_SIZE = 512
"""Tasks per batch at most. Each batch costs about 18 ms of CPU on its way (the
scheduler's transaction and handle call, the replica's hand-over, Ray's own processes),
whatever its size: larger batches leave the replicas more of the cores."""
BATCH_CHARS = 2_000_000
"""Characters of task text per batch at most (beyond its first task): long documents go
in smaller batches, so the text in flight stays near the batches in flight x
`BATCH_CHARS`."""
IN_FLIGHT = 8
"""Batches a job keeps in flight at least; more for a larger or autoscaled server
(`in_flight_for`)."""
MIN_BATCH_SIZE = 16
"""A job with fewer than its batches in flight x `BATCH_SIZE` tasks left (all of a small
job, the rest of a resumed one) is cut into about as many batches as it keeps in flight,
of at least this many tasks, so it still reaches every replica at once."""
TASK_ATTEMPTS = 3
"""How often a task the pipeline failed on is tried before it is recorded as failed."""
CALL_RETRY_S = 120.0
"""How long a batch is resent while its server has no live replica (e.g. one was killed)."""
BUDGET_BATCH_SIZE = 4
BUDGET_IN_FLIGHT = 2
"""Smaller batches, fewer in flight, for a job with a token budget: it stops closer to it."""


MAX_BULK_PER_REPLICA = MAX_ONGOING_REQUESTS // 2
"""A job's batches never take more than half of a replica's `max_ongoing_requests`, so an
interactive call always finds room, whatever `target_ongoing_requests` says."""


def in_flight_for(server: Server) -> int:
    """Batches a job on `server` keeps in flight: enough that each replica holds the
    `BATCHES_AT_CHILD` its bulk process works through without a pause, and, for an
    autoscaled server, that Serve sees enough ongoing requests per replica
    (`target_ongoing_requests`, up to `MAX_BULK_PER_REPLICA`) to scale up to
    `max_replicas`."""
    scaling = (server.config.get("resources") or {}).get("autoscaling")
    if scaling:
        target = math.ceil(scaling["target_ongoing_requests"])
        per_replica = min(max(BATCHES_AT_CHILD, target), MAX_BULK_PER_REPLICA)
        return max(IN_FLIGHT, per_replica * scaling["max_replicas"])
    return max(IN_FLIGHT, BATCHES_AT_CHILD * server.replicas)


@dataclass(frozen=True)
class Page:
    todo: list[TaskDocument]
    """The page's tasks that still need this job's prediction."""
    last: int
    """The page's last task id, where the next page starts; 0 after the last page."""


class BulkJob:
    def __init__(
        self,
        store: Store,
        job_id: int,
        server_id: str,
        predict: Predict,
        batch_size: int = BATCH_SIZE,
        in_flight: int = IN_FLIGHT,
    ):
        self.store = store
        self.job_id = job_id
        self.server_id = server_id
        self.predict = predict
        self.batch_size = batch_size
        self.in_flight = in_flight
        self.slots = asyncio.Semaphore(in_flight)
        self.pending: set[asyncio.Task[None]] = set()
        self.cancel_reason = "cancelled"
        self.budget: int | None = None
        self.tokens = 0
        """External LLM tokens the job has spent, this run and earlier ones."""
        self.throughput = Throughput()
        """Tasks this run finished (predicted or failed), for the metrics page."""

    async def _pages(self, job: Job) -> AsyncIterator[list[TaskDocument]]:
        """The job's `(id, data)` rows not predicted by this job yet, a page at a time (the
        selected ids, or the project's), each read in a thread off the scheduler's loop."""
        selected = job.params.get("task_ids")
        if selected:
            for chunk in chunks(sorted(selected), PAGE_SIZE):
                page = await asyncio.to_thread(self._page, job.project_id, 0, len(chunk), chunk)
                yield page.todo
            return
        after = 0
        while (page := await asyncio.to_thread(self._page, job.project_id, after, PAGE_SIZE)).last:
            yield page.todo
            after = page.last

    def _page(
        self, project_id: int, after: int, limit: int, among: list[int] | None = None
    ) -> Page:
        tasks = self.store.task_documents(project_id, after, limit, among)
        written = self.store.task_ids_with_job_prediction(self.job_id, [t.id for t in tasks])
        return Page(
            todo=[t for t in tasks if t.id not in written], last=tasks[-1].id if tasks else 0
        )

    def _over_budget(self) -> bool:
        return self.budget is not None and self.tokens >= self.budget

    async def _start(self) -> Job | None:
        """The job, now running, with its batch size and budget set; None when it ended
        (was cancelled) before it started."""
        job = await asyncio.to_thread(self.store.get_job, self.job_id)
        if job.state not in (JobState.QUEUED, JobState.RUNNING):
            return None  # cancelled between the scheduler reading it and starting it
        self.budget, self.tokens = job.params.get("token_budget"), tokens_used(job)
        left = job.total - job.done - job.failed  # a resumed job spreads what is left
        spread = -(-left // self.in_flight)
        self.batch_size = min(self.batch_size, max(MIN_BATCH_SIZE, spread))
        if self.budget is not None:
            self.batch_size = min(self.batch_size, BUDGET_BATCH_SIZE)
            self.slots = asyncio.Semaphore(BUDGET_IN_FLIGHT)
        if job.state != JobState.RUNNING:
            try:
                await asyncio.to_thread(self.store.set_job_state, self.job_id, JobState.RUNNING)
            except InvalidState:  # cancelled meanwhile
                return None
        return job

    async def run(self) -> None:
        """Send the job's batches and store their predictions; a cancel, also one that comes
        while the job starts, ends it as cancelled with what it wrote."""
        try:
            if (job := await self._start()) is None:
                return
            async for todo in self._pages(job):
                for batch in batches(todo, self.batch_size):
                    await self.slots.acquire()
                    if self._over_budget():
                        self.slots.release()
                        break
                    task = asyncio.create_task(self._batch(batch))
                    self.pending.add(task)
                    task.add_done_callback(self._finished)
                if self._over_budget():
                    break
            await asyncio.gather(*self.pending)
        except asyncio.CancelledError:
            await self._stop(JobState.CANCELLED, self.cancel_reason)
            raise
        except ServerGone as exc:
            await self._stop(JobState.CANCELLED, str(exc))
            return
        except Exception as exc:
            await self._stop(JobState.FAILED, f"{type(exc).__name__}: {exc}")
            return
        await asyncio.to_thread(self._end)

    def _end(self) -> None:
        """Succeed, or, when the budget stopped the job with tasks left, end as cancelled
        with the reason (read after the last batch was written)."""
        job = self.store.get_job(self.job_id)
        left = job.total - job.done - job.failed
        if self._over_budget() and left > 0:
            reason = (
                f"token budget reached: external LLM prompts used {tokens_used(job)} tokens "
                f"of {self.budget}; {left} of {job.total} tasks were not pre-annotated"
            )
            self.store.set_job_state(self.job_id, JobState.CANCELLED, reason)
            return
        self.store.set_job_state(self.job_id, JobState.SUCCEEDED)

    def _finished(self, task: asyncio.Task[None]) -> None:
        self.pending.discard(task)
        self.slots.release()

    async def _stop(self, state: JobState, reason: str) -> None:
        for task in list(self.pending):
            task.cancel()
        await asyncio.gather(*self.pending, return_exceptions=True)
        await asyncio.to_thread(self.store.set_job_state, self.job_id, state, reason)

    async def _call(self, tasks: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Send a batch; while the server has no live replica, wait and resend."""
        deadline = time.monotonic() + CALL_RETRY_S
        delay = 0.2
        while True:
            try:
                return await self.predict(tasks)
            except (asyncio.CancelledError, ServerGone):
                raise
            except Exception:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(delay)
                delay = min(delay * 2, 3.0)

    async def _batch(self, batch: list[TaskDocument]) -> None:
        todo = {t.id: {"id": t.id, "data": t.data} for t in batch}
        errors: dict[int, str] = {}
        for _ in range(TASK_ATTEMPTS):
            try:
                predictions = await self._call(list(todo.values()))
            except (asyncio.CancelledError, ServerGone):
                raise
            except Exception as exc:
                errors.update({task_id: f"{type(exc).__name__}: {exc}" for task_id in todo})
                break
            rows = []
            usage = {
                key: sum(p.get("usage", {}).get(key, 0) for p in predictions) for key in LLM_USAGE
            }
            if any(usage.values()):
                await asyncio.to_thread(self.store.record_job_progress, self.job_id, usage=usage)
                self.tokens += usage["prompt_tokens"] + usage["completion_tokens"]
            for prediction in predictions:
                task_id = prediction["task_id"]
                if prediction.get("error"):
                    errors[task_id] = prediction["error"]
                    continue
                errors.pop(task_id, None)
                todo.pop(task_id)
                rows.append(
                    {
                        "task_id": task_id,
                        "job_id": self.job_id,
                        "server_id": self.server_id,
                        "result": EncodedJSON(prediction["result"]),
                        "score": prediction["score"],
                        "model_version": prediction["model_version"],
                        "config_hash": prediction["model_version"],
                    }
                )
            if rows:
                await asyncio.to_thread(self.store.add_predictions, rows, self.job_id)
                self.throughput.add(len(rows))
            if not todo:
                return
        failures = [{"task_id": task_id, "error": errors[task_id]} for task_id in todo]
        await asyncio.to_thread(
            self.store.record_job_progress, self.job_id, failed=len(failures), errors=failures
        )
        self.throughput.add(len(failures))


def text_chars(data: Any) -> int:
    """The characters of a task's text values (its top-level strings): what a batch's size
    in memory grows with."""
    if not isinstance(data, dict):
        return 0
    return sum(len(value) for value in data.values() if isinstance(value, str))


def batches(
    todo: list[TaskDocument], size: int, chars: int = BATCH_CHARS
) -> Iterator[list[TaskDocument]]:
    """`todo` in order, in batches of at most `size` tasks and `chars` characters of text;
    a task longer than `chars` travels alone."""
    batch: list[TaskDocument] = []
    used = 0
    for task in todo:
        length = text_chars(task.data)
        if batch and (len(batch) == size or used + length > chars):
            yield batch
            batch, used = [], 0
        batch.append(task)
        used += length
    if batch:
        yield batch
