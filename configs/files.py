"""What task data may name as a document, and where that file is on disk.

A visual task never makes the server open a path or URL it was handed. Its data names
either an uploaded file by its SHA-256 (`file://<sha256>`, stored content-addressed under
`files_dir()`) or a file under the one folder the operator configured
(`local://<relative path>` under `PREANNOTATE_FILES_ROOT`), resolved so that `..`,
absolute paths and symbolic links cannot leave that folder. A multi-page task lists one
reference per page, each with `#page=<n>` (from 1).
"""

import re
import socket
from dataclasses import dataclass
from pathlib import Path

from preannotate.configs.paths import SEVERAL_MACHINES, files_dir, files_root

UPLOADED = "file://"
LOCAL = "local://"
SHA256 = re.compile(r"[0-9a-f]{64}")
PAGE = re.compile(r"#page=([1-9][0-9]{0,5})$")


class FileReferenceError(ValueError):
    """Task data names something the server will not open (the message says why)."""


@dataclass(frozen=True)
class FileReference:
    """A resolved document reference: the file, and the page (from 0) when one is named."""

    path: Path
    page: int | None = None


def blob_path(sha256: str) -> Path:
    """Where the uploaded file with this hash lives: `<files dir>/<sha[:2]>/<sha>`."""
    if not SHA256.fullmatch(sha256):
        raise FileReferenceError(f"'{sha256[:80]}' is not a SHA-256 hex digest")
    return files_dir() / sha256[:2] / sha256


def uploaded(sha256: str, page: int | None = None) -> str:
    """The reference task data holds for an uploaded file (a page from 0, if given)."""
    return UPLOADED + sha256 + (f"#page={page + 1}" if page is not None else "")


def _under_root(relative: str, root: Path | None) -> Path:
    parts = Path(relative).parts
    if not relative or Path(relative).is_absolute() or ".." in parts or "\x00" in relative:
        raise FileReferenceError(
            f"'{relative[:200]}' must be a relative path inside PREANNOTATE_FILES_ROOT"
        )
    if root is None:
        raise FileReferenceError(
            "task data names a local:// file, but no PREANNOTATE_FILES_ROOT is configured"
        )
    base = root.resolve()
    path = (base / relative).resolve()  # follows symbolic links, so an escape shows here
    if not path.is_relative_to(base):
        raise FileReferenceError(f"'{relative[:200]}' leads outside PREANNOTATE_FILES_ROOT")
    return path


def resolve(reference: object, root: Path | None = None) -> FileReference:
    """The file a task's data names, or `FileReferenceError` saying what is allowed;
    `local://` paths resolve under `root` (default: `PREANNOTATE_FILES_ROOT`)."""
    if not isinstance(reference, str):
        raise FileReferenceError("a document reference must be a string")
    page = None
    match = PAGE.search(reference)
    if match:
        page = int(match.group(1)) - 1
        reference = reference[: match.start()]
    if reference.startswith(UPLOADED):
        path = blob_path(reference.removeprefix(UPLOADED))
    elif reference.startswith(LOCAL):
        path = _under_root(reference.removeprefix(LOCAL), root or files_root())
    else:
        raise FileReferenceError(
            f"'{reference[:200]}' is neither an uploaded file (file://<sha256>) nor a file "
            "under PREANNOTATE_FILES_ROOT (local://<path>); the server opens nothing else"
        )
    if not path.is_file():
        where = ""
        if reference.startswith(UPLOADED):
            where = (
                f" (uploaded files on this machine, {socket.gethostname()}, are in "
                f"{files_dir()}; on a cluster of several machines PREANNOTATE_FILES_DIR names "
                f"a folder every node mounts: {SEVERAL_MACHINES})"
            )
        raise FileReferenceError(f"the document '{reference[:200]}' is not there{where}")
    return FileReference(path, page)
