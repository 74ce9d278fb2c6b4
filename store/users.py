"""Users, API tokens and project roles.

Tokens are shown once, when issued, and stored only as their SHA-256: a copy of the
database does not let anyone call the API. The tokens are random (256 bits), so an
unsalted fast hash is enough; a lookup by hash is the comparison.
"""

import hashlib
import secrets

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from preannotate.store.db import Database, get_or_raise
from preannotate.store.errors import AlreadyExists, NotFound
from preannotate.store.models import ApiToken, Membership, Project, Role, User, parse_choice

_TOKEN_BYTES = 32


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class UserOps(Database):
    def create_user(self, name: str, *, is_admin: bool = False) -> User:
        try:
            with self._write() as session:
                user = User(name=name, is_admin=is_admin)
                session.add(user)
        except IntegrityError:
            raise AlreadyExists(f"a user named {name!r} already exists") from None
        return user

    def get_user_by_name(self, name: str) -> User:
        with self._read() as session:
            user = session.scalar(select(User).where(User.name == name))
        if user is None:
            raise NotFound(f"user {name!r} not found")
        return user

    def issue_token(self, user_id: int) -> str:
        """A new API token for the user, returned in clear this once only."""
        token = secrets.token_urlsafe(_TOKEN_BYTES)
        with self._write() as session:
            get_or_raise(session, User, user_id)
            session.add(ApiToken(user_id=user_id, token_hash=hash_token(token)))
        return token

    def user_for_token(self, token: str) -> User | None:
        """The user a clear token belongs to, or None for an unknown token."""
        with self._read() as session:
            query = select(User).join(ApiToken).where(ApiToken.token_hash == hash_token(token))
            return session.scalar(query)

    def set_role(self, user_id: int, project_id: int, role: str) -> Membership:
        """Give a user a role in a project, replacing any role they had there.

        The user is locked first, so two requests for a new member cannot both insert it.
        """
        project_role = parse_choice(Role, role, "role")
        with self._write() as session:
            get_or_raise(session, User, user_id, for_update=True)
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
