"""The wheel is what users install: one `preannotate` package, its data and its command.

The checkout's top-level folders (`configs/`, `hub/`, ...) become subpackages of the
`preannotate` namespace only through the `package-dir` mapping in pyproject.toml. From the
repository root they are also importable under their bare names (pytest puts the root on
`sys.path`), so code or tests written as `import configs` would pass here and fail once
installed. These tests build the wheel, read what it holds, and import it on its own.
"""

import ast
import configparser
import json
import os
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
PACKAGE_DIRS: dict[str, str] = PYPROJECT["tool"]["setuptools"]["package-dir"]
"""`preannotate.<name>` -> the checkout folder it is built from."""
FOLDERS = sorted(PACKAGE_DIRS.values())
DIST_INFO = f"{PYPROJECT['project']['name']}-{PYPROJECT['project']['version']}.dist-info/"
NOT_SOURCE = shutil.ignore_patterns(
    ".git", ".venv", "build", "dist", "*.egg-info", "__pycache__", ".*_cache", "*.sqlite"
)
"""What a build must not see: the VCS, the environment, caches and earlier build output."""

IMPORT_ALL = """
import importlib, json, sys
wanted, folders = json.loads(sys.argv[1]), json.loads(sys.argv[2])
files = {name: importlib.import_module(name).__file__ for name in wanted}
bare = []
for folder in folders:
    try:
        importlib.import_module(folder)
    except ModuleNotFoundError:
        continue
    bare.append(folder)
print(json.dumps({"files": files, "bare": bare}))
"""
"""Given module names and folder names as JSON, prints the file each module imported from
and which folder names import as bare top-level modules."""


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The project's wheel, built offline the way `pip wheel` builds it for users.

    It is built from a copy: setuptools writes `build/` and `*.egg-info` into the source
    tree, and the checkout is shared with whoever else is working in it.
    """
    work = tmp_path_factory.mktemp("wheel")
    source = work / "source"
    shutil.copytree(ROOT, source, ignore=NOT_SOURCE)
    command = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation"]
    command += ["--no-index", "--disable-pip-version-check", "-q", "-w", str(work), str(source)]
    built = subprocess.run(command, capture_output=True, text=True, timeout=240)
    assert built.returncode == 0, built.stderr
    [path] = work.glob("*.whl")
    return path


@pytest.fixture(scope="module")
def names(wheel: Path) -> list[str]:
    with zipfile.ZipFile(wheel) as archive:
        return archive.namelist()


def modules(names: list[str]) -> list[str]:
    """The dotted names of the wheel's Python modules."""
    return [
        name.removesuffix(".py").replace("/", ".").removesuffix(".__init__")
        for name in names
        if name.endswith(".py")
    ]


def test_wheel_holds_only_the_preannotate_package(wheel: Path, names: list[str]) -> None:
    outside = [n for n in names if not n.startswith(("preannotate/", DIST_INFO))]
    assert outside == []
    with zipfile.ZipFile(wheel) as archive:
        assert archive.read(DIST_INFO + "top_level.txt").decode().split() == ["preannotate"]


def test_wheel_holds_every_module_of_the_checkout(names: list[str]) -> None:
    """`packages` is an explicit list, so a new subpackage left out of it would be dropped
    from the wheel silently while every test here still passed."""
    expected = {
        f"{package.replace('.', '/')}/{path.relative_to(ROOT / folder).as_posix()}"
        for package, folder in PACKAGE_DIRS.items()
        for path in (ROOT / folder).rglob("*.py")
        if "__pycache__" not in path.parts
    }
    assert sorted(expected - set(names)) == []
    assert {
        "preannotate/store/__init__.py",
        "preannotate/deployments/routes/servers.py",
        "preannotate/client/cli.py",
    } <= set(names)


def test_wheel_carries_package_data(names: list[str]) -> None:
    """The example projects and the built-in Models Hub entries are read at run time."""
    builtin = sorted(n for n in names if n.startswith("preannotate/hub/builtin/"))
    assert builtin == [
        f"preannotate/hub/builtin/{path.relative_to(ROOT / 'hub' / 'builtin').as_posix()}"
        for path in sorted((ROOT / "hub" / "builtin").glob("**/*.json"))
    ]
    assert builtin != []
    examples = {
        f"preannotate/configs/{path.relative_to(ROOT / 'configs').as_posix()}"
        for path in (ROOT / "configs" / "examples").glob("*/*")
    }
    assert "preannotate/configs/examples/news/project.json" in examples
    assert sorted(examples - set(names)) == []


def test_wheel_installs_the_preannotate_command(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as archive:
        text = archive.read(DIST_INFO + "entry_points.txt").decode()
    entry_points = configparser.ConfigParser()
    entry_points.read_string(text)
    assert dict(entry_points["console_scripts"]) == {"preannotate": "preannotate.client.cli:app"}


def test_unpacked_wheel_imports_on_its_own_and_not_by_folder_name(
    wheel: Path, names: list[str], tmp_path: Path
) -> None:
    """Every module imports from the unpacked wheel alone, from the repository root.

    `-P` keeps the current folder off `sys.path`, as for the installed `preannotate`
    command; the unpacked wheel comes first on the path, ahead of the editable install.
    """
    site = tmp_path / "site"
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(site)
    wanted = modules(names)
    ran = subprocess.run(
        [sys.executable, "-P", "-c", IMPORT_ALL, json.dumps(wanted), json.dumps(FOLDERS)],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(site)},
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert ran.returncode == 0, ran.stderr
    result = json.loads(ran.stdout.splitlines()[-1])
    assert sorted(result["files"]) == sorted(wanted)
    elsewhere = {m: f for m, f in result["files"].items() if not Path(f).is_relative_to(site)}
    assert elsewhere == {}
    assert result["bare"] == []


def test_code_and_tests_import_preannotate_not_the_folders() -> None:
    """A bare `from configs.x import y` works only in the checkout; the wheel has no such
    top-level package. Function-level imports count too, so the source is read, not run."""
    top = [p for p in ROOT.iterdir() if p.is_dir() and not p.name.startswith(".")]
    skipped = NOT_SOURCE(str(ROOT), [p.name for p in top])
    paths = sorted(
        path for folder in top if folder.name not in skipped for path in folder.rglob("*.py")
    )
    bare = []
    for path in paths:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            if isinstance(node, ast.Import):
                imported = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                imported = [node.module]
            else:
                continue
            bare += [
                f"{path.relative_to(ROOT)}:{node.lineno}: {name}"
                for name in imported
                if name.split(".")[0] in FOLDERS
            ]
    assert bare == []
