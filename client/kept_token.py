"""The admin token that `preannotate up` keeps in the data directory.

The store holds tokens only hashed, so it cannot give an admin token out twice. `up` keeps
the one it minted in `<data dir>/admin-token`, readable by its owner only (as is
`cluster.json`, where the local CLI finds it), and every later `up` on the same data
directory reuses it while it is valid instead of minting one more admin token each time.
"""

from pathlib import Path

from preannotate.cluster.up_state import remember, remembered
from preannotate.configs.paths import data_dir

TOKEN_FILE = "admin-token"


def token_file() -> Path:
    return data_dir() / TOKEN_FILE


def read() -> str | None:
    """The kept token, or None when there is none."""
    file = token_file()
    return (file.read_text().strip() or None) if file.is_file() else None


def keep(token: str) -> None:
    """Keep `token`, readable and writable by this user only."""
    file = token_file()
    file.touch(mode=0o600)
    file.chmod(0o600)
    file.write_text(token + "\n")


def replace(old: str, new: str) -> bool:
    """After `old` was rotated into `new`: wherever this machine kept `old` (this module's
    file, what `up` remembered for the local CLI), keep `new`. True if it kept `old`."""

    kept = read() == old
    if kept:
        keep(new)
    state = remembered()
    if state is not None and state.get("token") == old:
        remember(state["address"], state["started_head"], state["url"], new)
        kept = True
    return kept
