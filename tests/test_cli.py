"""The offline CLI (exit codes, messages, one prediction per task) and the demo, which
brings its own cluster."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from preannotate.client.cli import app
from preannotate.configs.rules import RuleLibrary
from preannotate.store import Store
from tests.conftest import EXAMPLES

runner = CliRunner()
NEWS = EXAMPLES / "news"
PREANNOTATE = str(Path(sys.executable).parent / "preannotate")


def test_validate_valid_and_invalid(tmp_path: Path) -> None:
    ok = runner.invoke(app, ["config", "validate", str(NEWS / "project.json"), "--json"])
    assert ok.exit_code == 0 and json.loads(ok.stdout)["models"] == {"ner_general_en_sm": "3.8.0"}
    bad = tmp_path / "bad.xml"
    bad.write_text(
        '<View><Text name="text" value="$text"/><Labels name="l" toName="text">'
        '<Label value="FOO" model="ner_general_en_sm"/></Labels></View>'
    )
    result = runner.invoke(app, ["config", "validate", str(bad)])
    assert result.exit_code == 2 and "does not predict 'FOO'" in result.stderr
    missing = runner.invoke(app, ["config", "validate", str(tmp_path / "nope.json")])
    assert missing.exit_code == 2 and "does not exist" in missing.stderr


def test_annotate_writes_one_prediction_per_task(tmp_path: Path) -> None:
    out = tmp_path / "predictions.jsonl"
    result = runner.invoke(
        app,
        [
            "annotate",
            "--config",
            str(NEWS / "project.json"),
            "--tasks",
            str(NEWS / "tasks.jsonl"),
            "--out",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.stderr
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert [p["task_id"] for p in lines] == list(range(1, 9))
    assert all(p["result"] for p in lines) and "8 predicted, 0 failed" in result.stderr


def test_annotate_refuses_a_broken_task_file(tmp_path: Path) -> None:
    tasks = tmp_path / "tasks.jsonl"
    tasks.write_text('{"data": {"text": "ok"}}\n{not json\n')
    out = tmp_path / "out.jsonl"
    result = runner.invoke(
        app,
        [
            "annotate",
            "--config",
            str(NEWS / "project.json"),
            "--tasks",
            str(tasks),
            "--out",
            str(out),
        ],
    )
    assert result.exit_code == 2 and "line 2: not valid JSON" in result.stderr
    assert not out.exists()


def test_hub_list_and_add(tmp_path: Path) -> None:
    listed = {
        m["name"]: m for m in json.loads(runner.invoke(app, ["hub", "list", "--json"]).stdout)
    }
    assert "GPE" in listed["ner_general_en_sm"]["labels"]
    folder = tmp_path / "broken"
    folder.mkdir()
    (folder / "manifest.json").write_text('{"name": "broken"}')
    result = runner.invoke(app, ["hub", "add", str(folder)])
    assert result.exit_code == 2 and "invalid manifest" in result.stderr


def test_rules_add_and_list(tmp_path: Path) -> None:
    rule = tmp_path / "dose.json"
    rule.write_text(
        json.dumps({"name": "dose", "label": "DOSAGE", "kind": "regex", "regex": "[0-9]+ ?mg"})
    )
    assert runner.invoke(app, ["rules", "add", str(rule)]).exit_code == 0
    listed = json.loads(runner.invoke(app, ["rules", "list", "--json"]).stdout)
    assert [r["name"] for r in listed] == ["dose"]
    evil = tmp_path / "evil.json"
    evil.write_text(json.dumps({"name": "evil", "label": "X", "kind": "regex", "regex": "(a)\\1"}))
    result = runner.invoke(app, ["rules", "add", str(evil)])
    assert result.exit_code == 2 and "linear-time regex engine" in result.stderr


def test_console_script_exit_codes() -> None:
    command = [PREANNOTATE, "config", "validate"]
    assert (
        subprocess.run([*command, str(NEWS / "project.json")], capture_output=True).returncode == 0
    )
    usage = subprocess.run([*command], capture_output=True, text=True)
    assert usage.returncode == 2 and "Missing argument" in usage.stderr


def test_a_command_piped_into_head_ends_without_a_word(tmp_path: Path) -> None:
    """`preannotate up --help | head -30`: `head` leaves while the help is still being
    written, and the command stops without an `error: unexpected BrokenPipeError` line."""
    stderr = tmp_path / "stderr"
    pipeline = f"{PREANNOTATE} up --help 2>{stderr} | head -30"
    shown = subprocess.run(["bash", "-c", pipeline], capture_output=True, text=True, check=True)
    assert len(shown.stdout.splitlines()) == 30 and stderr.read_text() == ""


def test_annotate_piped_into_head_ends_without_a_word(tmp_path: Path) -> None:
    """`preannotate annotate ... | head -1`: more predictions than the pipe holds, and the
    command stops quietly with status 1 once `head` has left."""
    tasks = tmp_path / "tasks.jsonl"
    line = json.dumps({"text": "Angela Merkel met Tim Cook in Paris on Monday. " * 20})
    tasks.write_text((line + "\n") * 40)  # about 400 KB of predictions
    stderr, code = tmp_path / "stderr", tmp_path / "code"
    pipeline = (
        f"{PREANNOTATE} annotate --config {NEWS / 'project.json'} --tasks {tasks} "
        f"2>{stderr} | head -1; echo ${{PIPESTATUS[0]}} > {code}"
    )
    shown = subprocess.run(["bash", "-c", pipeline], capture_output=True, text=True, check=True)
    assert len(shown.stdout.splitlines()) == 1
    assert "error:" not in stderr.read_text() and code.read_text().strip() == "1"


def test_down_without_up_and_up_with_a_bad_license(tmp_path: Path) -> None:
    result = runner.invoke(app, ["down"])
    assert result.exit_code == 2 and "`preannotate up` has not run here" in result.stderr
    expired = tmp_path / "license.json"
    expired.write_text(
        json.dumps({"licensee": "A", "seats": 1, "scopes": ["healthcare"], "expires": "2020-01-31"})
    )
    result = runner.invoke(app, ["up", "--license", str(expired)])
    assert result.exit_code == 2 and "is not signed" in result.stderr


def test_an_unexpected_failure_is_one_error_line_and_a_traceback_file(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A failure no check expected (a bug, here planted in the rule library's listing) is
    one line and a traceback file, instead of pages of framework internals."""

    def planted(_: RuleLibrary) -> list:
        raise RuntimeError("a bug")

    monkeypatch.setattr(RuleLibrary, "rules", planted)
    result = runner.invoke(app, ["rules", "list"])
    assert result.exit_code == 1
    [line] = result.stderr.splitlines()
    assert line.startswith("error: unexpected RuntimeError: a bug")
    written = re.search(r"traceback in (\S+);", line)
    assert written and "`preannotate --debug ...` shows it here" in line
    traceback = Path(written.group(1))
    assert traceback.parent == home / "logs"
    assert traceback.read_text().startswith("Traceback")

    shown = runner.invoke(app, ["--debug", "rules", "list"])
    assert shown.exit_code == 1
    assert shown.stderr.startswith("Traceback (most recent call last):")
    assert shown.stderr.splitlines()[-1].startswith("error: unexpected RuntimeError: a bug")


def test_bad_library_files_and_inputs_are_exit_2_with_the_reason(
    home: Path, tmp_path: Path
) -> None:
    """What a user can fix says so, with exit status 2, and leaves the libraries as they
    were."""
    (home / "rules").mkdir(parents=True)
    (home / "rules" / "broken.json").write_text("{not json")
    listed = runner.invoke(app, ["rules", "list"])
    assert listed.exit_code == 2
    assert listed.stderr.splitlines()[-1] == "error: mend or remove broken.json in rules/"
    (home / "rules" / "broken.json").unlink()

    big = tmp_path / "big.csv"
    big.write_text("a," + "x" * 200_000 + "\n")
    refused = runner.invoke(app, ["rules", "add", str(big), "--label", "X"])
    assert (refused.exit_code, refused.stderr) == (
        2,
        "error: big.csv line 1: field larger than field limit (131072)\n",
    )
    empty = tmp_path / "empty.json"
    empty.write_text("[]")
    nothing = runner.invoke(app, ["rules", "add", str(empty)])
    assert (nothing.exit_code, nothing.stderr) == (2, f"error: {empty} holds no rule\n")

    (home / "prompts" / "person_q.json").mkdir(parents=True)  # a folder where it would go
    prompt = tmp_path / "p.json"
    prompt.write_text(
        json.dumps({"type": "entity", "name": "person_q", "label": "PERSON", "questions": ["Who?"]})
    )
    blocked = runner.invoke(app, ["prompts", "add", str(prompt)])
    assert blocked.exit_code == 2 and "Is a directory" in blocked.stderr
    assert sorted(p.name for p in (home / "prompts").iterdir()) == [".lock", "person_q.json"]

    for option in ("--num-cpus", "--num-gpus"):
        for value in ("nan", "inf", "-1"):
            bad = runner.invoke(app, ["train", "1", "--model-name", "m", option, value])
            assert bad.exit_code == 2, (option, value, bad.output)
    for command in (["config", "validate"], ["rules", "add"], ["prompts", "add"]):
        folder = runner.invoke(app, [*command, str(tmp_path)])
        assert (folder.exit_code, folder.stderr) == (
            2,
            f"error: {tmp_path} is a folder; give a file\n",
        )
    no_input = runner.invoke(app, ["run", "1", "--input", "", "--output", str(tmp_path)])
    assert (no_input.exit_code, no_input.stderr) == (
        2,
        "error: --input is empty; give a file, a folder or a Spark table name\n",
    )


def test_bad_annotate_and_license_inputs_are_exit_2_with_what_to_do(
    home: Path, tmp_path: Path
) -> None:
    """A missing or misplaced file, a task without its document, a header that is not
    UTF-8 and a license without seats each say what is wrong and what to do."""
    news, visual = str(NEWS / "project.json"), str(EXAMPLES / "visual" / "project.json")

    def annotate(config: str, tasks: Path, *out: str) -> tuple[int, str]:
        result = runner.invoke(app, ["annotate", "--config", config, "--tasks", str(tasks), *out])
        return result.exit_code, result.stderr

    for missing in (tmp_path / "nothing", tmp_path / "x.jsonl"):  # with no suffix, too
        assert annotate(news, missing) == (2, f"error: tasks file {missing} does not exist\n")
    assert annotate(news, tmp_path) == (
        2,
        f"error: tasks file {tmp_path} is a folder; give a file\n",
    )
    tasks = tmp_path / "tasks.jsonl"
    tasks.write_text('{"data": {"text": "Ada Lovelace lived in London."}}\n')
    assert annotate(news, tasks, "--out", str(tmp_path)) == (
        2,
        f"error: output {tmp_path} is a folder; give a file\n",
    )
    nowhere = tmp_path / "no" / "p.jsonl"
    assert annotate(news, tasks, "--out", str(nowhere)) == (
        2,
        f"error: output {nowhere}: the folder {nowhere.parent} does not exist\n",
    )
    under_a_file = tasks / "p.jsonl"
    assert annotate(news, tasks, "--out", str(under_a_file)) == (
        2,
        f"error: output {under_a_file}: {tasks} is a file, not a folder\n",
    )
    assert annotate(visual, tasks, "--render", str(tasks)) == (
        2,
        f"error: --render {tasks} is a file; give a folder for the pages\n",
    )

    nothing = tmp_path / "nothing.jsonl"
    nothing.write_text('{"data": {"title": "an invoice"}}\n')
    for no_image in (nothing, tasks):  # the second has text, but no document
        assert annotate(visual, no_image) == (
            2,
            f"error: {no_image} line 1: task has no document reference in 'image'\n",
        )

    latin1 = tmp_path / "latin1.csv"
    latin1.write_bytes("t\u00e9xt\nhello\n".encode("latin-1"))
    assert annotate(news, latin1) == (
        2,
        f"error: {latin1} line 1: the header is not UTF-8 text (byte 0xe9); "
        "save the file as UTF-8\n",
    )

    key = tmp_path / "vendor.pem"
    assert runner.invoke(app, ["license", "keygen", str(key)]).exit_code == 0
    plain = tmp_path / "license.json"
    for seats in (0, -3):
        plain.write_text(
            json.dumps(
                {"licensee": "A", "seats": seats, "scopes": ["healthcare"], "expires": "2099-01-31"}
            )
        )
        signed = runner.invoke(app, ["license", "sign", str(plain), "--key", str(key)])
        assert signed.exit_code == 2
        assert "'seats' must be a positive whole number" in signed.stderr
        assert f"got {seats}" in signed.stderr and signed.stdout == ""


@pytest.mark.own_ray_head
def test_the_demo_leaves_the_users_store_as_it_was(home: Path, tmp_path: Path) -> None:
    """`make demo` runs on a throwaway cluster and data directory: the user's store (here a
    configured database) gets no project and no server from it, and their data directory
    no store, so a later `projects create` of an example is not refused. The console
    script runs in its own process, as Ray must start there. A demo that went well ends
    with its tables and what to do next, without a line that looks like an error."""
    users_store = f"sqlite:///{tmp_path / 'users.sqlite'}"
    env = os.environ | {"PREANNOTATE_DATABASE_URL": users_store, "RAY_AUTH_MODE": "disabled"}
    demo = subprocess.run(
        [PREANNOTATE, "demo"], capture_output=True, text=True, env=env, timeout=600
    )
    assert demo.returncode == 0, demo.stderr
    assert "news: server-" in demo.stdout and "posology: server-" in demo.stdout
    assert "news-prompts: server-" in demo.stdout and "org_q" in demo.stdout  # a prompt's item
    assert "Tim Cook PERSON" in demo.stdout
    assert "(raylet)" not in demo.stdout + demo.stderr
    assert "failed" not in demo.stdout + demo.stderr
    ending = demo.stdout[demo.stdout.rindex("└") :].splitlines()
    assert ending[2] == "Next steps:" and "preannotate up" in ending[3]
    assert "http://127.0.0.1:8000/docs" in ending[4]
    store = Store(users_store)
    try:
        assert store.list_projects() == [] and store.list_servers() == []
    finally:
        store.close()
    assert not (home / "preannotate.sqlite").exists()
