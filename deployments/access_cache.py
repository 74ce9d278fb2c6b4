"""What a replica that answers HTTP remembers about access, so interactive predictions skip
the store: the router's replicas, and each server's own predict ingress
(`server_ingress.py`), check tokens and roles the same way through this module.

It remembers the user of each token seen and which users may use which servers. All of it
holds only while the store's access epoch stands (`store/users.py`: every revocation moves
it). The replica that revokes re-reads the epoch at once; every replica re-reads it, off
the event loop, on the first request more than EPOCH_CHECK_S after its last read. So a
revoked token, user or role fails on the next request in the replica that revoked it and
within EPOCH_CHECK_S in the others, while a busy replica asks the store once per
EPOCH_CHECK_S instead of once per request. A token's user is also looked up again after
TOKEN_CACHE_S, for a token row deleted by hand, which moves no epoch.

The event loop only reads (`cached_user`, `may_use`); the thread pool reads the store and
writes here. Both hold `lock` for one dict operation at a time, never around the store.
"""

import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from starlette.concurrency import run_in_threadpool

from preannotate.store import Store
from preannotate.store.models import User

EPOCH_CHECK_S = 1.0
TOKEN_CACHE_S = 30.0
CACHE_SIZE = 10_000
"""Entries per map; a full map is emptied (the next calls fill it again)."""
TOKEN_REQUIRED = "a valid API token is required (header `Authorization: Bearer <token>`)"


def bearer_token(authorization: str | None) -> str | None:
    """The token of an `Authorization: Bearer <token>` header value, if it is one."""
    scheme, _space, token = (authorization or "").partition(" ")
    return token if scheme.lower() == "bearer" and token else None


def may_use(roles: Mapping[int, str], project_ids: Iterable[int]) -> bool:
    """A role in any project using the server: the caller may see and use it."""
    return any(p in roles for p in project_ids)


def use_refusal(store: Store, user: User, server_id: str) -> str | None:
    """Why the user may not use the server (no role in a project using it), or None when
    they may (admins need no role). NotFound for an unknown server. Blocks: it asks the
    store."""
    server = store.get_server(server_id)
    if user.is_admin:
        return None
    if may_use(store.roles_of(user.id), server.project_ids):
        return None
    return f"user '{user.name}' has no role in a project using {server_id}"


@dataclass
class AccessCache:
    store: Store
    epoch: int = -1
    read_at: float = float("-inf")
    """When the epoch was last read (monotonic time, taken before the read)."""
    tokens: dict[str, tuple[float, int, User | None]] = field(default_factory=dict)
    """Token -> (when looked up, epoch then, its user or None for an unknown token)."""
    uses: dict[tuple[int, str], int] = field(default_factory=dict)
    """(user id, server id) -> the epoch under which the user was found to have a role in
    a project using the server."""
    lock: threading.Lock = field(default_factory=threading.Lock)

    def _current(self) -> bool:
        return time.monotonic() - self.read_at <= EPOCH_CHECK_S

    def reread(self) -> int:
        """Read the store's epoch now, forgetting everything if it moved; returns the epoch
        that answers found from here on hold under. Blocks: call it off the event loop."""
        started = time.monotonic()
        epoch = self.store.access_epoch()
        with self.lock:
            if epoch > self.epoch:
                self.tokens.clear()
                self.uses.clear()
                self.epoch = epoch
            self.read_at = max(self.read_at, started)
            return self.epoch

    def settled_epoch(self) -> int:
        """The epoch, re-read first when the last read is older than EPOCH_CHECK_S. Blocks."""
        return self.epoch if self._current() else self.reread()

    def _token_entry(self, token: str) -> tuple[float, int, User | None] | None:
        with self.lock:
            entry = self.tokens.get(token)
        if entry is None or entry[1] != self.epoch:
            return None
        return entry if time.monotonic() - entry[0] <= TOKEN_CACHE_S else None

    def cached_user(self, token: str) -> User | None:
        """The token's user if it is known and the epoch is fresh, else None (then ask
        `user_for_token`). Never blocks: the event loop calls it."""
        entry = self._token_entry(token) if self._current() else None
        return entry[2] if entry else None

    def user_for_token(self, token: str) -> User | None:
        """The token's user (None: unknown or revoked), from here or else the store.
        Blocks: call it off the event loop."""
        epoch = self.settled_epoch()
        entry = self._token_entry(token)
        if entry is not None:
            return entry[2]
        user = self.store.user_for_token(token)
        with self.lock:
            if len(self.tokens) >= CACHE_SIZE:
                self.tokens.clear()
            self.tokens[token] = (time.monotonic(), epoch, user)
        return user

    async def user(self, token: str | None) -> User | None:
        """The token's user: a cached token is answered on the event loop, any other (or
        any token once the epoch is due for a re-read) in the thread pool."""
        if not token:
            return None
        return self.cached_user(token) or await run_in_threadpool(self.user_for_token, token)

    async def refusal(self, user: User, server_id: str) -> str | None:
        """Why the user may not use the server, or None: a permission seen before is
        answered on the event loop, any other in the thread pool."""
        if user.is_admin or self.may_use(user.id, server_id):
            return None
        return await run_in_threadpool(self.refusal_from_store, user, server_id)

    def refusal_from_store(self, user: User, server_id: str) -> str | None:
        """`use_refusal`, and an allowed use remembered for the next calls. Blocks: call
        it off the event loop."""
        epoch = self.settled_epoch()
        if self.may_use(user.id, server_id):
            return None
        refusal = use_refusal(self.store, user, server_id)
        if refusal is None:
            self.allow_use(user.id, server_id, epoch)
        return refusal

    def may_use(self, user_id: int, server_id: str) -> bool:
        """Whether the user was found allowed to use the server under the current, fresh
        epoch. Never blocks."""
        with self.lock:
            epoch = self.uses.get((user_id, server_id))
        return epoch == self.epoch and self._current()

    def allow_use(self, user_id: int, server_id: str, epoch: int) -> None:
        """Remember that the user may use the server, as found under `epoch`."""
        with self.lock:
            if len(self.uses) >= CACHE_SIZE:
                self.uses.clear()
            self.uses[(user_id, server_id)] = epoch
