"""Servers: the deployed configurations the Clusters page lists.

Deleting a server keeps its row (status `deleted`, `deleted_at`): predictions name the
server that made them, and the history of what ran where stays answerable.
"""

import re
from collections.abc import Iterable
from typing import Any

from sqlalchemy import select

from preannotate.store.db import Database, get_or_raise
from preannotate.store.errors import InvalidInput, InvalidState
from preannotate.store.models import (
    Project,
    Server,
    ServerStatus,
    parse_choice,
    server_projects,
    utcnow,
)

_NUMBERED_ID = re.compile(r"server-(\d+)")


class ServerOps(Database):
    def record_server(
        self,
        *,
        config: dict[str, Any],
        config_hash: str,
        project_ids: Iterable[int] = (),
        resources: dict[str, Any] | None = None,
        replicas: int = 1,
        snapshot: dict[str, Any] | None = None,
        status: str = ServerStatus.DEPLOYING,
        server_id: str | None = None,
    ) -> Server:
        """Insert or replace a server; without `server_id` it gets the next `server-<n>`.

        Recording an existing id (a redeploy) replaces its configuration and projects and
        makes it active again.
        """
        server_status = parse_choice(ServerStatus, status, "server status")
        if server_status == ServerStatus.DELETED:
            raise InvalidInput("a server cannot be recorded as deleted; use mark_server_deleted")
        with self._write() as session:
            projects = [get_or_raise(session, Project, pid) for pid in dict.fromkeys(project_ids)]
            server = session.get(Server, server_id) if server_id is not None else None
            if server is None:
                server = Server(id=server_id or _next_server_id(session.scalars(select(Server.id))))
                session.add(server)
            server.config = config
            server.config_hash = config_hash
            server.resources = resources or {}
            server.replicas = replicas
            server.snapshot = snapshot or {}
            server.status = server_status.value
            server.message = None
            server.deployed_at = utcnow()
            server.deleted_at = None
            server.projects = projects
        return server

    def attach_project(self, server_id: str, project_id: int) -> Server:
        """Let another project with the same configuration use a running server. The server
        is locked first, so two joins of the same project add it once."""
        with self._write() as session:
            server = get_or_raise(session, Server, server_id, for_update=True)
            if server.deleted_at is not None:
                raise InvalidState(f"server {server_id!r} was deleted")
            project = get_or_raise(session, Project, project_id)
            if project not in server.projects:
                server.projects.append(project)
        return server

    def get_server(self, server_id: str) -> Server:
        with self._read() as session:
            return get_or_raise(session, Server, server_id)

    def list_servers(
        self, *, project_id: int | None = None, include_deleted: bool = False
    ) -> list[Server]:
        """Servers by deployment time; by default only those not deleted."""
        query = select(Server).order_by(Server.deployed_at, Server.id)
        if not include_deleted:
            query = query.where(Server.deleted_at.is_(None))
        if project_id is not None:
            query = query.join(server_projects).where(server_projects.c.project_id == project_id)
        with self._read() as session:
            return list(session.scalars(query))

    def set_server_status(self, server_id: str, status: str, message: str | None = None) -> Server:
        """Record a status the cluster observed (deploying, loading, ready, failed, deleting),
        with the reason when there is one.

        A deleted server stays deleted: a status poll that arrives late cannot revive it.
        """
        server_status = parse_choice(ServerStatus, status, "server status")
        if server_status == ServerStatus.DELETED:
            raise InvalidInput("use mark_server_deleted to delete a server")
        with self._write() as session:
            server = get_or_raise(session, Server, server_id)
            if server.deleted_at is not None:
                raise InvalidState(f"server {server_id!r} was deleted; record it again to redeploy")
            server.status = server_status.value
            server.message = message
        return server

    def mark_server_deleted(self, server_id: str) -> Server:
        """The server's replicas are gone; keep its row for history."""
        with self._write() as session:
            server = get_or_raise(session, Server, server_id)
            server.status = ServerStatus.DELETED.value
            server.deleted_at = server.deleted_at or utcnow()
        return server


def _next_server_id(existing: Iterable[str]) -> str:
    numbers = [int(match[1]) for sid in existing if (match := _NUMBERED_ID.fullmatch(sid))]
    return f"server-{max(numbers, default=0) + 1}"
