"""Users, roles, API tokens, console sessions, login rate limiting, audit log.

All state is in the database (tokens and sessions stored as SHA-256 hashes), so any replica can
check what another issued and a stolen database dump holds no usable secret.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import time
from typing import Any

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from vmshield.center.db import ApiToken, AuditEntry, ConsoleSession, LoginAttempt, User

ROLES = ("viewer", "operator", "administrator")
_RANK = {r: i for i, r in enumerate(ROLES)}

SESSION_SECONDS = 8 * 3600
# Rate limit: this many failed logins per name, or per client address, in the window.
LOGIN_WINDOW = 300.0
LOGIN_MAX_FAILURES = 5

_NAME_RE = re.compile(r"^[A-Za-z0-9_.@-]{1,64}$")
_hasher = PasswordHasher()
# A real hash to verify against when the user does not exist, so timing does not tell.
_DUMMY_HASH = _hasher.hash("vmshield-no-such-user")


class AuthError(Exception):
    pass


def role_at_least(role: str, needed: str) -> bool:
    return _RANK.get(role, -1) >= _RANK[needed]


def check_role(role: str) -> str:
    if role not in _RANK:
        raise ValueError(f"role: {role!r} is not one of {', '.join(ROLES)}")
    return role


def hash_secret(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def add_user(s: Session, name: str, password: str, role: str, actor: str) -> User:
    if not _NAME_RE.match(name):
        raise ValueError("name: 1-64 characters of letters, digits, _ . @ -")
    check_role(role)
    if len(password) < 8:
        raise ValueError("password: at least 8 characters")
    if s.scalar(select(User).where(User.name == name)) is not None:
        raise ValueError(f"user {name!r} already exists")
    user = User(name=name, password_hash=_hasher.hash(password), role=role)
    s.add(user)
    s.flush()
    audit(s, actor, "user.add", f"user:{name}", {"role": role})
    return user


def set_password(s: Session, user: User, password: str, actor: str) -> None:
    if len(password) < 8:
        raise ValueError("password: at least 8 characters")
    user.password_hash = _hasher.hash(password)
    audit(s, actor, "user.password", f"user:{user.name}", {})


def create_token(
    s: Session, role: str, actor: str, name: str = "", ttl: float | None = None
) -> tuple[str, ApiToken]:
    check_role(role)
    token = "vms_" + secrets.token_urlsafe(32)
    row = ApiToken(
        token_hash=hash_secret(token),
        name=name[:128],
        role=role,
        created_by=actor,
        expires_at=(time.time() + ttl) if ttl else None,
    )
    s.add(row)
    s.flush()
    audit(s, actor, "token.create", f"token:{row.id}", {"role": role, "name": name})
    return token, row


def token_principal(s: Session, token: str) -> tuple[str, str] | None:
    """(actor, role) for a valid API token, else None."""
    row = s.scalar(select(ApiToken).where(ApiToken.token_hash == hash_secret(token)))
    if row is None or row.revoked:
        return None
    if row.expires_at is not None and row.expires_at < time.time():
        return None
    return f"token:{row.id}" + (f"({row.name})" if row.name else ""), row.role


def _recent_failures(s: Session, key: str, now: float) -> int:
    return int(
        s.scalar(
            select(func.count())
            .select_from(LoginAttempt)
            .where(LoginAttempt.key == key, LoginAttempt.ts > now - LOGIN_WINDOW)
        )
        or 0
    )


def login_blocked(s: Session, name: str, client: str) -> bool:
    now = time.time()
    return (
        _recent_failures(s, f"user:{name}", now) >= LOGIN_MAX_FAILURES
        or _recent_failures(s, f"addr:{client}", now) >= LOGIN_MAX_FAILURES * 4
    )


def address_blocked(s: Session, client: str) -> bool:
    """Too many failures from this address (logins or enrolment tokens)."""
    return _recent_failures(s, f"addr:{client}", time.time()) >= LOGIN_MAX_FAILURES * 4


def record_failure(s: Session, client: str) -> None:
    s.add(LoginAttempt(key=f"addr:{client}", ts=time.time()))


def authenticate(s: Session, name: str, password: str, client: str) -> User | None:
    """Check a password; failures are recorded for the rate limit (by name and by address)."""
    now = time.time()
    s.execute(delete(LoginAttempt).where(LoginAttempt.ts < now - LOGIN_WINDOW))
    user = s.scalar(select(User).where(User.name == name))
    ok = False
    try:
        ok = _hasher.verify(user.password_hash if user else _DUMMY_HASH, password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        ok = False
    if not ok or user is None or user.disabled:
        s.add(LoginAttempt(key=f"user:{name[:64]}", ts=now))
        s.add(LoginAttempt(key=f"addr:{client}", ts=now))
        audit(s, name[:64] or "?", "login.failed", f"addr:{client}", {})
        return None
    if _hasher.check_needs_rehash(user.password_hash):
        user.password_hash = _hasher.hash(password)
    return user


def create_session(s: Session, user: User) -> tuple[str, ConsoleSession]:
    token = secrets.token_urlsafe(32)
    row = ConsoleSession(
        token_hash=hash_secret(token),
        user_id=user.id,
        csrf=secrets.token_urlsafe(24),
        expires_at=time.time() + SESSION_SECONDS,
    )
    s.add(row)
    s.flush()
    audit(s, user.name, "login", f"user:{user.name}", {})
    return token, row


def session_principal(s: Session, token: str) -> tuple[User, ConsoleSession] | None:
    row = s.scalar(select(ConsoleSession).where(ConsoleSession.token_hash == hash_secret(token)))
    if row is None or row.expires_at < time.time():
        return None
    user = s.get(User, row.user_id)
    if user is None or user.disabled:
        return None
    return user, row


def end_session(s: Session, token: str) -> None:
    s.execute(delete(ConsoleSession).where(ConsoleSession.token_hash == hash_secret(token)))


def audit(s: Session, actor: str, action: str, target: str, detail: dict[str, Any]) -> None:
    s.add(AuditEntry(ts=time.time(), actor=actor, action=action, target=target, detail=detail))
