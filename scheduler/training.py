"""Training jobs: a run of `annotators.training` as Ray work with its own resource request.

The trainer is an actor so that cancelling the job kills it at once and gives its CPUs,
GPUs and memory back. It streams its progress back to the job that awaits it (a Ray
generator: one item per epoch, then the model), so nothing below the scheduler calls the
scheduler. The model is registered in the hub only after a run succeeds, under the next
free `<name>_v<n>`, so a cancelled or failed run leaves no model behind.
"""

import asyncio
import io
import tarfile
import tempfile
from collections.abc import Generator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import ray

from preannotate.annotators.training import Epoch, TrainedModel, TrainingData, train
from preannotate.cluster.capacity import ResourceRequest
from preannotate.cluster.license import OPEN_SCOPE
from preannotate.cluster.ray_cluster import nodes
from preannotate.configs.training import TrainingSpec
from preannotate.hub.catalog import Hub, HubModel
from preannotate.hub.manifest import MANIFEST_FILE
from preannotate.hub.versions import WEIGHTS, manifest_for, next_version
from preannotate.scheduler.controller import RELEASE_TIMEOUT_S, wait_freed
from preannotate.store import JobState, Store


@dataclass
class TrainedArchive:
    """The last item of a trainer's stream: the model folder as a tar archive (the trainer
    may run on another node than the hub), with its metrics and the data sizes."""

    archive: bytes
    metrics: dict[str, Any]
    train_size: int
    eval_size: int

    @classmethod
    def of(cls, trained: TrainedModel) -> "TrainedArchive":
        with tempfile.TemporaryDirectory() as folder:
            trained.nlp.to_disk(Path(folder) / WEIGHTS)
            archive = io.BytesIO()
            with tarfile.open(fileobj=archive, mode="w:gz") as tar:
                tar.add(Path(folder) / WEIGHTS, arcname=WEIGHTS)
        return cls(archive.getvalue(), trained.metrics, trained.train_size, trained.eval_size)


@ray.remote(max_restarts=0)
class Trainer:
    @ray.method(num_returns="streaming")
    def run(
        self, spec: TrainingSpec, data: TrainingData, base: HubModel | None
    ) -> Generator[Epoch | TrainedArchive, None, None]:
        """Stream each epoch as it ends, then the trained model."""
        trained = yield from train(spec, data, base)
        yield TrainedArchive.of(trained)

    def node_id(self) -> str:
        """The node whose resources the run holds."""
        return ray.get_runtime_context().get_node_id()


def training_request(spec: TrainingSpec, base: HubModel | None) -> ResourceRequest:
    """What a training run reserves: checked against the cluster before the job starts,
    then asked of Ray for the trainer actor. A run from a licensed base model loads
    licensed weights, so like a licensed replica it takes a `license_token` (it runs on a
    node that may run licensed models) and a seat."""
    res = spec.resources
    licensed = base is not None and base.manifest.license_scope != OPEN_SCOPE
    return ResourceRequest.of(
        num_cpus=res.num_cpus,
        num_gpus=res.num_gpus,
        memory_mb=res.memory_mb,
        license_tokens=1.0 if licensed else 0.0,
    )


class TrainingJob:
    def __init__(
        self,
        store: Store,
        hub: Hub,
        job_id: int,
        project_id: int,
        spec: TrainingSpec,
        data: TrainingData,
        base: HubModel | None,
    ):
        self.store, self.hub = store, hub
        self.job_id, self.project_id = job_id, project_id
        self.spec, self.data, self.base = spec, data, base
        self.cancel_reason = "cancelled"

    async def run(self) -> None:
        """Train, then register the model. Store and hub work runs in threads, off the
        scheduler's event loop."""
        try:
            await asyncio.to_thread(self.store.set_job_state, self.job_id, JobState.RUNNING)
            model = await self._train()
        except asyncio.CancelledError:
            await asyncio.to_thread(
                self.store.set_job_state, self.job_id, JobState.CANCELLED, self.cancel_reason
            )
            raise
        except Exception as exc:
            await asyncio.to_thread(self._fail, exc)
            return
        # Once trained, the model is registered to the end: a cancel coming in meanwhile
        # waits for it, so a job with a model in the hub never ends as cancelled.
        registering = asyncio.ensure_future(asyncio.to_thread(self._finish, model))
        try:
            await asyncio.shield(registering)
        except asyncio.CancelledError:
            await registering
            raise

    async def _train(self) -> TrainedArchive:
        """Run the trainer actor, recording each epoch as it streams in. The actor is killed
        however this ends, and the job ends once Ray counts its resources free again, as a
        server's delete does: a deploy right after a cancel is not refused against Ray's
        older view. A cancel that comes while the trainer starts first learns its node (for
        up to RELEASE_TIMEOUT_S), since a started trainer holds its share there."""
        request = training_request(self.spec, self.base)
        trainer = Trainer.options(**request.actor_options()).remote()
        placed = trainer.node_id.remote()
        node = None
        try:
            node = await placed
            async for ref in trainer.run.remote(self.spec, self.data, self.base):
                event = await ref
                if isinstance(event, TrainedArchive):
                    return event
                await asyncio.to_thread(self._record, event)
        finally:
            try:
                if node is None:  # cancelled while the trainer started: it may hold its share
                    node = await _answer_within(placed, RELEASE_TIMEOUT_S)
                while_held = await asyncio.to_thread(nodes)  # the trainer still holds its share
            finally:
                ray.kill(trainer)
            if node is not None:
                held = {node: request.per_replica()}
                await asyncio.to_thread(wait_freed, held, while_held)
        raise RuntimeError("the trainer stopped before it sent the model")

    def _record(self, event: Epoch) -> None:
        """An epoch ended: progress, loss and a log line for the job."""
        self.store.record_job_progress(self.job_id, done=1)
        self.store.update_job_details(
            self.job_id,
            epoch=event.epoch,
            loss=event.loss,
            log=f"epoch {event.epoch}/{self.spec.epochs}: loss {event.loss:.4f}",
        )

    def _fail(self, exc: Exception) -> None:
        self.store.set_job_state(self.job_id, JobState.FAILED, f"{type(exc).__name__}: {exc}")

    def _finish(self, model: TrainedArchive) -> None:
        """Register the model and end the job: succeeded, or failed when the hub refuses it
        (e.g. another run took the same version first)."""
        try:
            name = self._register(model)
        except Exception as exc:
            self._fail(exc)
            return
        metrics = model.metrics
        self.store.update_job_details(
            self.job_id,
            model=name,
            metrics=metrics,
            log=f"registered {name}: F1 {metrics['f1']:.3f} "
            f"({metrics.get('baseline_model', 'untrained')} {metrics['baseline_f1']:.3f})",
        )
        self.store.set_job_state(self.job_id, JobState.SUCCEEDED)

    def _register(self, model: TrainedArchive) -> str:
        """Unpack into a staging folder and add it to the hub as the next version."""
        name, number = next_version(self.hub, self.spec.model_name)
        provenance = {
            "source_project": self.project_id,
            "job_id": self.job_id,
            "completions": len(self.data.texts),
            "train_size": model.train_size,
            "eval_size": model.eval_size,
            "created_at": datetime.now(UTC).isoformat(),
        }
        labels = self.data.model_labels(self.base)
        manifest = manifest_for(
            name, number, self.spec, labels, model.metrics, self.base, provenance
        )
        with tempfile.TemporaryDirectory() as staging:
            folder = Path(staging) / name
            folder.mkdir()
            with tarfile.open(fileobj=io.BytesIO(model.archive), mode="r:gz") as tar:
                tar.extractall(folder, filter="data")
            (folder / MANIFEST_FILE).write_text(manifest.model_dump_json(indent=2))
            self.hub.add(folder)
        return name


async def _answer_within(ref: ray.ObjectRef, timeout_s: float) -> Any:
    """What `ref` resolves to, or None when it does not within `timeout_s` or its actor
    died."""
    try:
        return await asyncio.wait_for(asyncio.wrap_future(ref.future()), timeout_s)
    except (TimeoutError, ray.exceptions.RayActorError):
        return None
