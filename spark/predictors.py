"""Who annotates the batches: the project's server, or pipeline actors when none runs.

A server is called through its deployment handle on the bulk lane (`ModelServer.annotate`),
the lane the store's bulk jobs use, so interactive calls keep their priority. With no
server deployed, actors asking for one replica's resources load the same pipeline.
Both are handed to the unit tasks, which run on the Ray workers.
"""

import itertools
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import ray
from ray.actor import ActorHandle

from preannotate.annotators.pipeline import Pipeline
from preannotate.configs.project import ProjectConfig
from preannotate.hub.catalog import Hub
from preannotate.hub.validation import validate_config

Json = dict[str, Any]
CALL_TIMEOUT_S = 600.0


@ray.remote
class PipelineActor:
    """One loaded pipeline outside Serve, for a project that has no server deployed."""

    def __init__(self, project: Json, hub_root: str):
        hub = Hub(Path(hub_root))
        self.pipeline = Pipeline(validate_config(ProjectConfig.model_validate(project), hub), hub)

    def annotate(self, tasks: list[Json]) -> list[Json]:
        return [p.as_encoded_json() for p in self.pipeline.annotate(tasks)]


@dataclass
class ServerPredictor:
    server_id: str
    _handle: Any = field(default=None, repr=False, compare=False)

    def __getstate__(self) -> Json:
        return {"server_id": self.server_id}

    def __setstate__(self, state: Json) -> None:
        self.server_id, self._handle = state["server_id"], None

    def submit(self, tasks: list[Json]) -> Any:
        if self._handle is None:
            from ray import serve

            self._handle = serve.get_app_handle(self.server_id)
        return self._handle.annotate.remote(tasks)

    def result(self, call: Any) -> list[Json]:
        return call.result(timeout_s=CALL_TIMEOUT_S)

    def close(self) -> None:
        """Nothing to release: the server belongs to the cluster."""


@dataclass
class ActorPredictor:
    actors: list[ActorHandle]
    _turn: Any = field(default=None, repr=False, compare=False)

    def __getstate__(self) -> Json:
        return {"actors": self.actors}

    def __setstate__(self, state: Json) -> None:
        self.actors, self._turn = state["actors"], None

    def submit(self, tasks: list[Json]) -> Any:
        if self._turn is None:  # each unit task starts at another actor
            start = random.randrange(len(self.actors))
            self._turn = itertools.cycle(self.actors[start:] + self.actors[:start])
        return next(self._turn).annotate.remote(tasks)

    def result(self, call: Any) -> list[Json]:
        return ray.get(call, timeout=CALL_TIMEOUT_S)

    def close(self) -> None:
        for actor in self.actors:
            ray.kill(actor)


def pipeline_actors(pipeline: Json, count: int) -> ActorPredictor:
    """`count` pipeline actors with one replica's resource request each (`project_pipeline`
    of the scheduler: the configuration, the hub, the actor options)."""
    options = pipeline["actor_options"]
    actors = [
        PipelineActor.options(**options).remote(pipeline["project"], pipeline["hub_root"])
        for _ in range(count)
    ]
    return ActorPredictor(actors)
