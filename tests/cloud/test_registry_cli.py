"""``intelwatt registry`` against Azurite, through run_registry_cli."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from app.cloud.registry import SyncRegistry
from app.cloud.registry_cli import run_registry_cli
from app.config import default_site_path
from tests.cloud.conftest import ACCOUNT_KEY, Azurite, Signer


def ns(command: str, **kw: object) -> argparse.Namespace:
    values: dict[str, object] = dict(
        registry_command=command, site=None, process="ro", container=None
    )
    values.update(kw)
    return argparse.Namespace(**values)


@pytest.fixture
def site(tmp_path: Path, container_name: str) -> Path:
    text = default_site_path().read_text()
    head, _, _ = text.partition("[cloud]")
    path = tmp_path / "site.toml"
    path.write_text(
        head + "[cloud]\nenabled = true\n"
        'connection_string = "env:INTELWATT_TEST_STORAGE"\n'
        f'container = "{container_name}"\n'
    )
    return path


def test_push_list_promote_rollback_pull_through_the_cli(
    azurite: Azurite,
    site: Path,
    signer: Signer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("INTELWATT_TEST_STORAGE", azurite.connection_string)
    for i in (1, 2):
        pkg = signer.package(tmp_path / f"p{i}", f"ro-cli.{i}")
        assert run_registry_cli(ns("push", site=site, package=pkg, alias="candidate")) == 0
        assert run_registry_cli(ns("promote", site=site, version=None)) == 0
    assert run_registry_cli(ns("rollback", site=site)) == 0
    assert run_registry_cli(ns("list", site=site)) == 0
    out = capsys.readouterr().out
    assert (
        "pushed ro-cli.1" in out
        and "promoted: production=ro-cli.2 candidate=- previous=ro-cli.1" in out
    )
    assert "2 version(s); production=ro-cli.1 candidate=- previous=ro-cli.2" in out
    assert run_registry_cli(ns("pull", site=site, version="ro-cli.2", out=tmp_path / "o")) == 0
    assert (tmp_path / "o" / "manifest.sig").is_file()
    assert ACCOUNT_KEY not in out + capsys.readouterr().err


def test_bad_input_is_one_line_and_exit_2(
    azurite: Azurite,
    site: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.delenv("INTELWATT_TEST_STORAGE", raising=False)
    monkeypatch.delenv("INTELWATT_STORAGE_CONNECTION_STRING", raising=False)
    assert run_registry_cli(ns("list", site=site)) == 2
    assert "INTELWATT_TEST_STORAGE" in capsys.readouterr().err
    assert run_registry_cli(ns("list")) == 2
    assert "INTELWATT_STORAGE_CONNECTION_STRING" in capsys.readouterr().err
    monkeypatch.setenv("INTELWATT_STORAGE_CONNECTION_STRING", azurite.connection_string)
    assert run_registry_cli(ns("push", package=tmp_path / "nope", alias=None)) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "not a folder" in err
    assert run_registry_cli(ns("frobnicate")) == 2
    assert run_registry_cli(ns("list", site=tmp_path / "missing.toml")) == 2


def test_registry_failures_exit_1(
    azurite: Azurite,
    container_name: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("INTELWATT_STORAGE_CONNECTION_STRING", azurite.connection_string)
    assert run_registry_cli(ns("rollback", container=container_name)) == 1
    assert "does not exist (push a version first" in capsys.readouterr().err
    with SyncRegistry(azurite.connection_string, container_name, "ro") as reg:
        reg.ensure_container()
    assert run_registry_cli(ns("rollback", container=container_name)) == 1
    assert "nothing to roll back" in capsys.readouterr().err
    assert (
        run_registry_cli(ns("pull", container=container_name, version="ro-x", out=tmp_path / "o"))
        == 1
    )
    assert "not in the registry" in capsys.readouterr().err
