"""Errors the scheduler raises across Ray to the router, the CLI and jobs.

They live in one module so that every process unpickles them under the same name, and so
that the router can map them to HTTP answers without importing the scheduler's machinery.
"""


class DeployRefused(Exception):
    """The cluster cannot take this server now; the message says why and what to delete."""

    def __init__(self, message: str, delete_candidates: list[str] | None = None):
        self.message = message
        self.delete_candidates = delete_candidates or []
        super().__init__(message)

    def __reduce__(self) -> tuple[type["DeployRefused"], tuple[str, list[str]]]:
        return (type(self), (self.message, self.delete_candidates))


class ServerGone(Exception):
    """The job's server was deleted or its Serve app is gone: the job ends as cancelled,
    with this reason."""
