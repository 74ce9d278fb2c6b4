"""The errors the store raises.

Callers (the HTTP router, the CLI, the scheduler) turn these into 404 / 409 / 400 answers,
so each kind of failure gets its own class and a message a user can act on.
"""


class StoreError(Exception):
    """Base class: anything the store refuses to do."""


class NotFound(StoreError, LookupError):
    """A row asked for by id does not exist (the message names what and which id)."""


class AlreadyExists(StoreError):
    """A unique name is taken (a project or user name)."""


class InvalidInput(StoreError, ValueError):
    """Input the store cannot accept: a malformed task file, an unknown role or state."""


class InvalidState(StoreError):
    """The row exists but is in a state that forbids the change (e.g. a finished job)."""


class StoreNotHere(StoreError):
    """A process found no store where the control plane made it: a SQLite file is on one
    machine, and this process runs on another (the message says what to do)."""
