"""The Models Hub: built-in models offline, registering folders, refusing bad ones."""

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from preannotate.client.cli import app
from preannotate.hub.catalog import Hub, HubError
from preannotate.hub.versions import next_version, version_number

runner = CliRunner()


def manifest_folder(root: Path, name: str = "my_ner", **overrides) -> Path:
    folder = root / name
    (folder / "model").mkdir(parents=True)
    manifest = {
        "name": name,
        "version": "2",
        "kind": "ner",
        "labels": ["DRUG"],
        "embeddings": "e",
        "runtime": "spacy",
        "path": "model",
        **overrides,
    }
    (folder / "manifest.json").write_text(json.dumps(manifest))
    return folder


def test_builtin_english_ner_is_listed_with_its_labels(hub: Hub) -> None:
    model = hub.get("ner_general_en_sm")
    assert model.builtin and model.manifest.kind == "ner"
    assert len(model.manifest.labels) == 18 and "PERSON" in model.manifest.labels


def test_add_copies_the_folder_into_the_hub(hub: Hub, tmp_path: Path) -> None:
    added = hub.add(manifest_folder(tmp_path))
    assert added.folder == hub.root / "my_ner" and (added.folder / "model").is_dir()
    assert hub.get("my_ner").manifest.labels == ["DRUG"]
    with pytest.raises(HubError, match="already in the hub"):
        hub.add(manifest_folder(tmp_path / "again"))


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"kind": "sentiment"}, "kind"),
        ({"labels": []}, "labels"),
        ({"license_scope": "medical"}, "license_scope"),
        ({"resources": {"cpus": -1}}, "resources.cpus"),
        ({"path": "../../etc"}, "points outside the model folder"),
        ({"name": "ner_general_en_sm"}, "built-in model name"),
        ({"surprise": 1}, "surprise"),
    ],
)
def test_invalid_manifests_are_refused(hub: Hub, tmp_path: Path, overrides, message) -> None:
    with pytest.raises(HubError, match=message):
        hub.add(manifest_folder(tmp_path, **overrides))
    assert [m.name for m in hub.models() if not m.builtin] == []


def test_symlink_out_of_the_folder_is_refused(hub: Hub, tmp_path: Path) -> None:
    folder = manifest_folder(tmp_path)
    (folder / "model" / "secrets").symlink_to("/etc")
    with pytest.raises(HubError, match="symlink 'model/secrets' points outside the model folder"):
        hub.add(folder)


def test_symlinks_inside_the_folder_are_accepted_however_it_is_reached(
    hub: Hub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = manifest_folder(tmp_path / "real", path="current")
    (folder / "model" / "weights.bin").write_text("w")
    (folder / "current").symlink_to("model")
    (folder / "model" / "absolute.bin").symlink_to(
        tmp_path / "alias" / "my_ner" / "model" / "weights.bin"
    )
    (tmp_path / "alias").symlink_to(tmp_path / "real")
    monkeypatch.chdir(tmp_path)
    added = hub.add(Path("alias") / "my_ner")
    assert added.weights_path() == (hub.root / "my_ner" / "current").resolve()
    assert (added.weights_path() / "absolute.bin").read_text() == "w"


@pytest.mark.parametrize(
    "target, message",
    [("loop", "cannot be followed"), ("..", "points at a folder that holds it")],
    ids=["loop", "ancestor"],
)
def test_symlinks_that_cannot_be_copied_are_refused(
    hub: Hub, tmp_path: Path, target: str, message: str
) -> None:
    folder = manifest_folder(tmp_path)
    (folder / "model" / "loop").symlink_to(target)
    with pytest.raises(HubError, match=message):
        hub.add(folder)
    assert not any(hub.root.iterdir())


def test_a_weights_folder_that_does_not_exist_is_refused(hub: Hub, tmp_path: Path) -> None:
    folder = manifest_folder(tmp_path, path="weights")
    result = runner.invoke(app, ["hub", "add", str(folder)])
    assert result.exit_code == 2
    assert f"manifest path 'weights' names no folder in {folder}" in result.stderr
    assert [m.name for m in hub.models() if not m.builtin] == []


@pytest.mark.parametrize(
    "encoding, problem",
    [("latin-1", "is not valid UTF-8 text: byte 0xe8"), ("utf-16-le", "holds NUL bytes")],
)
def test_hub_add_names_a_manifest_that_is_not_text(
    hub: Hub, tmp_path: Path, encoding: str, problem: str
) -> None:
    folder = manifest_folder(tmp_path, description="modèle")
    manifest = folder / "manifest.json"
    data = json.loads(manifest.read_text())
    manifest.write_bytes(json.dumps(data, ensure_ascii=False).encode(encoding))
    result = runner.invoke(app, ["hub", "add", str(folder)])
    assert result.exit_code == 2
    [line] = result.stderr.strip().splitlines()
    assert line.startswith("error:") and str(manifest) in line and problem in line
    assert [m.name for m in hub.models() if not m.builtin] == [] and not any(hub.root.iterdir())


def test_missing_manifest_and_unknown_name(hub: Hub, tmp_path: Path) -> None:
    with pytest.raises(HubError, match="has no manifest.json"):
        hub.add(tmp_path)
    with pytest.raises(HubError, match="unknown model 'nothing'"):
        hub.get("nothing")


def test_a_replica_on_a_machine_without_the_hub_folder_still_finds_the_built_in_models(
    tmp_path: Path,
) -> None:
    """A node of a cluster that does not mount the hub: configurations of built-in models
    run there, and a model of the hub's own is not found, saying why."""
    elsewhere = Hub(tmp_path / "not-mounted")
    assert elsewhere.get("ner_general_en_sm").builtin
    with pytest.raises(HubError, match="unknown model 'vendors_v1'.* is not on this machine"):
        elsewhere.get("vendors_v1")
    assert not (tmp_path / "not-mounted").exists()


def test_trained_versions_are_numbered_after_the_highest_one(hub: Hub, tmp_path: Path) -> None:
    """Only `<name>_v<digits>` is a version of `name`: `topics_v7_v2` is a version of
    `topics_v7`, and "²", which `str.isdigit` takes, is no number."""
    hub.add(manifest_folder(tmp_path, "topics_v7"))
    hub.add(manifest_folder(tmp_path, "topics_v7_v2"))
    assert next_version(hub, "topics") == ("topics_v8", 8)
    assert next_version(hub, "topics_v7") == ("topics_v7_v3", 3)
    assert version_number("topics_v²", "topics") is None
