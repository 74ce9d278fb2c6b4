"""The named, detached scheduler actor. Thin: it serializes deploys and deletes (the Serve
controller is one actor anyway), runs jobs as concurrent asyncio tasks, and delegates the
work to `scheduler.controller`, `scheduler.bulk` and `scheduler.training`. Blocking work
(store, hub, Serve calls) runs in threads, never on the actor's event loop.

The store is the desired state: when the actor starts (a new cluster on an existing data
directory, or a restart after a crash) it brings back the servers recorded as live, then
resumes their unfinished jobs."""

import asyncio
from contextlib import suppress
from pathlib import Path
from typing import Any

import ray
from pydantic import ValidationError
from ray import serve
from ray.actor import ActorHandle

from preannotate.annotators.pipeline import check_runnable
from preannotate.annotators.training import TrainingData, check_base, training_data
from preannotate.cluster.deploy_spec import DeploySpec
from preannotate.cluster.license import License
from preannotate.cluster.ray_cluster import NAMESPACE, ON_THE_HEAD
from preannotate.configs.errors import ConfigError, validation_problems
from preannotate.configs.training import TrainingSpec
from preannotate.deployments.model_server import inline_config
from preannotate.hub.catalog import Hub, HubModel
from preannotate.scheduler.bulk import IN_FLIGHT, BulkJob, in_flight_for
from preannotate.scheduler.controller import GONE, UNUSABLE, DeployController
from preannotate.scheduler.errors import DeployRefused, ServerGone
from preannotate.scheduler.metrics import BulkRate, scrape
from preannotate.scheduler.training import TrainingJob, training_request
from preannotate.store import (
    InvalidInput,
    InvalidState,
    JobKind,
    JobState,
    NotFound,
    ServerStatus,
    Store,
)

SCHEDULER_NAME = "preannotate-scheduler"
READY_TIMEOUT_S = 600.0


@ray.remote(num_cpus=0, max_restarts=-1, resources=ON_THE_HEAD)
class Scheduler:
    def __init__(self, database_url: str, hub_root: str, license: License | None):
        self.store = Store(database_url, create_schema=False)  # `start_control_plane` made it
        self.servers = DeployController(self.store, Hub(Path(hub_root)), license)
        self.lock = asyncio.Lock()
        """Held by deploys, deletes, restores and training admissions: one at a time."""
        self.admitting = asyncio.Lock()
        """Held briefly while a bulk job picks its server and is written, and while a delete
        marks its server: a job never starts on a server whose delete has read its jobs."""
        self.jobs: dict[int, tuple[asyncio.Task[None], BulkJob | TrainingJob]] = {}
        live = [s.id for s in self.store.list_servers() if s.status not in UNUSABLE]
        self.servers.restoring.update(live)
        ray.get_runtime_context().current_actor.start.remote(live)

    @ray.method(max_task_retries=-1)
    async def start(self, server_ids: list[str]) -> None:
        """Restore the servers recorded as live, one at a time, then resume their jobs.
        Called by `__init__` on this actor itself; after a restart the actor may still
        count as restarting when the call is sent, so the call is retried until it lands."""
        async with self.lock:
            for server_id in server_ids:
                await asyncio.to_thread(self.servers.restore, server_id)
        await self.resume_jobs()

    async def deploy(self, project_id: int) -> dict[str, Any]:
        async with self.lock:
            return await asyncio.to_thread(self.servers.deploy, project_id)

    async def delete_server(self, server_id: str) -> dict[str, Any]:
        """Jobs on the server end as cancelled (keeping what they wrote), then it goes. It is
        marked as being deleted under the admission lock first, so no job picks it after
        its jobs were read."""
        async with self.lock:
            await asyncio.to_thread(self.store.get_server, server_id)
            async with self.admitting:
                self.servers.closing.add(server_id)
            try:
                for job in await asyncio.to_thread(self.store.unfinished_jobs):
                    if job.server_id == server_id:
                        await self._cancel(job.id, f"server {server_id} was deleted")
                return await asyncio.to_thread(self.servers.delete, server_id)
            finally:
                self.servers.closing.discard(server_id)

    async def list_servers(self) -> list[dict[str, Any]]:
        return await asyncio.to_thread(self.servers.list)

    async def get_server(self, server_id: str) -> dict[str, Any]:
        return await asyncio.to_thread(self.servers.describe, server_id)

    async def metrics(self) -> bytes:
        """The whole cluster's figures in the Prometheus text format (`scheduler.metrics`)."""
        rates = [
            BulkRate(job_id, runner.server_id, runner.throughput.rate())
            for job_id, (_, runner) in self.jobs.items()
            if isinstance(runner, BulkJob)
        ]
        return await asyncio.to_thread(scrape, self.servers, rates)

    async def preannotate_options(self, project_id: int) -> dict[str, Any]:
        return await asyncio.to_thread(self.servers.options, project_id)

    async def project_pipeline(self, project_id: int) -> dict[str, Any]:
        """What runs the project's configuration outside Serve (Spark and file
        pre-annotation with no server deployed): the configuration with its rules written
        out, the hub, and one replica's actor options; refused as a deploy would be."""

        def describe() -> dict[str, Any]:
            config = self.servers.project_config(project_id)
            check_runnable(config)
            if problem := self.servers.license_problem(
                {n: m.license_scope for n, m in config.models.items()}
            ):
                raise DeployRefused(f"Cannot run: {problem}")
            return {
                "config_hash": config.hash,
                "project": inline_config(config),
                "hub_root": str(self.servers.hub.root),
                "text_keys": sorted({o.value for o in config.labeling.objects}),
                "actor_options": DeploySpec.from_config(config).request.actor_options(),
            }

        return await asyncio.to_thread(describe)

    async def submit_training(self, project_id: int, request: dict[str, Any]) -> int:
        """Check everything a training run needs, then start it as Ray work; returns the job.
        The checks read the store, the hub and the cluster's state, so they run in a thread;
        the capacity and seat check takes the deploy lock, so a deploy cannot take the
        same seat meanwhile."""
        try:
            spec = TrainingSpec.model_validate(request)
        except ValidationError as exc:
            raise ConfigError(validation_problems(exc, "training request")) from None

        def prepare() -> tuple[TrainingData, HubModel | None]:
            config = self.servers.project_config(project_id)
            annotated = [
                (task.id, task.data, completion.result)
                for task, completion in self.store.annotated_tasks(project_id)
            ]
            data = training_data(spec, config.labeling, annotated)
            return data, check_base(spec, self.servers.hub)

        def admit(data: TrainingData, base: HubModel | None) -> TrainingJob:
            if base is not None:
                problem = self.servers.license_problem({base.name: base.manifest.license_scope})
                if problem:
                    raise DeployRefused(f"Cannot train: {problem}")
            request = training_request(spec, base)
            fit = self.servers.fit(request)
            if not fit.fits:
                raise DeployRefused(fit.explain("train"), fit.delete_candidates)
            job = self.store.create_job(
                project_id, JobKind.TRAIN, params=spec.model_dump(), total=spec.epochs
            )
            if request.seats:
                self.servers.licensed_runs.add(job.id)
            return TrainingJob(self.store, self.servers.hub, job.id, project_id, spec, data, base)

        data, base = await asyncio.to_thread(prepare)
        async with self.lock:
            runner = await asyncio.to_thread(admit, data, base)
            self._track(runner.job_id, runner)
        return runner.job_id

    def _server_for(self, project_id: int, server_id: str | None) -> str | None:
        """The server a job uses: the one asked for, which must serve the project's current
        configuration, else a live one that does, which the project joins as a deploy would
        have it; None when there is none. Called under the admission lock, under which a
        delete marks its server: the answer is not being deleted."""
        config = self.servers.project_config(project_id)
        if server_id is None:
            return self.servers.join_shared(project_id, config.hash)
        server = self.store.get_server(server_id)
        if server.deleted_at is not None or server_id in self.servers.closing:
            raise InvalidState(f"server {server_id} was deleted")
        if server.config_hash != config.hash:
            raise InvalidState(
                f"server {server_id} serves another configuration than project "
                f"{project_id}'s current one; deploy the project or leave out server_id"
            )
        return server_id

    async def submit_preannotate(
        self,
        project_id: int,
        task_ids: list[int] | None,
        server_id: str | None,
        deploy_if_missing: bool,
        token_budget: int | None = None,
    ) -> int:
        """Queue a bulk pre-annotation job and start it; returns the job id. With a
        `token_budget`, the job stops once its external LLM prompts used that many tokens.
        With no server for the project's configuration, one is deployed first when
        `deploy_if_missing` (under the deploy lock, not the admission lock, so jobs on ready
        servers are not held up meanwhile)."""
        if task_ids:
            ids = sorted(set(task_ids))
            if missing := await asyncio.to_thread(self.store.missing_task_ids, project_id, ids):
                raise InvalidInput(
                    f"tasks not in project {project_id}: {', '.join(map(str, missing[:10]))}"
                    + (f" and {len(missing) - 10} more" if len(missing) > 10 else "")
                )
            total = len(ids)
        else:
            ids = None
            total = await asyncio.to_thread(self.store.count_tasks, project_id)

        params = {"task_ids": ids, "token_budget": token_budget}
        job_id = await self._admit(project_id, server_id, params, total)
        if job_id is None and deploy_if_missing:
            deployed = (await self.deploy(project_id))["id"]
            job_id = await self._admit(project_id, deployed, params, total)
        if job_id is None:
            raise DeployRefused(
                f"no server has project {project_id}'s current configuration; deploy one first "
                "or ask for deploy_if_missing"
            )
        return job_id

    async def _admit(
        self, project_id: int, server_id: str | None, params: dict[str, Any], total: int
    ) -> int | None:
        """Write and start a bulk job on its server (`_server_for`); None when no server
        has the project's configuration. Under the admission lock, so a delete of the
        server cancels the job, or came first."""

        def admit() -> tuple[int, str, int] | None:
            server = self._server_for(project_id, server_id)
            if server is None:
                return None
            job = self.store.create_job(
                project_id, JobKind.PREANNOTATE, params=params, server_id=server, total=total
            )
            return job.id, server, self._in_flight(server)

        async with self.admitting:
            started = await asyncio.to_thread(admit)
            if started is None:
                return None
            self._start(*started)
            return started[0]

    def _in_flight(self, server_id: str) -> int:
        """The batches a job on the server keeps in flight (`in_flight_for`); `IN_FLIGHT`
        for a job whose server has no row, so resuming goes on with the other jobs."""
        try:
            return in_flight_for(self.store.get_server(server_id))
        except NotFound:
            return IN_FLIGHT

    def _start(self, job_id: int, server_id: str, in_flight: int) -> None:
        handle: list[Any] = []
        opening = asyncio.Lock()
        """The job's first batch waits for the server and opens its handle; the batches
        sent beside it wait for that instead of each reading Serve's state (0.1 to 0.25 s
        apiece, all at once)."""

        async def predict(tasks: list[dict[str, Any]]) -> list[dict[str, Any]]:
            if not handle:
                async with opening:
                    if not handle:
                        await self._wait_ready(server_id)
                        handle.append(await asyncio.to_thread(serve.get_app_handle, server_id))
            try:
                return await handle[0].annotate.remote(tasks)
            except Exception:
                state, message = await asyncio.to_thread(self.servers.server_state, server_id)
                if state == ServerStatus.DELETING or message == GONE:
                    raise ServerGone(f"server {server_id} is {state}: {message}") from None
                raise

        self._track(job_id, BulkJob(self.store, job_id, server_id, predict, in_flight=in_flight))

    def _track(self, job_id: int, runner: BulkJob | TrainingJob) -> None:
        task = asyncio.create_task(runner.run())

        def ended(_: asyncio.Task[None]) -> None:
            self.jobs.pop(job_id, None)
            self.servers.licensed_runs.discard(job_id)

        task.add_done_callback(ended)
        self.jobs[job_id] = (task, runner)

    async def _wait_ready(self, server_id: str) -> None:
        """A job waits for a server that is still deploying or loading."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + READY_TIMEOUT_S
        while loop.time() < deadline:
            state, message = await asyncio.to_thread(self.servers.server_state, server_id)
            if state == ServerStatus.READY:
                return
            if state in (ServerStatus.FAILED, ServerStatus.DELETING):
                raise ServerGone(f"server {server_id} is {state}: {message or 'no details'}")
            await asyncio.sleep(0.5)
        raise ServerGone(f"server {server_id} was not ready after {READY_TIMEOUT_S:.0f} s")

    async def cancel_job(self, job_id: int, reason: str) -> None:
        job = await asyncio.to_thread(self.store.get_job, job_id)
        if job.state not in (JobState.QUEUED, JobState.RUNNING):
            raise InvalidState(f"job {job_id} already ended ({job.state})")
        await self._cancel(job_id, reason)

    async def _cancel(self, job_id: int, reason: str) -> None:
        running = self.jobs.get(job_id)
        if running is not None:
            task, runner = running
            runner.cancel_reason = reason
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        # a runner cancelled before it ran at all (its task never started) recorded nothing
        await asyncio.to_thread(self._end_cancelled, job_id, reason)

    def _end_cancelled(self, job_id: int, reason: str) -> None:
        """Cancelled, unless the runner recorded it (a no-op) or it ended otherwise."""
        with suppress(InvalidState):
            self.store.set_job_state(job_id, JobState.CANCELLED, reason)

    async def resume_jobs(self) -> list[int]:
        """Restart the bulk jobs a previous scheduler left unfinished (they skip finished
        tasks); training runs died with it and end as failed, to be started again."""
        resumed = []
        for job in await asyncio.to_thread(self.store.unfinished_jobs):
            if job.id in self.jobs:
                continue
            try:
                if job.kind == JobKind.TRAIN:
                    await asyncio.to_thread(
                        self.store.set_job_state,
                        job.id,
                        JobState.FAILED,
                        "the scheduler restarted during training; start it again",
                    )
                    continue
                if job.state == JobState.RUNNING:
                    await asyncio.to_thread(self.store.set_job_state, job.id, JobState.QUEUED)
            except InvalidState:  # cancelled since it was read: it stays so
                continue
            in_flight = await asyncio.to_thread(self._in_flight, job.server_id)
            if job.id in self.jobs:  # started by another call during the awaits above
                continue
            self._start(job.id, job.server_id, in_flight)
            resumed.append(job.id)
        return resumed


def start_scheduler(database_url: str, hub_root: str, license: License | None) -> ActorHandle:
    """Create the scheduler, or return the one already running in this cluster."""
    return Scheduler.options(
        name=SCHEDULER_NAME, namespace=NAMESPACE, lifetime="detached", get_if_exists=True
    ).remote(database_url, hub_root, license)


def find_scheduler() -> ActorHandle | None:
    try:
        return ray.get_actor(SCHEDULER_NAME, namespace=NAMESPACE)
    except ValueError:
        return None
