"""The Models Hub: the local catalog of models a configuration may name."""

from preannotate.hub.catalog import Hub, HubError, HubModel
from preannotate.hub.manifest import ModelManifest

__all__ = ["Hub", "HubError", "HubModel", "ModelManifest"]
