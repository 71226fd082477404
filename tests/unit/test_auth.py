"""Users and roles: hashing, policy, lockout, idle timeout, role x action matrix, users file, audit."""

from __future__ import annotations

import json
import logging
import stat
from pathlib import Path
from typing import Any

import pytest

from app.controllers.auth import (
    ANONYMOUS,
    MIN_ROLE,
    AccountLocked,
    Action,
    AuthService,
    LoginFailed,
    PasswordPolicyError,
    PermissionDenied,
    ScryptParams,
    Session,
    SessionExpired,
    UserAdminError,
    UserStore,
    UserStoreError,
    check_password_policy,
    hash_password,
    needs_rehash,
    permitted,
    verify_password,
)
from app.domain import AuditEvent, OriginKind, Role

FAST = ScryptParams(n=2**10, r=8, p=1)
T0 = 1_790_000_000.0
PASSWORDS = {
    "sam": "supervisor-pass-1",
    "erin": "engineer-pass-22",
    "otto": "operator-pass-333",
    "vic": "viewer-pass-4444",
}
ROLES = {"sam": Role.SUPERVISOR, "erin": Role.ENGINEER, "otto": Role.OPERATOR, "vic": Role.VIEWER}


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def audit() -> list[AuditEvent]:
    return []


def service(path: Path, clock: Clock, audit: list[AuditEvent], **kw: Any) -> AuthService:
    return AuthService(
        UserStore(path),
        clock=clock,
        sink=audit.append,
        scrypt=FAST,
        **kw,
    )


@pytest.fixture
def auth(tmp_path: Path, clock: Clock, audit: list[AuditEvent]) -> AuthService:
    svc = service(tmp_path / "users.json", clock, audit)
    svc.create_first_supervisor("sam", PASSWORDS["sam"])
    boss = svc.login("sam", PASSWORDS["sam"])
    for name in ("erin", "otto", "vic"):
        svc.add_user(boss, name, ROLES[name], PASSWORDS[name])
    svc.logout(boss)
    audit.clear()
    return svc


def kinds(audit: list[AuditEvent]) -> list[str]:
    return [e.kind for e in audit]


# --- hashing and policy -------------------------------------------------------------------------


def test_scrypt_hash_stores_its_parameters_and_a_per_user_salt() -> None:
    a = hash_password("same-password", FAST)
    b = hash_password("same-password", FAST)
    assert a != b  # different salts
    assert a.startswith("scrypt$n=1024,r=8,p=1$")
    assert verify_password("same-password", a)
    assert not verify_password("same-passwore", a)
    assert not needs_rehash(a, FAST)
    assert needs_rehash(a, ScryptParams())


def test_default_parameters_hash_and_verify() -> None:
    encoded = hash_password("correct horse battery")
    assert encoded.startswith("scrypt$n=32768,r=8,p=3$")
    assert verify_password("correct horse battery", encoded)


@pytest.mark.parametrize(
    "bad", ["plain", "scrypt$n=1,r=1$AA==", "bcrypt$x$y$z", "scrypt$n=1$!!$AA=="]
)
def test_malformed_hashes_are_reported(bad: str) -> None:
    with pytest.raises(UserStoreError, match="malformed password hash"):
        verify_password("whatever-pass", bad)


@pytest.mark.parametrize(
    ("user", "password", "rule"),
    [
        ("otto", "short-pw1", "at least 10 characters, it has 9"),
        ("otto", "", "at least 10"),
        ("operator01", "Operator01", "must not be the user name"),
        ("otto", "x" * 257, "at most 256"),
    ],
)
def test_password_policy_names_the_rule(user: str, password: str, rule: str) -> None:
    with pytest.raises(PasswordPolicyError, match=rule):
        check_password_policy(user, password)


def test_password_policy_accepts_a_good_password() -> None:
    check_password_policy("otto", "ten-chars!")


# --- role x action matrix -----------------------------------------------------------------------

EXPECTED_MIN = {
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


def test_min_role_table_is_the_documented_one() -> None:
    assert dict(MIN_ROLE) == EXPECTED_MIN
    assert set(MIN_ROLE) == set(Action)


MATRIX = [(user, action) for user in [*ROLES, None] for action in Action]


@pytest.mark.parametrize(("user", "action"), MATRIX, ids=[f"{u}-{a}" for u, a in MATRIX])
def test_role_action_matrix(
    auth: AuthService, audit: list[AuditEvent], user: str | None, action: Action
) -> None:
    session = None if user is None else auth.login(user, PASSWORDS[user])
    role = None if user is None else ROLES[user]
    needed = EXPECTED_MIN[action]
    allowed = needed is None or (role is not None and role >= needed)
    assert permitted(role, action) is allowed
    audit.clear()
    if allowed:
        origin = auth.require(session, action)
        assert origin.kind is OriginKind.OPERATOR
        assert origin.name == (ANONYMOUS if user is None else user)
        assert origin.role is role
        assert audit == []
    else:
        assert needed is not None
        with pytest.raises(PermissionDenied) as info:
            auth.require(session, action)
        message = str(info.value)
        assert action.value in message and needed.name.lower() in message
        assert (info.value.action, info.value.required, info.value.role) == (action, needed, role)
        assert kinds(audit) == ["permission_denied"]


def test_return_to_base_control_works_after_the_session_locked(
    auth: AuthService, clock: Clock
) -> None:
    s = auth.login("otto", PASSWORDS["otto"])
    clock.now += 10_000
    assert auth.require(s, Action.RETURN_TO_BASE_CONTROL).name == ANONYMOUS
    with pytest.raises(SessionExpired):
        auth.require(s, Action.APPROVE)


def test_role_changes_apply_to_open_sessions(auth: AuthService) -> None:
    erin = auth.login("erin", PASSWORDS["erin"])
    assert auth.require(erin, Action.MODE_AUTOMATIC).role is Role.ENGINEER
    boss = auth.login("sam", PASSWORDS["sam"])
    auth.set_role(boss, "erin", Role.OPERATOR)
    with pytest.raises(PermissionDenied, match="erin is operator"):
        auth.require(erin, Action.MODE_AUTOMATIC)


# --- login, lockout, sessions -------------------------------------------------------------------


def test_login_and_logout_are_audited(auth: AuthService, audit: list[AuditEvent]) -> None:
    s = auth.login("otto", PASSWORDS["otto"])
    assert (s.user, s.role) == ("otto", Role.OPERATOR)
    auth.logout(s)
    auth.logout(s)  # second logout is a no-op
    assert kinds(audit) == ["login", "logout"]
    assert audit[0].origin.role is Role.OPERATOR
    assert audit[0].at.timestamp() == T0
    with pytest.raises(SessionExpired, match="has ended"):
        auth.require(s, Action.APPROVE)


def test_wrong_password_and_unknown_user_look_the_same(
    auth: AuthService, audit: list[AuditEvent]
) -> None:
    with pytest.raises(LoginFailed) as wrong:
        auth.login("otto", "not-the-password")
    with pytest.raises(LoginFailed) as unknown:
        auth.login("nobody", "not-the-password")
    assert str(wrong.value) == str(unknown.value) == "unknown user or wrong password"
    assert kinds(audit) == ["login_failed", "login_failed"]
    assert [e.data["reason"] for e in audit] == ["wrong_password", "unknown_user"]


def test_lockout_after_n_failures_for_the_configured_time(
    tmp_path: Path, clock: Clock, audit: list[AuditEvent]
) -> None:
    auth = service(tmp_path / "u.json", clock, audit, max_failed=3, lockout_s=600)
    auth.create_first_supervisor("sam", PASSWORDS["sam"])
    audit.clear()
    for _ in range(2):
        with pytest.raises(LoginFailed) as info:
            auth.login("sam", "wrong-password")
        assert not isinstance(info.value, AccountLocked)
    with pytest.raises(AccountLocked) as locked:
        auth.login("sam", "wrong-password")
    assert locked.value.until == T0 + 600
    assert kinds(audit) == ["login_failed"] * 3 + ["lockout"]
    clock.now += 599
    with pytest.raises(AccountLocked):  # even the right password is refused while locked
        auth.login("sam", PASSWORDS["sam"])
    assert audit[-1].data["reason"] == "locked"
    clock.now += 1
    assert auth.login("sam", PASSWORDS["sam"]).user == "sam"
    assert auth.users[0].failed_attempts == 0 and auth.users[0].locked_until is None


def test_a_success_resets_the_failure_count(auth: AuthService) -> None:
    for _ in range(4):
        with pytest.raises(LoginFailed):
            auth.login("otto", "wrong-password")
    auth.login("otto", PASSWORDS["otto"])
    for _ in range(4):
        with pytest.raises(LoginFailed) as info:
            auth.login("otto", "wrong-password")
        assert not isinstance(info.value, AccountLocked)


def test_lockout_survives_a_restart(tmp_path: Path, clock: Clock, audit: list[AuditEvent]) -> None:
    path = tmp_path / "u.json"
    auth = service(path, clock, audit, max_failed=2)
    auth.create_first_supervisor("sam", PASSWORDS["sam"])
    for _ in range(2):
        with pytest.raises(LoginFailed):
            auth.login("sam", "wrong-password")
    restarted = service(path, clock, audit, max_failed=2)
    with pytest.raises(AccountLocked):
        restarted.login("sam", PASSWORDS["sam"])


def test_supervisor_can_unlock(auth: AuthService, audit: list[AuditEvent]) -> None:
    for _ in range(5):
        with pytest.raises(LoginFailed):
            auth.login("otto", "wrong-password")
    boss = auth.login("sam", PASSWORDS["sam"])
    auth.unlock(boss, "otto")
    assert auth.login("otto", PASSWORDS["otto"]).user == "otto"
    assert "user_unlocked" in kinds(audit)


def test_idle_timeout_locks_the_session(
    tmp_path: Path, clock: Clock, audit: list[AuditEvent]
) -> None:
    auth = service(tmp_path / "u.json", clock, audit, idle_timeout_s=300)
    auth.create_first_supervisor("sam", PASSWORDS["sam"])
    s = auth.login("sam", PASSWORDS["sam"])
    clock.now += 299
    auth.require(s, Action.ROLLBACK)  # activity resets the idle timer
    clock.now += 300
    assert auth.is_active(s)
    auth.require(s, Action.ROLLBACK)
    clock.now += 300.5
    assert not auth.is_active(s)
    audit.clear()
    with pytest.raises(SessionExpired, match="idle timeout"):
        auth.require(s, Action.ROLLBACK)
    assert kinds(audit) == ["session_expired"]
    with pytest.raises(SessionExpired, match="has ended"):
        auth.require(s, Action.VIEW_AUDIT)


def test_a_forged_session_is_refused(auth: AuthService) -> None:
    forged = Session("not-a-token", "sam", Role.SUPERVISOR, T0)
    with pytest.raises(SessionExpired):
        auth.require(forged, Action.MANAGE_USERS)


def test_old_hashes_are_upgraded_at_login(
    tmp_path: Path, clock: Clock, audit: list[AuditEvent]
) -> None:
    path = tmp_path / "u.json"
    weak = AuthService(UserStore(path), clock=clock, scrypt=ScryptParams(n=2**8, r=8, p=1))
    weak.create_first_supervisor("sam", PASSWORDS["sam"])
    strong = service(path, clock, audit)
    strong.login("sam", PASSWORDS["sam"])
    assert not needs_rehash(UserStore(path).load()["sam"].password_hash, FAST)


# --- user management ----------------------------------------------------------------------------


def test_only_supervisors_manage_users(auth: AuthService) -> None:
    erin = auth.login("erin", PASSWORDS["erin"])
    with pytest.raises(PermissionDenied, match="'manage_users' needs the supervisor role"):
        auth.add_user(erin, "newbie", Role.OPERATOR, "newbie-password")
    with pytest.raises(PermissionDenied):
        auth.remove_user(None, "otto")


def test_user_administration(auth: AuthService, audit: list[AuditEvent]) -> None:
    boss = auth.login("sam", PASSWORDS["sam"])
    with pytest.raises(UserAdminError, match="exists already"):
        auth.add_user(boss, "otto", Role.OPERATOR, "other-password")
    with pytest.raises(UserAdminError, match="invalid user name"):
        auth.add_user(boss, "bad name", Role.OPERATOR, "other-password")
    with pytest.raises(PasswordPolicyError, match="user name"):
        auth.add_user(boss, "newbie12345", Role.OPERATOR, "NEWBIE12345")
    with pytest.raises(UserAdminError, match="no user 'ghost'"):
        auth.set_role(boss, "ghost", Role.OPERATOR)
    otto = auth.login("otto", PASSWORDS["otto"])
    auth.remove_user(boss, "otto")
    with pytest.raises(SessionExpired):
        auth.require(otto, Action.APPROVE)
    with pytest.raises(LoginFailed):
        auth.login("otto", PASSWORDS["otto"])
    auth.reset_password(boss, "vic", "brand-new-pass")
    assert auth.login("vic", "brand-new-pass").user == "vic"
    assert {"user_removed", "password_reset", "session_expired"} <= set(kinds(audit))


def test_the_last_supervisor_stays(auth: AuthService) -> None:
    boss = auth.login("sam", PASSWORDS["sam"])
    with pytest.raises(UserAdminError, match="your own account"):
        auth.remove_user(boss, "sam")
    with pytest.raises(UserAdminError, match="last supervisor"):
        auth.set_role(boss, "sam", Role.ENGINEER)
    auth.set_role(boss, "erin", Role.SUPERVISOR)
    auth.set_role(boss, "sam", Role.ENGINEER)  # another supervisor exists now
    erin = auth.login("erin", PASSWORDS["erin"])
    auth.set_role(erin, "sam", Role.SUPERVISOR)
    auth.set_role(erin, "sam", Role.VIEWER)
    with pytest.raises(UserAdminError, match="last supervisor"):
        auth.set_role(erin, "erin", Role.OPERATOR)


def test_first_supervisor_only_once(auth: AuthService) -> None:
    with pytest.raises(UserAdminError, match="users exist already"):
        auth.create_first_supervisor("eve", "another-password")


def test_change_own_password(auth: AuthService, audit: list[AuditEvent]) -> None:
    s = auth.login("vic", PASSWORDS["vic"])
    with pytest.raises(LoginFailed, match="current password is wrong"):
        auth.change_password(s, "wrong-password", "a-new-password")
    with pytest.raises(PasswordPolicyError, match="must differ"):
        auth.change_password(s, PASSWORDS["vic"], PASSWORDS["vic"])
    auth.change_password(s, PASSWORDS["vic"], "a-new-password")
    assert auth.login("vic", "a-new-password").user == "vic"
    assert "password_changed" in kinds(audit)


# --- users file ---------------------------------------------------------------------------------


def test_users_file_is_private_and_holds_no_plain_passwords(
    auth: AuthService, tmp_path: Path
) -> None:
    path = tmp_path / "users.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    text = path.read_text()
    assert all(pw not in text for pw in PASSWORDS.values())
    doc = json.loads(text)
    assert [u["name"] for u in doc["users"]] == ["erin", "otto", "sam", "vic"]
    assert [p.name for p in tmp_path.iterdir()] == ["users.json"]  # no temporary files left


def test_users_file_round_trips(auth: AuthService, tmp_path: Path) -> None:
    reloaded = UserStore(tmp_path / "users.json").load()
    assert {n: u.role for n, u in reloaded.items()} == ROLES
    assert reloaded["otto"] == next(u for u in auth.users if u.name == "otto")


def test_a_failed_write_keeps_the_old_file(
    auth: AuthService, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "users.json"
    before = path.read_bytes()
    boss = auth.login("sam", PASSWORDS["sam"])

    def disk_full(src: object, dst: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("app.controllers.auth.os.replace", disk_full)
    with pytest.raises(UserStoreError, match=r"cannot write the users file.*No space left"):
        auth.add_user(boss, "newbie", Role.OPERATOR, "newbie-password")
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["users.json"]  # temporary file removed
    assert "newbie" not in {u.name for u in auth.users}


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        ("{not json", "malformed users file"),
        ('{"version": 9, "users": []}', "unsupported version 9"),
        ('{"version": 1, "users": [{"name": "a", "role": "king", "password": "x"}]}', "KING"),
        ('{"version": 1, "users": [{"name": "a", "role": "viewer", "password": "x"}]}', "hash"),
    ],
)
def test_malformed_users_files_are_reported(tmp_path: Path, content: str, problem: str) -> None:
    path = tmp_path / "users.json"
    path.write_text(content)
    with pytest.raises(UserStoreError, match=problem):
        UserStore(path).load()


def test_a_readable_users_file_is_warned_about(
    auth: AuthService, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "users.json"
    path.chmod(0o644)
    with caplog.at_level(logging.WARNING, logger="app.controllers.auth"):
        UserStore(path).load()
    assert "should be 0600" in caplog.text


def test_missing_file_means_no_users(tmp_path: Path, clock: Clock) -> None:
    auth = AuthService(UserStore(tmp_path / "none.json"), clock=clock, scrypt=FAST)
    assert not auth.has_users()
    with pytest.raises(LoginFailed):
        auth.login("anyone", "any-password")


def test_bad_settings_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="max_failed must be >= 1"):
        AuthService(UserStore(tmp_path / "u.json"), max_failed=0, scrypt=FAST)
