"""How one server is deployed, derived once from its validated configuration.

The capacity check, the Serve deployment options and the stored server record all read
this one spec, so the replica count, autoscaling and unit conversions are decided in one
place.
"""

from typing import Any

from pydantic import BaseModel, ConfigDict

from preannotate.cluster.capacity import ResourceRequest
from preannotate.hub.validation import ValidatedConfig


class DeploySpec(BaseModel):
    model_config = ConfigDict(frozen=True)

    request: ResourceRequest
    """One replica's resources; `replicas` is what must be placed before a deploy returns
    (an autoscaled server is checked for its first replica)."""
    autoscaling: dict[str, Any] | None = None
    """Serve's `autoscaling_config`, or None for a fixed number of replicas."""

    @classmethod
    def from_config(cls, config: ValidatedConfig) -> "DeploySpec":
        need = config.replica_resources()
        resources = config.project.resources
        scaling = resources.autoscaling
        replicas = max(1, scaling.min_replicas) if scaling else resources.replicas
        return cls(
            request=ResourceRequest.of(
                num_cpus=need["num_cpus"],
                num_gpus=need["num_gpus"],
                memory_mb=need["memory_mb"],
                license_tokens=need["license_tokens"],
                replicas=replicas,
            ),
            autoscaling=scaling.model_dump() if scaling else None,
        )

    @property
    def replicas_to_place(self) -> int:
        """Replicas a deploy waits for: none for autoscaling, which may start at zero."""
        return 0 if self.autoscaling else self.request.replicas

    def deployment_options(self) -> dict[str, Any]:
        """The `Deployment.options(...)` of the server's model server."""
        options: dict[str, Any] = {"ray_actor_options": self.request.actor_options()}
        if self.autoscaling is not None:
            options["autoscaling_config"] = self.autoscaling
        else:
            options["num_replicas"] = self.request.replicas
        return options
