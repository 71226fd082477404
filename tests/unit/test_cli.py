"""The command line: every subcommand answers --help, and bad input gives one line and exit 2."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import pytest

from app.cli import build_parser, main

ROOT = Path(__file__).resolve().parents[2]


def _leaf_commands(
    parser: argparse.ArgumentParser, prefix: tuple[str, ...] = ()
) -> list[tuple[str, ...]]:
    found = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                found.append((*prefix, name))
                found.extend(_leaf_commands(child, (*prefix, name)))
    return found


COMMANDS = _leaf_commands(build_parser())


def test_conventions_subcommands_exist() -> None:
    top = {c[0] for c in COMMANDS}
    assert top == {
        "console",
        "headless",
        "plant",
        "train",
        "eval",
        "retrain",
        "registry",
        "audit",
        "keys",
    }
    assert {c[1] for c in COMMANDS if c[0] == "registry" and len(c) > 1} == {
        "list",
        "push",
        "pull",
        "promote",
        "rollback",
    }
    assert ("audit", "verify") in COMMANDS
    assert {("keys", "generate"), ("keys", "trust")} <= set(COMMANDS)


@pytest.mark.parametrize("command", [(), *COMMANDS], ids=lambda c: " ".join(c) or "intelwatt")
def test_every_command_answers_help(
    command: tuple[str, ...], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exc:
        main([*command, "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: intelwatt")


def test_installed_console_script_answers_help() -> None:
    script = Path(sys.executable).parent / "intelwatt"
    result = subprocess.run(
        [str(script), "--help"], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    assert "headless" in result.stdout


def test_main_py_is_the_console_command() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "main.py"), "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0
    assert "usage: intelwatt console" in result.stdout


def test_bad_option_value_is_one_line_and_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["plant", "--opcua", "localhost"])
    assert exc.value.code == 2
    assert "expected HOST:PORT" in capsys.readouterr().err


def test_console_check_accepts_the_demo_site(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["console", "--check"]) == 0
    assert "demo-ro.toml: OK" in capsys.readouterr().out


def test_console_check_reports_each_problem(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('schema_version = 1\n[site]\nname = "x"\nprocess = "nf"\n')
    assert main(["console", "--site", str(bad), "--check"]) == 2
    err = capsys.readouterr().err
    assert f"intelwatt console: {bad}: 2 problem(s)" in err
    assert "site.process (line 4)" in err
    assert "plant: Field required" in err
