"""Shared fixtures: every test gets its own data directory, hub and rule library."""

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from configs.project import ProjectConfig
from configs.rules import RuleLibrary
from hub.catalog import Hub

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "configs" / "examples"


@pytest.fixture(autouse=True)
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Keep tests out of the user's data directory."""
    path = tmp_path / "home"
    monkeypatch.setenv("PREANNOTATE_HOME", str(path))
    monkeypatch.delenv("PREANNOTATE_HUB_DIR", raising=False)
    monkeypatch.delenv("PREANNOTATE_DATABASE_URL", raising=False)
    return path


@pytest.fixture
def hub(home: Path) -> Hub:
    return Hub()


@pytest.fixture
def library(home: Path) -> RuleLibrary:
    return RuleLibrary()


ModelMaker = Callable[..., Path]


@pytest.fixture
def make_model(hub: Hub, tmp_path: Path) -> ModelMaker:
    """Register a model folder with a manifest (validation never loads weights)."""

    def make(
        name: str,
        kind: str = "ner",
        labels: list[str] | None = None,
        embeddings: str = "glove_100d",
        license_scope: str = "open",
        **extra,
    ) -> Path:
        folder = tmp_path / "models" / name
        folder.mkdir(parents=True)
        manifest = {
            "name": name,
            "version": "1",
            "kind": kind,
            "labels": labels or ["X"],
            "embeddings": embeddings,
            "runtime": "spacy",
            "license_scope": license_scope,
            "path": "model",
            **extra,
        }
        (folder / "manifest.json").write_text(json.dumps(manifest))
        (folder / "model").mkdir()
        hub.add(folder)
        return folder

    return make


def project(xml: str, **fields) -> ProjectConfig:
    return ProjectConfig(name=fields.pop("name", "p"), labeling_config=xml, **fields)


def labels_xml(*labels: str, extra: str = "") -> str:
    """A text config whose <Labels> holds the given <Label .../> attribute strings."""
    body = "".join(f"<Label {attrs}/>" for attrs in labels)
    return (
        f'<View><Text name="text" value="$text"/>'
        f'<Labels name="label" toName="text">{body}</Labels>{extra}</View>'
    )
