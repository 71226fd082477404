"""Users, roles, passwords, lockout and sessions (IEC 62443-3-3 FR 1 and FR 2).

Roles are ordered (``Viewer < Operator < Engineer < Supervisor``) and every command names an
``Action`` whose minimum role is in ``MIN_ROLE``. ``AuthService.require(session, action)`` is the one
check the controllers call before acting; it raises ``PermissionDenied`` naming the action and the role
it needs, and returns the ``Origin`` to record in the ledger.

Two actions never need a login: watching the plant, and **returning the plant to its PLC base
control** (mode OFF). IEC 62443-3-3 SR 1.1 and SR 2.1 allow, and the safety case requires, that
authentication never impedes an emergency action: an operator must be able to take the agent out of
the loop even when nobody is logged in, the session has locked or the users file is damaged. That
action can only make the plant *less* automated, and it is still recorded in the ledger.

Passwords are hashed with scrypt (per-user random salt; the parameters are stored with each hash, so
stronger defaults later still verify old hashes, which are upgraded at the next login) and compared in
constant time. After ``max_failed`` wrong passwords in a row an account is locked for ``lockout_s``
seconds. A session locks after ``idle_timeout_s`` seconds without a command. All times come from an
injected clock returning epoch seconds, so lockouts survive a restart and tests are deterministic.
Every login, logout, failed login, lockout, expiry, denial and user change produces an ``AuditEvent``
for the ledger through the injected sink.

The users file is JSON, written atomically (temporary file, fsync, ``os.replace``) with mode 0600.
"""

from __future__ import annotations

import base64
import enum
import hashlib
import hmac
import json
import logging
import os
import re
import secrets
import stat
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from types import MappingProxyType
from typing import Any

from app.domain import AuditEvent, Origin, OriginKind, Role

log = logging.getLogger(__name__)


class Action(enum.StrEnum):
    """Commands that need a permission check."""

    VIEW_PROCESS = "view_process"
    RETURN_TO_BASE_CONTROL = "return_to_base_control"
    VIEW_AUDIT = "view_audit"
    CHANGE_OWN_PASSWORD = "change_own_password"
    ACK_ALARM = "ack_alarm"
    SHELVE_ALARM = "shelve_alarm"
    APPROVE = "approve"
    REJECT = "reject"
    MODIFY = "modify"
    WRITE_SETPOINT = "write_setpoint"
    MODE_ADVISORY = "mode_advisory"
    MODE_AUTOMATIC = "mode_automatic"
    EDIT_LIMITS = "edit_limits"
    PROMOTE = "promote"
    ALARM_OUT_OF_SERVICE = "alarm_out_of_service"
    ROLLBACK = "rollback"
    MANAGE_USERS = "manage_users"


MIN_ROLE: Mapping[Action, Role | None] = MappingProxyType(
    {
        Action.VIEW_PROCESS: None,
        Action.RETURN_TO_BASE_CONTROL: None,
        Action.VIEW_AUDIT: Role.VIEWER,
        Action.CHANGE_OWN_PASSWORD: Role.VIEWER,
        Action.ACK_ALARM: Role.OPERATOR,
        Action.SHELVE_ALARM: Role.OPERATOR,
        Action.APPROVE: Role.OPERATOR,
        Action.REJECT: Role.OPERATOR,
        Action.MODIFY: Role.OPERATOR,
        Action.WRITE_SETPOINT: Role.OPERATOR,
        Action.MODE_ADVISORY: Role.OPERATOR,
        Action.MODE_AUTOMATIC: Role.ENGINEER,
        Action.EDIT_LIMITS: Role.ENGINEER,
        Action.PROMOTE: Role.ENGINEER,
        Action.ALARM_OUT_OF_SERVICE: Role.ENGINEER,
        Action.ROLLBACK: Role.SUPERVISOR,
        Action.MANAGE_USERS: Role.SUPERVISOR,
    }
)
"""Minimum role per action; ``None`` means no login is needed (see the module docstring)."""


def permitted(role: Role | None, action: Action) -> bool:
    """True if a user with ``role`` (``None``: nobody logged in) may perform ``action``."""
    needed = MIN_ROLE[action]
    return needed is None or (role is not None and role >= needed)


# --- errors -------------------------------------------------------------------------------------


class AuthError(Exception):
    """Base class of authentication and authorisation failures."""


class PermissionDenied(AuthError):
    """The session may not perform an action.

    Attributes:
        action: What was attempted.
        required: Minimum role for it.
        role: Role of the session (``None`` when not logged in).
        user: User name, if logged in.
    """

    def __init__(self, action: Action, required: Role, role: Role | None, user: str | None) -> None:
        self.action = action
        self.required = required
        self.role = role
        self.user = user
        who = "nobody is logged in" if user is None else f"{user} is {_role_name(role)}"
        super().__init__(f"{action.value!r} needs the {_role_name(required)} role or higher; {who}")


class SessionExpired(PermissionDenied):
    """The session ended (idle timeout, logout, or the user was removed): log in again."""

    def __init__(self, action: Action, required: Role, user: str, why: str) -> None:
        super().__init__(action, required, None, user)
        self.args = (f"{action.value!r} refused: the session of {user} {why}; log in again",)


class LoginFailed(AuthError):
    """Unknown user or wrong password (deliberately not saying which)."""


class AccountLocked(LoginFailed):
    """Too many failed logins: the account is locked until ``until`` (epoch seconds)."""

    def __init__(self, user: str, until: float) -> None:
        self.user = user
        self.until = until
        stamp = datetime.fromtimestamp(until, UTC).isoformat(timespec="seconds")
        super().__init__(f"account {user!r} is locked after failed logins until {stamp}")


class PasswordPolicyError(ValueError):
    """A new password breaks the policy; the message names the rule."""


class UserStoreError(AuthError):
    """The users file cannot be read or written."""


class UserAdminError(AuthError):
    """A user-management request is invalid (unknown or duplicate user, last supervisor)."""


def _role_name(role: Role | None) -> str:
    return "no" if role is None else role.name.lower()


# --- passwords ----------------------------------------------------------------------------------

MIN_PASSWORD_LENGTH = 10
MAX_PASSWORD_LENGTH = 256
_USER_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


def check_password_policy(user: str, password: str) -> None:
    """Check a new password against the policy (IEC 62443-4-2 CR 1.7).

    Raises:
        PasswordPolicyError: Naming the rule that is broken.
    """
    if len(password) < MIN_PASSWORD_LENGTH:
        raise PasswordPolicyError(
            f"password must have at least {MIN_PASSWORD_LENGTH} characters, it has {len(password)}"
        )
    if len(password) > MAX_PASSWORD_LENGTH:
        raise PasswordPolicyError(f"password must have at most {MAX_PASSWORD_LENGTH} characters")
    if password.casefold() == user.casefold():
        raise PasswordPolicyError("password must not be the user name")


def check_user_name(user: str) -> None:
    """Raise ``UserAdminError`` unless ``user`` is 1-64 letters, digits, '.', '_' or '-'."""
    if not _USER_NAME.match(user):
        raise UserAdminError(
            f"invalid user name {user!r}: use 1-64 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit"
        )


@dataclass(frozen=True, slots=True)
class ScryptParams:
    """scrypt cost parameters (memory is about ``128 * r * n`` bytes).

    The default (n=2^15, r=8, p=3: 32 MiB) is one of OWASP's equivalent scrypt settings; about
    0.35 s per hash on the 2-core development machine (``bench/control_blocks.py``).
    """

    n: int = 2**15
    r: int = 8
    p: int = 3
    dklen: int = 32

    @property
    def maxmem(self) -> int:
        """Memory limit handed to OpenSSL, with a margin above what these parameters need."""
        return 128 * self.r * (self.n + self.p + 2) + 2**20


def hash_password(password: str, params: ScryptParams | None = None) -> str:
    """Hash ``password`` with scrypt and a fresh 16-byte salt.

    Returns:
        ``scrypt$n=<n>,r=<r>,p=<p>$<salt b64>$<hash b64>``.
    """
    params = params or ScryptParams()
    salt = os.urandom(16)
    digest = _scrypt(password, salt, params)
    return "$".join(
        [
            "scrypt",
            f"n={params.n},r={params.r},p={params.p}",
            base64.b64encode(salt).decode("ascii"),
            base64.b64encode(digest).decode("ascii"),
        ]
    )


def _scrypt(password: str, salt: bytes, params: ScryptParams) -> bytes:
    return hashlib.scrypt(
        password.encode("utf-8"),
        salt=salt,
        n=params.n,
        r=params.r,
        p=params.p,
        maxmem=params.maxmem,
        dklen=params.dklen,
    )


def _parse_hash(encoded: str) -> tuple[ScryptParams, bytes, bytes]:
    try:
        scheme, cost, salt_b64, digest_b64 = encoded.split("$")
        if scheme != "scrypt":
            raise ValueError(f"unknown scheme {scheme!r}")
        fields = dict(part.split("=", 1) for part in cost.split(","))
        salt = base64.b64decode(salt_b64, validate=True)
        digest = base64.b64decode(digest_b64, validate=True)
        params = ScryptParams(int(fields["n"]), int(fields["r"]), int(fields["p"]), len(digest))
    except (ValueError, KeyError) as exc:
        raise UserStoreError(f"malformed password hash: {exc}") from None
    return params, salt, digest


def verify_password(password: str, encoded: str) -> bool:
    """True if ``password`` matches ``encoded`` (constant-time comparison).

    Raises:
        UserStoreError: ``encoded`` is not a hash this module wrote.
    """
    params, salt, expected = _parse_hash(encoded)
    return hmac.compare_digest(_scrypt(password, salt, params), expected)


def needs_rehash(encoded: str, params: ScryptParams) -> bool:
    """True if ``encoded`` was made with other parameters than ``params``."""
    return _parse_hash(encoded)[0] != params


# --- users and their file -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class User:
    """One account.

    Attributes:
        name: Unique user name.
        role: Role.
        password_hash: Encoded scrypt hash.
        failed_attempts: Wrong passwords in a row since the last successful login.
        locked_until: Epoch seconds until which logins are refused, if locked.
        created_at: Epoch seconds.
        password_changed_at: Epoch seconds.
    """

    name: str
    role: Role
    password_hash: str
    failed_attempts: int = 0
    locked_until: float | None = None
    created_at: float = 0.0
    password_changed_at: float = 0.0


_FILE_VERSION = 1


class UserStore:
    """The users file: JSON, written atomically with mode 0600.

    Args:
        path: File location; missing means "no users yet".
    """

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)

    def load(self) -> dict[str, User]:
        """Read every user.

        Raises:
            UserStoreError: Unreadable or malformed file (naming the file and the problem).
        """
        try:
            mode = self.path.stat().st_mode
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return {}
        except (OSError, UnicodeDecodeError) as exc:
            raise UserStoreError(f"{self.path}: cannot read the users file: {exc}") from None
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            log.warning(
                "%s: users file is accessible to other accounts (mode %o); it should be 0600",
                self.path,
                stat.S_IMODE(mode),
            )
        try:
            doc = json.loads(text)
            if doc.get("version") != _FILE_VERSION:
                raise ValueError(f"unsupported version {doc.get('version')!r}")
            users = {}
            for entry in doc["users"]:
                user = User(
                    name=str(entry["name"]),
                    role=Role[str(entry["role"]).upper()],
                    password_hash=str(entry["password"]),
                    failed_attempts=int(entry.get("failed_attempts", 0)),
                    locked_until=_optional_float(entry.get("locked_until")),
                    created_at=float(entry.get("created_at", 0.0)),
                    password_changed_at=float(entry.get("password_changed_at", 0.0)),
                )
                _parse_hash(user.password_hash)
                users[user.name] = user
        except (ValueError, KeyError, TypeError, AttributeError, UserStoreError) as exc:
            raise UserStoreError(f"{self.path}: malformed users file: {exc}") from None
        return users

    def save(self, users: Mapping[str, User]) -> None:
        """Write every user atomically; the file never exists half-written or world-readable.

        Raises:
            UserStoreError: The file could not be written.
        """
        doc: dict[str, Any] = {
            "version": _FILE_VERSION,
            "users": [
                {
                    "name": u.name,
                    "role": u.role.name.lower(),
                    "password": u.password_hash,
                    "failed_attempts": u.failed_attempts,
                    "locked_until": u.locked_until,
                    "created_at": u.created_at,
                    "password_changed_at": u.password_changed_at,
                }
                for u in sorted(users.values(), key=lambda u: u.name)
            ],
        }
        data = (json.dumps(doc, indent=2) + "\n").encode("utf-8")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", dir=self.path.parent)
            try:
                os.fchmod(fd, 0o600)
                with os.fdopen(fd, "wb") as f:
                    f.write(data)
                    f.flush()
                    os.fsync(f.fileno())
                os.replace(tmp, self.path)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
            _fsync_dir(self.path.parent)
        except OSError as exc:
            raise UserStoreError(f"{self.path}: cannot write the users file: {exc}") from None


def _optional_float(value: Any) -> float | None:
    return None if value is None else float(value)


def _fsync_dir(folder: Path) -> None:
    # Makes the rename itself durable; not possible on Windows, where os.replace is enough.
    if os.name != "posix":  # pragma: no cover
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# --- sessions -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Session:
    """A logged-in user; pass it to ``AuthService.require``.

    Attributes:
        token: Random session id.
        user: User name.
        role: Role at login (``require`` always checks the current role).
        started_at: Epoch seconds.
    """

    token: str
    user: str
    role: Role
    started_at: float


ANONYMOUS = "(not logged in)"
"""Origin name recorded for actions that need no login."""


class AuthService:
    """Logins, sessions, permission checks and user management; used from the control context.

    Args:
        store: The users file.
        clock: Epoch seconds (``time.time``); injected for tests.
        sink: Receives one ``AuditEvent`` per login, logout, failure, lockout, expiry, denial and
            user change.
        max_failed: Wrong passwords in a row that lock an account.
        lockout_s: How long a locked account stays locked.
        idle_timeout_s: Idle time after which a session locks.
        scrypt: Hash parameters for new and upgraded hashes.

    Raises:
        UserStoreError: The users file exists but is unreadable or malformed.
    """

    def __init__(
        self,
        store: UserStore,
        *,
        clock: Callable[[], float] = time.time,
        sink: Callable[[AuditEvent], None] | None = None,
        max_failed: int = 5,
        lockout_s: float = 900.0,
        idle_timeout_s: float = 900.0,
        scrypt: ScryptParams | None = None,
    ) -> None:
        if max_failed < 1 or lockout_s <= 0 or idle_timeout_s <= 0:
            raise ValueError(
                "max_failed must be >= 1 and lockout_s, idle_timeout_s positive, got "
                f"{max_failed}, {lockout_s}, {idle_timeout_s}"
            )
        self._store = store
        self._clock = clock
        self._sink = sink
        self.max_failed = max_failed
        self.lockout_s = lockout_s
        self.idle_timeout_s = idle_timeout_s
        self._params = scrypt or ScryptParams()
        self._users = store.load()
        self._sessions: dict[str, Session] = {}
        self._last_active: dict[str, float] = {}
        # Hash checked for unknown users, so their failed logins take as long as real ones;
        # made on first need so start-up doesn't pay for a scrypt run.
        self._dummy: str | None = None

    def _dummy_hash(self) -> str:
        if self._dummy is None:
            self._dummy = hash_password(secrets.token_hex(16), self._params)
        return self._dummy

    # -- audit ---------------------------------------------------------------------------------

    def _audit(self, kind: str, origin: Origin, summary: str, **data: Any) -> None:
        if self._sink is not None:
            at = datetime.fromtimestamp(self._clock(), UTC)
            self._sink(AuditEvent(kind, origin, summary, data, at))

    @staticmethod
    def _origin(user: User) -> Origin:
        return Origin.operator(user.name, user.role)

    def _put(self, user: User) -> None:
        users = {**self._users, user.name: user}
        self._store.save(users)
        self._users = users

    # -- queries -------------------------------------------------------------------------------

    @property
    def users(self) -> tuple[User, ...]:
        """Every account, sorted by name."""
        return tuple(sorted(self._users.values(), key=lambda u: u.name))

    def has_users(self) -> bool:
        """False until the first supervisor is created."""
        return bool(self._users)

    def is_active(self, session: Session) -> bool:
        """True if ``session`` is logged in and not idle for longer than the timeout."""
        last = self._last_active.get(session.token)
        return last is not None and self._clock() - last <= self.idle_timeout_s

    # -- login ---------------------------------------------------------------------------------

    def login(self, name: str, password: str) -> Session:
        """Authenticate ``name`` and open a session.

        Raises:
            AccountLocked: Too many failed attempts (also raised by the attempt that locks).
            LoginFailed: Unknown user or wrong password.
        """
        now = self._clock()
        user = self._users.get(name)
        if user is None:
            verify_password(password, self._dummy_hash())
            self._audit(
                "login_failed",
                Origin(OriginKind.OPERATOR, name),
                f"failed login for unknown user {name!r}",
                reason="unknown_user",
            )
            raise LoginFailed("unknown user or wrong password")
        if user.locked_until is not None:
            if now < user.locked_until:
                self._audit(
                    "login_failed",
                    self._origin(user),
                    f"login refused for {name}: account locked",
                    reason="locked",
                    locked_until=user.locked_until,
                )
                raise AccountLocked(name, user.locked_until)
            user = replace(user, failed_attempts=0, locked_until=None)
        if not verify_password(password, user.password_hash):
            failed = user.failed_attempts + 1
            locked_until = now + self.lockout_s if failed >= self.max_failed else None
            self._put(replace(user, failed_attempts=failed, locked_until=locked_until))
            self._audit(
                "login_failed",
                self._origin(user),
                f"wrong password for {name} ({failed} in a row)",
                reason="wrong_password",
                failed_attempts=failed,
            )
            if locked_until is not None:
                self._audit(
                    "lockout",
                    self._origin(user),
                    f"account {name} locked for {self.lockout_s:g} s after {failed} failed logins",
                    failed_attempts=failed,
                    locked_until=locked_until,
                )
                raise AccountLocked(name, locked_until)
            raise LoginFailed("unknown user or wrong password")
        updated = replace(user, failed_attempts=0, locked_until=None)
        if needs_rehash(user.password_hash, self._params):
            updated = replace(updated, password_hash=hash_password(password, self._params))
        if updated != self._users[name]:
            self._put(updated)
        self._end_idle_sessions()
        session = Session(secrets.token_urlsafe(24), name, user.role, now)
        self._sessions[session.token] = session
        self._last_active[session.token] = now
        self._audit("login", self._origin(user), f"{name} logged in as {_role_name(user.role)}")
        return session

    def logout(self, session: Session) -> None:
        """End ``session`` (no effect if it already ended)."""
        if self._sessions.pop(session.token, None) is None:
            return
        self._last_active.pop(session.token, None)
        origin = Origin.operator(session.user, session.role)
        self._audit("logout", origin, f"{session.user} logged out")

    def _end_idle_sessions(self) -> None:
        # A session nobody uses again (closed window, lost client) is otherwise only ended when
        # it is next used: without this, every such login would stay in memory for good.
        idle = [s for s in self._sessions.values() if not self.is_active(s)]
        for session in idle:
            self._end(session, f"locked after {self.idle_timeout_s:g} s idle")

    def _end(self, session: Session, why: str) -> None:
        self._sessions.pop(session.token, None)
        self._last_active.pop(session.token, None)
        origin = Origin.operator(session.user, session.role)
        self._audit("session_expired", origin, f"session of {session.user} {why}", why=why)

    # -- authorisation -------------------------------------------------------------------------

    def require(self, session: Session | None, action: Action) -> Origin:
        """Check that ``session`` may perform ``action`` now, and count it as activity.

        Args:
            session: The caller's session, or ``None`` if nobody is logged in.
            action: What the caller is about to do.

        Returns:
            The origin to record with the action (current role; an anonymous operator origin for
            actions that need no login).

        Raises:
            SessionExpired: The session has ended or been idle too long.
            PermissionDenied: The role is below ``MIN_ROLE[action]``.
        """
        needed = MIN_ROLE[action]
        now = self._clock()
        if needed is None:
            if session is not None and self.is_active(session):
                self._last_active[session.token] = now
                user = self._users.get(session.user)
                if user is not None:
                    return self._origin(user)
            return Origin(OriginKind.OPERATOR, ANONYMOUS)
        if session is None:
            self._audit(
                "permission_denied",
                Origin(OriginKind.OPERATOR, ANONYMOUS),
                f"{action.value} refused: nobody is logged in",
                action=action.value,
                required=needed.name.lower(),
            )
            raise PermissionDenied(action, needed, None, None)
        last = self._last_active.get(session.token)
        if last is None:
            raise SessionExpired(action, needed, session.user, "has ended")
        if now - last > self.idle_timeout_s:
            self._end(session, f"locked after {self.idle_timeout_s:g} s idle")
            raise SessionExpired(action, needed, session.user, "locked after the idle timeout")
        user = self._users.get(session.user)
        if user is None:
            self._end(session, "ended: the account was removed")
            raise SessionExpired(action, needed, session.user, "ended: the account was removed")
        if user.role < needed:
            self._audit(
                "permission_denied",
                self._origin(user),
                f"{action.value} refused for {user.name} ({_role_name(user.role)})",
                action=action.value,
                required=needed.name.lower(),
            )
            raise PermissionDenied(action, needed, user.role, user.name)
        self._last_active[session.token] = now
        return self._origin(user)

    # -- user management -----------------------------------------------------------------------

    def create_first_supervisor(self, name: str, password: str) -> User:
        """Create the first account (a supervisor) on a console with no users.

        Raises:
            UserAdminError: Users exist already, or the name is invalid.
            PasswordPolicyError: The password breaks the policy.
        """
        if self._users:
            raise UserAdminError("users exist already; a supervisor must add further accounts")
        user = self._new_user(name, Role.SUPERVISOR, password)
        self._audit(
            "user_added",
            Origin.system("setup"),
            f"first supervisor {name} created",
            user=name,
            role="supervisor",
        )
        return user

    def _new_user(self, name: str, role: Role, password: str) -> User:
        check_user_name(name)
        check_password_policy(name, password)
        now = self._clock()
        user = User(name, role, hash_password(password, self._params), 0, None, now, now)
        self._put(user)
        return user

    def _get(self, name: str) -> User:
        try:
            return self._users[name]
        except KeyError:
            raise UserAdminError(f"no user {name!r}") from None

    def _supervisors_besides(self, name: str) -> int:
        return sum(1 for u in self._users.values() if u.role is Role.SUPERVISOR and u.name != name)

    def add_user(self, session: Session | None, name: str, role: Role, password: str) -> User:
        """Add an account (supervisors only).

        Raises:
            PermissionDenied: ``session`` is not a supervisor.
            UserAdminError: The name is invalid or taken.
            PasswordPolicyError: The password breaks the policy.
        """
        origin = self.require(session, Action.MANAGE_USERS)
        if name in self._users:
            raise UserAdminError(f"user {name!r} exists already")
        user = self._new_user(name, role, password)
        self._audit(
            "user_added",
            origin,
            f"user {name} added as {_role_name(role)}",
            user=name,
            role=role.name.lower(),
        )
        return user

    def remove_user(self, session: Session | None, name: str) -> None:
        """Remove an account (supervisors only; not one's own, not the last supervisor).

        Raises:
            PermissionDenied: ``session`` is not a supervisor.
            UserAdminError: Unknown user, one's own account, or the last supervisor.
        """
        origin = self.require(session, Action.MANAGE_USERS)
        user = self._get(name)
        if session is not None and name == session.user:
            raise UserAdminError("you cannot remove your own account")
        if user.role is Role.SUPERVISOR and self._supervisors_besides(name) == 0:
            raise UserAdminError(f"{name} is the last supervisor and cannot be removed")
        users = {k: v for k, v in self._users.items() if k != name}
        self._store.save(users)
        self._users = users
        for s in list(self._sessions.values()):
            if s.user == name:
                self._end(s, "ended: the account was removed")
        self._audit("user_removed", origin, f"user {name} removed", user=name)

    def set_role(self, session: Session | None, name: str, role: Role) -> User:
        """Change a user's role (supervisors only; the last supervisor keeps the role).

        Raises:
            PermissionDenied: ``session`` is not a supervisor.
            UserAdminError: Unknown user or demoting the last supervisor.
        """
        origin = self.require(session, Action.MANAGE_USERS)
        user = self._get(name)
        if (
            user.role is Role.SUPERVISOR
            and role is not Role.SUPERVISOR
            and self._supervisors_besides(name) == 0
        ):
            raise UserAdminError(f"{name} is the last supervisor and must keep that role")
        updated = replace(user, role=role)
        self._put(updated)
        self._audit(
            "role_changed",
            origin,
            f"{name}: {_role_name(user.role)} -> {_role_name(role)}",
            user=name,
            old=user.role.name.lower(),
            new=role.name.lower(),
        )
        return updated

    def reset_password(self, session: Session | None, name: str, password: str) -> None:
        """Set a new password for another user and unlock the account (supervisors only).

        Raises:
            PermissionDenied: ``session`` is not a supervisor.
            UserAdminError: Unknown user.
            PasswordPolicyError: The password breaks the policy.
        """
        origin = self.require(session, Action.MANAGE_USERS)
        user = self._get(name)
        check_password_policy(name, password)
        self._put(
            replace(
                user,
                password_hash=hash_password(password, self._params),
                failed_attempts=0,
                locked_until=None,
                password_changed_at=self._clock(),
            )
        )
        self._audit("password_reset", origin, f"password of {name} reset", user=name)

    def unlock(self, session: Session | None, name: str) -> None:
        """Clear the lockout of ``name`` (supervisors only).

        Raises:
            PermissionDenied: ``session`` is not a supervisor.
            UserAdminError: Unknown user.
        """
        origin = self.require(session, Action.MANAGE_USERS)
        user = self._get(name)
        self._put(replace(user, failed_attempts=0, locked_until=None))
        self._audit("user_unlocked", origin, f"account {name} unlocked", user=name)

    def change_password(self, session: Session | None, old: str, new: str) -> None:
        """Change the session user's own password.

        Raises:
            PermissionDenied: Not logged in or the session expired.
            LoginFailed: ``old`` is wrong.
            PasswordPolicyError: ``new`` breaks the policy or equals ``old``.
        """
        origin = self.require(session, Action.CHANGE_OWN_PASSWORD)
        assert session is not None
        user = self._get(session.user)
        if not verify_password(old, user.password_hash):
            self._audit(
                "login_failed",
                origin,
                f"wrong current password for {user.name} on password change",
                reason="wrong_password",
            )
            raise LoginFailed("the current password is wrong")
        check_password_policy(user.name, new)
        if new == old:
            raise PasswordPolicyError("the new password must differ from the current one")
        self._put(
            replace(
                user,
                password_hash=hash_password(new, self._params),
                password_changed_at=self._clock(),
            )
        )
        self._audit("password_changed", origin, f"{user.name} changed their password")


__all__ = [
    "ANONYMOUS",
    "MIN_PASSWORD_LENGTH",
    "MIN_ROLE",
    "AccountLocked",
    "Action",
    "AuthError",
    "AuthService",
    "LoginFailed",
    "PasswordPolicyError",
    "PermissionDenied",
    "ScryptParams",
    "Session",
    "SessionExpired",
    "User",
    "UserAdminError",
    "UserStore",
    "UserStoreError",
    "check_password_policy",
    "check_user_name",
    "hash_password",
    "needs_rehash",
    "permitted",
    "verify_password",
]
