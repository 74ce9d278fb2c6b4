"""The Models Hub: built-in models offline, registering folders, refusing bad ones."""

import json
from pathlib import Path

import pytest

from preannotate.hub.catalog import Hub, HubError


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
    assert [m.name for m in hub.models()] == ["ner_general_en_sm"]


def test_symlink_out_of_the_folder_is_refused(hub: Hub, tmp_path: Path) -> None:
    folder = manifest_folder(tmp_path)
    (folder / "model" / "secrets").symlink_to("/etc")
    with pytest.raises(HubError, match="outside the model folder"):
        hub.add(folder)


def test_missing_manifest_and_unknown_name(hub: Hub, tmp_path: Path) -> None:
    with pytest.raises(HubError, match="has no manifest.json"):
        hub.add(tmp_path)
    with pytest.raises(HubError, match="unknown model 'nothing'"):
        hub.get("nothing")
