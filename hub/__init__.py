"""The Models Hub: the local catalog of models a configuration may name."""

from hub.catalog import Hub, HubError, HubModel
from hub.manifest import ModelManifest

__all__ = ["Hub", "HubError", "HubModel", "ModelManifest"]
