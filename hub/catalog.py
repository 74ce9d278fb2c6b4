"""The catalog: built-in models shipped with the package plus model folders in the hub dir."""

import difflib
import json
import shutil
import socket
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from pydantic import ValidationError

from preannotate.configs.errors import ConfigError, validation_problems
from preannotate.configs.paths import SEVERAL_MACHINES, hub_dir
from preannotate.configs.textfiles import read_text
from preannotate.hub.manifest import MANIFEST_FILE, ModelManifest


class HubError(ValueError):
    """A model that cannot be found or registered, with a message a user can act on."""


@dataclass(frozen=True)
class HubModel:
    manifest: ModelManifest
    folder: Path | None  # None for a built-in that loads from an installed package
    builtin: bool = False

    @property
    def name(self) -> str:
        return self.manifest.name

    def weights_path(self) -> Path | None:
        """The folder holding the weights, checked to stay inside the model folder."""
        if self.folder is None or self.manifest.path is None:
            return None
        return _weights_folder(self.folder, self.manifest.path)


def _resolved(path: Path) -> Path:
    """`path` with every symlink followed, or a HubError for a symlink that loops."""
    try:
        return path.resolve()
    except (RuntimeError, OSError) as exc:  # a loop: RuntimeError up to Python 3.12
        raise HubError(f"{path} cannot be followed: {exc}") from None


def _weights_folder(folder: Path, relative: str) -> Path:
    """The manifest's weights folder: it must exist inside the model folder."""
    target = _resolved(folder / relative)
    if not target.is_relative_to(_resolved(folder)):
        raise HubError(f"manifest path '{relative}' points outside the model folder {folder}")
    if not target.is_dir():
        raise HubError(
            f"manifest path '{relative}' names no folder in {folder}: "
            "put the model's weights there or fix 'path'"
        )
    return target


def _check_symlinks(folder: Path) -> None:
    """Every symlink in a model folder must point inside it (both sides resolved, so a
    folder reached through a symlink or a relative path is judged by where it really is),
    and never at a folder holding the link, which copying would follow forever."""
    root = _resolved(folder)
    for link in (p for p in folder.rglob("*") if p.is_symlink()):
        name = link.relative_to(folder)
        target = _resolved(link)
        if not target.is_relative_to(root):
            raise HubError(f"symlink '{name}' points outside the model folder {folder}")
        if target.is_dir() and _resolved(link.parent).is_relative_to(target):
            raise HubError(f"symlink '{name}' points at a folder that holds it")


def read_manifest(folder: Path) -> ModelManifest:
    """Read and validate `folder/manifest.json`; every problem becomes one HubError."""
    file = folder / MANIFEST_FILE
    if not file.is_file():
        raise HubError(f"{folder} has no {MANIFEST_FILE}")
    try:
        return ModelManifest.model_validate_json(read_text(file))
    except ConfigError as exc:
        raise HubError(str(exc)) from None
    except ValidationError as exc:
        problems = validation_problems(exc, f"invalid manifest {file}")
        raise HubError("; ".join(problems)) from None


def _builtin_models() -> list[HubModel]:
    """Built-ins are a manifest file (the model is an installed package) or a model folder
    shipped with this package (the model is data in it, such as a lexicon or rules)."""
    root = Path(str(resources.files("preannotate.hub") / "builtin"))
    models = []
    for entry in sorted(root.iterdir(), key=lambda f: f.name):
        if entry.name.endswith(".json"):
            manifest = ModelManifest.model_validate(json.loads(entry.read_text()))
            models.append(HubModel(manifest, None, builtin=True))
        elif (entry / MANIFEST_FILE).is_file():
            models.append(HubModel(read_manifest(entry), entry, builtin=True))
    return models


class Hub:
    """Look up models by name; register new model folders (copied into the hub dir)."""

    def __init__(self, root: Path | None = None):
        self.root = root or hub_dir()

    def models(self) -> list[HubModel]:
        """The built-in models, and the model folders in the hub folder when this machine
        has it (a replica on another machine of a cluster may not: `get` says so)."""
        models = {m.name: m for m in _builtin_models()}
        folders = self.root.iterdir() if self.root.is_dir() else iter(())
        for folder in sorted(p for p in folders if p.is_dir()):
            if (folder / MANIFEST_FILE).is_file():
                model = HubModel(read_manifest(folder), folder)
                models.setdefault(model.name, model)
        return sorted(models.values(), key=lambda m: m.name)

    def names(self) -> list[str]:
        return [m.name for m in self.models()]

    def get(self, name: str) -> HubModel:
        for model in self.models():
            if model.name == name:
                return model
        message = unknown_model_message(name, self.names())
        if not self.root.is_dir():
            message += (
                f" (the hub folder {self.root} is not on this machine, {socket.gethostname()}:"
                " on a cluster of several machines, mount it at the same path on every node;"
                f" {SEVERAL_MACHINES})"
            )
        raise HubError(message)

    def add(self, path: Path, replace: bool = False) -> HubModel:
        """Register a model folder: validate its manifest, then copy it into the hub."""
        source = Path(path)
        if not source.is_dir():
            raise HubError(f"{source} is not a folder (a model folder holds {MANIFEST_FILE})")
        manifest = read_manifest(source)
        if manifest.path is not None:
            _weights_folder(source, manifest.path)
        _check_symlinks(source)
        if manifest.name in {m.name for m in _builtin_models()}:
            raise HubError(f"'{manifest.name}' is a built-in model name; choose another name")
        target = self.root / manifest.name
        if target.exists() and not replace:
            raise HubError(f"a model named '{manifest.name}' is already in the hub ({target})")
        staging = self.root / f".{manifest.name}.adding"
        shutil.rmtree(staging, ignore_errors=True)
        try:
            shutil.copytree(source, staging, symlinks=False)
        except BaseException:  # a failed copy leaves nothing behind in the hub
            shutil.rmtree(staging, ignore_errors=True)
            raise
        shutil.rmtree(target, ignore_errors=True)
        staging.rename(target)
        return HubModel(manifest, target)


def unknown_model_message(name: str, known: list[str]) -> str:
    close = difflib.get_close_matches(name, known, n=3)
    hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    return f"unknown model '{name}': it is not in the Models Hub{hint}"
