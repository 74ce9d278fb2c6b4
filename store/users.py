"""Users, API tokens and project roles, and taking them away again.

Tokens are shown once, when issued, and stored only as their SHA-256: a copy of the
database does not let anyone call the API. The tokens are random (256 bits), so an
unsalted fast hash is enough; a lookup by hash is the comparison.

Every revocation (a token revoked, a user deleted, a member removed) moves the access
epoch in the same transaction: router replicas cache who a token is and what a user may
use, and a changed epoch tells each of them, with one small read, to forget it all.
"""

import hashlib
import secrets

from sqlalchemy import delete, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from preannotate.store.db import ROW_LOCK, Database, get_or_raise
from preannotate.store.errors import AlreadyExists, InvalidState, NotFound
from preannotate.store.models import (
    ACCESS_EPOCH_ROW,
    AccessEpoch,
    ApiToken,
    Membership,
    Project,
    Role,
    User,
    parse_choice,
    utcnow,
)

_TOKEN_BYTES = 32


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _live_user(session: Session, user_id: int, *, for_update: bool = False) -> User:
    """The user, or `NotFound` for an unknown or deleted one."""
    user = get_or_raise(session, User, user_id, for_update=for_update)
    if user.deleted_at is not None:
        raise NotFound(f"user {user_id} was deleted")
    return user


def _new_token(session: Session, user_id: int) -> str:
    token = secrets.token_urlsafe(_TOKEN_BYTES)
    session.add(ApiToken(user_id=user_id, token_hash=hash_token(token)))
    return token


def _revoked(session: Session) -> None:
    """Move the access epoch, in the revoking transaction (see the module docstring)."""
    moved = session.execute(
        update(AccessEpoch)
        .where(AccessEpoch.id == ACCESS_EPOCH_ROW)
        .values(value=AccessEpoch.value + 1)
    )
    if moved.rowcount == 0:  # type: ignore[attr-defined]
        session.add(AccessEpoch(id=ACCESS_EPOCH_ROW, value=1))


class UserOps(Database):
    def create_user(self, name: str, *, is_admin: bool = False) -> User:
        try:
            with self._write() as session:
                user = User(name=name, is_admin=is_admin)
                session.add(user)
        except IntegrityError:
            raise AlreadyExists(
                f"a user named {name!r} already exists (a deleted user's name stays taken)"
            ) from None
        return user

    def ensure_admin(self, name: str) -> User:
        """The admin user `name`: created on the first start, brought back if it was
        deleted (whoever starts the cluster on this store administers it)."""
        with self._write() as session:
            user = session.scalar(select(User).where(User.name == name).with_for_update())
            if user is None:
                user = User(name=name, is_admin=True)
                session.add(user)
            elif user.deleted_at is not None:
                user.deleted_at = None
                user.is_admin = True
        return user

    def issue_token(self, user_id: int) -> str:
        """A new API token for the user, returned in clear this once only."""
        with self._write() as session:
            _live_user(session, user_id)
            return _new_token(session, user_id)

    def rotate_token(self, user_id: int) -> str:
        """A new API token for the user, and every earlier one revoked, in one transaction."""
        with self._write() as session:
            _live_user(session, user_id, for_update=True)
            session.execute(delete(ApiToken).where(ApiToken.user_id == user_id))
            token = _new_token(session, user_id)
            _revoked(session)
        return token

    def user_for_token(self, token: str) -> User | None:
        """The user a clear token belongs to, or None for an unknown or revoked token."""
        with self._read() as session:
            query = (
                select(User)
                .join(ApiToken)
                .where(ApiToken.token_hash == hash_token(token), User.deleted_at.is_(None))
            )
            return session.scalar(query)

    def delete_user(self, user_id: int) -> User:
        """Revoke the user's tokens and roles and mark it deleted; its row stays, as its
        completions name it. The last admin cannot be deleted: nobody could create users."""
        with self._write() as session:
            user = _live_user(session, user_id, for_update=True)
            if user.is_admin:
                admins = session.scalars(
                    select(User.id)
                    .where(User.is_admin, User.deleted_at.is_(None))
                    .with_for_update(**ROW_LOCK)
                ).all()
                if admins == [user_id]:
                    raise InvalidState(
                        f"user {user_id} ({user.name}) is the last admin; make another first"
                    )
            session.execute(delete(ApiToken).where(ApiToken.user_id == user_id))
            session.execute(delete(Membership).where(Membership.user_id == user_id))
            user.deleted_at = utcnow()
            _revoked(session)
        return user

    def access_epoch(self) -> int:
        """How many revocations the store has seen (see the module docstring)."""
        with self._read() as session:
            value = session.scalar(
                select(AccessEpoch.value).where(AccessEpoch.id == ACCESS_EPOCH_ROW)
            )
        return value or 0

    def set_role(self, user_id: int, project_id: int, role: str) -> Membership:
        """Give a user a role in a project, replacing any role they had there.

        The user is locked first, so two requests for a new member cannot both insert it.
        """
        project_role = parse_choice(Role, role, "role")
        with self._write() as session:
            _live_user(session, user_id, for_update=True)
            get_or_raise(session, Project, project_id)
            membership = session.scalar(
                select(Membership).where(
                    Membership.user_id == user_id, Membership.project_id == project_id
                )
            )
            if membership is None:
                membership = Membership(user_id=user_id, project_id=project_id)
                session.add(membership)
            membership.role = project_role.value
        return membership

    def remove_member(self, user_id: int, project_id: int) -> None:
        """Take the user's role in the project away."""
        with self._write() as session:
            removed = session.execute(
                delete(Membership).where(
                    Membership.user_id == user_id, Membership.project_id == project_id
                )
            )
            if removed.rowcount == 0:  # type: ignore[attr-defined]
                raise NotFound(f"user {user_id} has no role in project {project_id}")
            _revoked(session)

    def role_of(self, user_id: int, project_id: int) -> str | None:
        """The user's role in the project, or None when they are not a member.

        Admins have no implicit role here; callers check `User.is_admin` separately.
        """
        with self._read() as session:
            return session.scalar(
                select(Membership.role).where(
                    Membership.user_id == user_id, Membership.project_id == project_id
                )
            )

    def roles_of(self, user_id: int) -> dict[int, str]:
        """Every project the user has a role in, with that role (one query, for lists)."""
        with self._read() as session:
            rows = session.execute(
                select(Membership.project_id, Membership.role).where(Membership.user_id == user_id)
            )
            return {project_id: role for project_id, role in rows}
