"""Secret references resolve from the environment or the keyring, and never leak the value."""

from __future__ import annotations

import sys
import types

import pytest

from app.secrets import SecretError, resolve_secret


def test_env_reference(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("INTELWATT_TEST_SECRET", "s3cr3t")
    assert resolve_secret("env:INTELWATT_TEST_SECRET") == "s3cr3t"


def test_missing_env_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("INTELWATT_TEST_SECRET", raising=False)
    with pytest.raises(SecretError, match="INTELWATT_TEST_SECRET"):
        resolve_secret("env:INTELWATT_TEST_SECRET")


@pytest.mark.parametrize(
    "ref", ["plain-password", "env:", "vault:x/y", "keyring:service", "keyring:a/b/c"]
)
def test_malformed_references(ref: str) -> None:
    with pytest.raises(SecretError, match="secret reference"):
        resolve_secret(ref)


def test_keyring_missing_package_gives_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "keyring", None)
    with pytest.raises(SecretError, match="'keyring' package is not installed"):
        resolve_secret("keyring:intelwatt/console")


def test_keyring_lookup_and_missing_entry(monkeypatch: pytest.MonkeyPatch) -> None:
    store = {("intelwatt", "console"): "pw-from-keyring"}
    fake = types.ModuleType("keyring")
    fake.get_password = lambda service, user: store.get((service, user))  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "keyring", fake)
    assert resolve_secret("keyring:intelwatt/console") == "pw-from-keyring"
    with pytest.raises(SecretError, match="no entry") as info:
        resolve_secret("keyring:intelwatt/other")
    assert "pw-from-keyring" not in str(info.value)
