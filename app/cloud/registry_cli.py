"""``intelwatt registry list|push|pull|promote|rollback``: the Blob model registry from a shell.

The storage connection string comes from the site file's ``[cloud] connection_string`` secret
reference (``--site``) or from ``INTELWATT_STORAGE_CONNECTION_STRING``; the container from the site
file (default ``intelwatt``) or ``--container``. Secrets are never printed. Bad input prints one line
on stderr and returns 2; a registry or storage failure prints one line and returns 1.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

from azure.core.exceptions import AzureError, ClientAuthenticationError

from app.cloud.errors import AliasConflict, PackageLayoutError, RegistryError
from app.cloud.registry import Aliases, SyncRegistry, aliases_summary
from app.cloud.storage import storage_connection_string
from app.config import CloudSettings, ConfigError, load_site
from app.secrets import SecretError

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
_SECRETISH = re.compile(r"(sig|AccountKey|SharedAccessSignature)=[^&;\s]+", re.IGNORECASE)
COMMANDS = ("list", "push", "pull", "promote", "rollback")


def _say(line: str, *, error: bool = False) -> None:
    (sys.stderr if error else sys.stdout).write(line + "\n")


def _settings(args: argparse.Namespace) -> tuple[CloudSettings | None, str]:
    site_path: Path | None = getattr(args, "site", None)
    cloud = load_site(site_path).cloud if site_path is not None else None
    container = getattr(args, "container", None) or (cloud.container if cloud else "intelwatt")
    return cloud, str(container)


def _aliases_line(aliases: Aliases) -> str:
    return aliases_summary(aliases.as_dict())


def _run(command: str, args: argparse.Namespace, reg: SyncRegistry) -> int:
    if command == "list":
        aliases = reg.read_aliases()
        versions = reg.list_versions()
        marks = {v: a for a, v in aliases.as_dict().items() if v is not None}
        for info in versions:
            when = info.pushed_at.isoformat(timespec="seconds") if info.pushed_at else "?"
            tag = f"  [{marks[info.version]}]" if info.version in marks else ""
            sha = (info.manifest_sha256 or "?")[:12]
            _say(f"{info.version:<24} {when}  {info.size_bytes:>10} B  {sha}{tag}")
        _say(f"{len(versions)} version(s); {_aliases_line(aliases)}")
        return EXIT_OK
    if command == "push":
        reg.ensure_container()
        info = reg.push(Path(args.package), alias=args.alias)
        alias = f", {args.alias} -> {info.version}" if args.alias else ""
        _say(f"pushed {info.version} ({len(info.files)} files, {info.size_bytes} B){alias}")
        return EXIT_OK
    if command == "pull":
        out = reg.pull(args.version, Path(args.out))
        _say(f"pulled {args.version} into {out} (transport hashes checked; verify before use)")
        return EXIT_OK
    if command == "promote":
        aliases = reg.promote(getattr(args, "version", None))
        _say(f"promoted: {_aliases_line(aliases)}")
        return EXIT_OK
    aliases = reg.rollback()
    _say(f"rolled back: {_aliases_line(aliases)}")
    return EXIT_OK


def run_registry_cli(args: argparse.Namespace) -> int:
    """Back ``intelwatt registry``.

    ``args.registry_command`` is one of ``list``, ``push`` (``package``, ``alias``), ``pull``
    (``version``, ``out``), ``promote`` (optional ``version``) or ``rollback``; every action takes
    ``site`` (Path or None), ``process`` and optionally ``container``.

    Returns:
        0 on success, 1 when the registry or storage refused or failed, 2 on bad input.
    """
    command = getattr(args, "registry_command", None)
    if command not in COMMANDS:
        _say(
            f"intelwatt registry: unknown action {command!r} (use {', '.join(COMMANDS)})",
            error=True,
        )
        return EXIT_USAGE
    prefix = f"intelwatt registry {command}"
    try:
        cloud, container = _settings(args)
        connection_string = storage_connection_string(cloud)
        with SyncRegistry(connection_string, container, str(args.process)) as reg:
            return _run(command, args, reg)
    except (ConfigError, SecretError, PackageLayoutError, FileExistsError) as exc:
        _say(f"{prefix}: {exc}", error=True)
        return EXIT_USAGE
    except ValueError as exc:
        _say(f"{prefix}: {exc}", error=True)
        return EXIT_USAGE
    except AliasConflict as exc:
        _say(f"{prefix}: {exc} (another writer changed the aliases; run it again)", error=True)
        return EXIT_FAILURE
    except RegistryError as exc:
        _say(f"{prefix}: {exc}", error=True)
        return EXIT_FAILURE
    except ClientAuthenticationError:
        _say(f"{prefix}: the storage account refused the credentials", error=True)
        return EXIT_FAILURE
    except AzureError as exc:
        first = _SECRETISH.sub(r"\1=***", str(exc).splitlines()[0] if str(exc) else "")
        _say(f"{prefix}: storage failure: {type(exc).__name__}: {first}", error=True)
        return EXIT_FAILURE


__all__ = ["run_registry_cli"]
