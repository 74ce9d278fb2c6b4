"""Training jobs: a run of `hub.training` as Ray work with its own resource request.

The trainer is an actor so that cancelling the job kills it at once and gives its CPUs,
GPUs and memory back; the model is registered in the hub only after a run succeeds, under
the next free `<name>_v<n>`, so a cancelled or failed run leaves no model behind.
"""

import asyncio
import io
import tarfile
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import ray

from preannotate.hub.catalog import Hub, HubModel
from preannotate.hub.training import (
    TrainingData,
    TrainingSpec,
    manifest_for,
    next_version,
    train,
)
from preannotate.store import JobState, Store


@ray.remote(max_restarts=0)
class Trainer:
    def train(
        self, job_id: int, spec: TrainingSpec, data: TrainingData, base: HubModel | None
    ) -> tuple[bytes, dict[str, Any], int, int]:
        """Train and return the model folder as a tar archive (the trainer may run on
        another node than the hub), with the metrics and the data sizes."""
        from preannotate.scheduler.actor import find_scheduler

        scheduler = find_scheduler()

        def on_epoch(epoch: int, loss: float) -> None:
            if scheduler is not None:
                scheduler.training_event.remote(job_id, epoch, loss)

        trained = train(spec, data, base, on_epoch)
        with tempfile.TemporaryDirectory() as folder:
            trained.nlp.to_disk(Path(folder) / "model")
            archive = io.BytesIO()
            with tarfile.open(fileobj=archive, mode="w:gz") as tar:
                tar.add(Path(folder) / "model", arcname="model")
        return archive.getvalue(), trained.metrics, trained.train_size, trained.eval_size


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
        self.store.set_job_state(self.job_id, JobState.RUNNING)
        res = self.spec.resources
        trainer = Trainer.options(
            num_cpus=res.num_cpus, num_gpus=res.num_gpus, memory=res.memory_mb * 2**20 or None
        ).remote()
        try:
            archive, metrics, train_size, eval_size = await trainer.train.remote(
                self.job_id, self.spec, self.data, self.base
            )
        except asyncio.CancelledError:
            self.store.set_job_state(self.job_id, JobState.CANCELLED, self.cancel_reason)
            raise
        except Exception as exc:
            self.store.set_job_state(self.job_id, JobState.FAILED, f"{type(exc).__name__}: {exc}")
            return
        finally:
            ray.kill(trainer)
        name = self._register(archive, metrics, train_size, eval_size)
        self.store.update_job_details(
            self.job_id,
            model=name,
            metrics=metrics,
            log=f"registered {name}: F1 {metrics['f1']:.3f} "
            f"(untrained {metrics['baseline_f1']:.3f})",
        )
        self.store.set_job_state(self.job_id, JobState.SUCCEEDED)

    def _register(
        self, archive: bytes, metrics: dict[str, Any], train_size: int, eval_size: int
    ) -> str:
        """Unpack into a staging folder and add it to the hub as the next version."""
        name, number = next_version(self.hub, self.spec.model_name)
        provenance = {
            "source_project": self.project_id,
            "job_id": self.job_id,
            "completions": len(self.data.texts),
            "train_size": train_size,
            "eval_size": eval_size,
            "created_at": datetime.now(UTC).isoformat(),
        }
        manifest = manifest_for(name, number, self.spec, self.data, metrics, self.base, provenance)
        with tempfile.TemporaryDirectory() as staging:
            folder = Path(staging) / name
            folder.mkdir()
            with tarfile.open(fileobj=io.BytesIO(archive), mode="r:gz") as tar:
                tar.extractall(folder, filter="data")
            (folder / "manifest.json").write_text(manifest.model_dump_json(indent=2))
            self.hub.add(folder)
        return name
