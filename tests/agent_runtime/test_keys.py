"""Signing keys, the trust store, manifest.sig and the ``intelwatt keys`` handlers."""

from __future__ import annotations

import argparse
import base64
import json
import stat
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from app.agent_runtime.errors import BadSignature, KeyFileError, MissingSignature, UnknownKey
from app.agent_runtime.keys import (
    PASSPHRASE_ENV,
    TrustStore,
    fingerprint,
    generate_key_pair,
    load_private_key,
    load_public_key,
    public_key_of,
    run_keys_cli,
    sign,
    trust_key,
    verify,
)

MANIFEST = b'{"version":"x"}'


def test_generated_pair_signs_and_verifies(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(PASSPHRASE_ENV, raising=False)
    pair = generate_key_pair(tmp_path / "keys", "site-release")
    assert pair.private_path.name == "site-release.key"
    assert stat.S_IMODE(pair.private_path.stat().st_mode) == 0o600
    assert not pair.encrypted
    private = load_private_key(pair.private_path)
    public = load_public_key(pair.public_path)
    assert public.name == "site-release"
    assert public.fingerprint == pair.fingerprint == fingerprint(private.public_key())
    store = TrustStore.load(tmp_path / "keys")
    assert verify(MANIFEST, sign(MANIFEST, private), store) == pair.fingerprint


def test_passphrase_from_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(PASSPHRASE_ENV, "correct horse")
    pair = generate_key_pair(tmp_path, "enc")
    assert pair.encrypted
    assert b"ENCRYPTED PRIVATE KEY" in pair.private_path.read_bytes()
    assert isinstance(load_private_key(pair.private_path), Ed25519PrivateKey)

    monkeypatch.setenv(PASSPHRASE_ENV, "wrong horse")
    with pytest.raises(KeyFileError, match="passphrase") as wrong:
        load_private_key(pair.private_path)
    assert "wrong horse" not in str(wrong.value)

    monkeypatch.delenv(PASSPHRASE_ENV)
    with pytest.raises(KeyFileError, match=f"encrypted; set the passphrase in \\${PASSPHRASE_ENV}"):
        load_private_key(pair.private_path)


def test_never_overwrites_a_key(tmp_path: Path) -> None:
    generate_key_pair(tmp_path, "dev")
    before = (tmp_path / "dev.key").read_bytes()
    with pytest.raises(KeyFileError, match="already exists"):
        generate_key_pair(tmp_path, "dev")
    assert (tmp_path / "dev.key").read_bytes() == before


@pytest.mark.parametrize("name", ["", "../evil", "a b", "-lead", "x" * 65])
def test_bad_key_names(tmp_path: Path, name: str) -> None:
    with pytest.raises(KeyFileError, match="key name"):
        generate_key_pair(tmp_path, name)


def test_private_key_errors_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(KeyFileError, match="not found"):
        load_private_key(tmp_path / "nope.key")
    junk = tmp_path / "junk.key"
    junk.write_text("hello")
    with pytest.raises(KeyFileError, match=r"junk\.key: not a readable PEM private key"):
        load_private_key(junk)


def _pub_text(tmp_path: Path) -> str:
    return generate_key_pair(tmp_path / "gen", "k").public_path.read_text()


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda t: t.replace("algorithm = ed25519", "algorithm = rsa"), "not supported"),
        (lambda t: t.replace("fingerprint = ", "fingerprint = 00"), "does not match the key"),
        (lambda t: t.replace("public_key = ", "public_key = !!"), "not valid base64"),
        (
            lambda t: "\n".join(x for x in t.splitlines() if not x.startswith("name")),
            "missing name",
        ),
        (lambda t: t + "comment = hi\n", "unknown field 'comment'"),
        (lambda t: t + "name = k\n", "field 'name' given twice"),
        (lambda t: t + "garbage\n", "expected 'field = value'"),
    ],
)
def test_malformed_public_key_files_are_named(
    tmp_path: Path, edit: Callable[[str], str], message: str
) -> None:
    store = tmp_path / "store"
    store.mkdir()
    (store / "good.pub").write_text(_pub_text(tmp_path))
    bad = store / "broken.pub"
    bad.write_text(edit(_pub_text(tmp_path / "b")))
    with pytest.raises(KeyFileError, match=message) as exc:
        TrustStore.load(store)
    assert "broken.pub" in str(exc.value)


def test_flipped_public_key_byte_is_caught_by_the_fingerprint(tmp_path: Path) -> None:
    text = _pub_text(tmp_path)
    line = next(x for x in text.splitlines() if x.startswith("public_key"))
    b64 = line.split("= ")[1]
    flipped = ("B" if b64[0] != "B" else "C") + b64[1:]
    path = tmp_path / "flip.pub"
    path.write_text(text.replace(b64, flipped))
    with pytest.raises(KeyFileError, match="does not match the key"):
        load_public_key(path)


def test_trust_store_ignores_other_files_and_needs_a_folder(tmp_path: Path) -> None:
    with pytest.raises(KeyFileError, match="not a folder"):
        TrustStore.load(tmp_path / "missing")
    (tmp_path / "README.md").write_text("the dev key is for development only")
    assert len(TrustStore.load(tmp_path)) == 0


def test_trust_copies_the_key_once(tmp_path: Path) -> None:
    pair = generate_key_pair(tmp_path / "keys", "release")
    store = tmp_path / "trust"
    key, added = trust_key(pair.public_path, store)
    assert added and (store / "release.pub").is_file()
    assert trust_key(pair.public_path, store) == (key, False)
    assert pair.fingerprint in TrustStore.load(store)

    other = generate_key_pair(tmp_path / "other", "release")
    with pytest.raises(KeyFileError, match="different key named 'release'"):
        trust_key(other.public_path, store)


def test_signature_failures_are_typed(signing_key: Ed25519PrivateKey) -> None:
    store = TrustStore([public_key_of(signing_key, "test")])
    sig = sign(MANIFEST, signing_key)
    assert verify(MANIFEST, sig, store) == fingerprint(signing_key.public_key())

    with pytest.raises(MissingSignature):
        verify(MANIFEST, None, store)
    with pytest.raises(MissingSignature):
        verify(MANIFEST, b"", store)

    stranger = Ed25519PrivateKey.generate()
    with pytest.raises(UnknownKey) as unknown:
        verify(MANIFEST, sign(MANIFEST, stranger), store)
    assert unknown.value.culprit == fingerprint(stranger.public_key())

    with pytest.raises(BadSignature, match="does not match"):
        verify(MANIFEST + b" ", sig, store)

    doc = json.loads(sig)
    raw = bytearray(base64.b64decode(doc["signature"]))
    raw[0] ^= 1
    doc["signature"] = base64.b64encode(bytes(raw)).decode()
    with pytest.raises(BadSignature, match="does not match"):
        verify(MANIFEST, json.dumps(doc).encode(), store)

    for junk in (b"\xff\xfe", b"[]", b'{"algorithm":"rsa","key":"00","signature":""}', b"x" * 5000):
        with pytest.raises(BadSignature, match="malformed"):
            verify(MANIFEST, junk, store)


def _ns(**kw: object) -> argparse.Namespace:
    return argparse.Namespace(**kw)


def test_cli_generate_and_trust(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(PASSPHRASE_ENV, raising=False)
    assert run_keys_cli(_ns(keys_command="generate", out=tmp_path / "k", name="dev")) == 0
    out = capsys.readouterr().out
    assert "NOT encrypted" in out and "dev.pub" in out
    fp = load_public_key(tmp_path / "k" / "dev.pub").fingerprint
    assert fp in out

    args = _ns(keys_command="trust", public_key=tmp_path / "k" / "dev.pub", store=tmp_path / "t")
    assert run_keys_cli(args) == 0
    assert "added to" in capsys.readouterr().out
    assert run_keys_cli(args) == 0
    assert "already in" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ({"keys_command": "generate", "name": "bad name"}, "key name"),
        ({"keys_command": "trust", "public_key": "missing.pub"}, "public key file not found"),
        ({"keys_command": "rotate"}, "unknown action 'rotate'"),
    ],
)
def test_cli_bad_input_is_one_line_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: dict[str, object], message: str
) -> None:
    ns = _ns(out=tmp_path, store=tmp_path / "store", **args)
    if "public_key" in args:
        ns.public_key = tmp_path / str(args["public_key"])
    assert run_keys_cli(ns) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


def test_shipped_development_key_matches_the_default_trust_store() -> None:
    root = Path(__file__).resolve().parents[2]
    store = TrustStore.load(root / "resources" / "trust")
    dev = load_private_key(root / "resources" / "keys" / "intelwatt-dev.key")
    assert verify(MANIFEST, sign(MANIFEST, dev), store) == fingerprint(dev.public_key())
    assert "intelwatt-dev" in [k.name for k in store]
