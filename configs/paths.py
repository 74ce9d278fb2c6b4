"""Where the project keeps its files on this machine.

Everything lives under one data directory so that a user can point a whole installation
elsewhere (a shared disk, a test's temporary folder) with a single setting.
"""

import os
from pathlib import Path

from platformdirs import user_data_dir

SEVERAL_MACHINES = 'docs/cluster.md, "Several machines"'
"""Where errors about a cluster of several machines send the user."""


def data_dir() -> Path:
    """The data directory: `PREANNOTATE_HOME`, else the user's data directory. Configured
    folders are made absolute here: the store's URL and the hub's path travel to Ray's
    processes, whose working directories differ."""
    configured = os.environ.get("PREANNOTATE_HOME")
    path = Path(configured).absolute() if configured else Path(user_data_dir("preannotate"))
    path.mkdir(parents=True, exist_ok=True)
    return path


def hub_dir() -> Path:
    """The Models Hub folder: `PREANNOTATE_HUB_DIR`, else `<data dir>/hub`."""
    configured = os.environ.get("PREANNOTATE_HUB_DIR")
    path = Path(configured).absolute() if configured else data_dir() / "hub"
    path.mkdir(parents=True, exist_ok=True)
    return path


def rules_dir() -> Path:
    """The shared rule library: `<data dir>/rules`."""
    path = data_dir() / "rules"
    path.mkdir(parents=True, exist_ok=True)
    return path


def files_dir() -> Path:
    """Uploaded documents, content-addressed: `PREANNOTATE_FILES_DIR` (a folder every node
    of a cluster mounts), else `<data dir>/files`."""
    configured = os.environ.get("PREANNOTATE_FILES_DIR")
    path = Path(configured).absolute() if configured else data_dir() / "files"
    path.mkdir(parents=True, exist_ok=True)
    return path


def files_root() -> Path | None:
    """`PREANNOTATE_FILES_ROOT`: the one folder whose files task data may name by a
    relative path (`local://scans/a.pdf`); None when the operator set none."""
    configured = os.environ.get("PREANNOTATE_FILES_ROOT")
    return Path(configured) if configured else None


def prompts_dir() -> Path:
    """The shared prompt library: `<data dir>/prompts`."""
    path = data_dir() / "prompts"
    path.mkdir(parents=True, exist_ok=True)
    return path


def database_url() -> str:
    """`PREANNOTATE_DATABASE_URL` (e.g. PostgreSQL), else a SQLite file in the data dir."""
    return (
        os.environ.get("PREANNOTATE_DATABASE_URL")
        or f"sqlite:///{data_dir() / 'preannotate.sqlite'}"
    )
