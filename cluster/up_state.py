"""What `preannotate up` did on this machine: the cluster it started or joined, and the
API's URL and admin token, so that `down` undoes exactly that and local CLI commands find
the API.

No Ray here: every CLI command reads this file, and importing Ray takes a second or two.
"""

import json
from pathlib import Path
from typing import Any

from preannotate.configs.paths import data_dir


def _state_file() -> Path:
    return data_dir() / "cluster.json"


def remember(address: str, started_head: bool, url: str, token: str) -> None:
    """What `up` did, so that `down` undoes exactly that (and leaves a joined cluster up);
    the URL and admin token let local CLI commands find the API. Readable by its owner only."""
    state = {"address": address, "started_head": started_head, "url": url, "token": token}
    file = _state_file()
    file.touch(mode=0o600)
    file.chmod(0o600)
    file.write_text(json.dumps(state))


def remembered() -> dict[str, Any] | None:
    file = _state_file()
    return json.loads(file.read_text()) if file.exists() else None


def forget() -> None:
    _state_file().unlink(missing_ok=True)
