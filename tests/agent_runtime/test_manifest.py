"""The manifest schema and its canonical JSON."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

import pytest
from pydantic import ValidationError

from app.agent_runtime.errors import ManifestInvalid
from app.agent_runtime.manifest import (
    NormalisationStats,
    TagSpec,
    app_version_tuple,
    build_manifest,
    canonical_json,
    check_package_path,
    manifest_bytes,
    parse_manifest,
)
from tests.agent_runtime.conftest import manifest_fields, obs_spec

FILES = {"policy.onnx": "a" * 64, "ensemble/member_00.onnx": "b" * 64, "report.md": "c" * 64}


def test_canonical_bytes_round_trip() -> None:
    manifest = build_manifest(manifest_fields(), FILES)
    raw = manifest_bytes(manifest)
    assert raw == canonical_json(json.loads(raw))
    assert b" " not in raw.replace(b"unit-test graphs", b"").replace(b"# ", b"")
    keys = list(json.loads(raw))
    assert keys == sorted(keys)
    assert "µS/cm".encode() in raw  # UTF-8, not \u escapes
    again = parse_manifest(raw)
    assert again == manifest
    assert manifest_bytes(again) == raw
    assert manifest.ensemble_files == ("ensemble/member_00.onnx",)
    assert manifest.action_tags == ("feed_pressure_sp_bar", "feed_flow_sp_m3h")


def test_pretty_printed_manifest_parses_to_the_same_content() -> None:
    manifest = build_manifest(manifest_fields(), FILES)
    pretty = json.dumps(json.loads(manifest_bytes(manifest)), indent=2).encode()
    assert parse_manifest(pretty) == manifest


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"tag": "feed_ph", "unit": "pH", "low": 9.0, "high": 9.0}, "low .* must be below high"),
        ({"tag": "feed_ph", "unit": "pH", "low": 1.0, "high": float("nan")}, "finite"),
        ({"tag": "Feed PH", "unit": "pH", "low": 1.0, "high": 2.0}, "pattern"),
    ],
)
def test_tag_spec_validation(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        TagSpec(**kwargs)


def test_field_rules() -> None:
    specs = obs_spec()
    with pytest.raises(ValidationError, match="observations list tags more than once: feed_ph"):
        manifest_fields(observations=(*specs[:-1], next(s for s in specs if s.tag == "feed_ph")))
    with pytest.raises(ValidationError, match="normalisation has 2 entries"):
        manifest_fields(
            normalisation=NormalisationStats(
                mean=(0.0, 1.0), std=(1.0, 1.0), train_low=(0.0, 0.0), train_high=(1.0, 1.0)
            )
        )
    with pytest.raises(ValidationError, match=r"std\[1\] must be > 0"):
        NormalisationStats(mean=(0.0, 1.0), std=(1.0, 0.0), train_low=(0, 0), train_high=(1, 1))
    with pytest.raises(ValidationError, match="time zone"):
        manifest_fields(created=datetime(2025, 1, 1))
    with pytest.raises(ValidationError, match=r"max_app 0.1 is older than min_app 0.2"):
        manifest_fields(min_app="0.2", max_app="0.1")
    with pytest.raises(ValidationError, match="schema_version 2 is not supported"):
        manifest_fields(schema_version=2)
    with pytest.raises(ValidationError, match=r"(?s)metrics.table.*finite number"):
        manifest_fields(metrics={"table": {"agent": float("inf")}})


@pytest.mark.parametrize(
    "path",
    [
        "../x",
        "/etc/passwd",
        "a/../b",
        ".hidden",
        "manifest.sig",
        "manifest.json",
        "a\\b",
        "model.pkl",
        "checkpoint.zip",
        "weights.pth",
        "other.onnx",
        "ensemble/deep/m.onnx",
        "a/b/c/d/e",
    ],
)
def test_unsafe_or_forbidden_paths(path: str) -> None:
    with pytest.raises(ValueError, match=r"path|never|pickle|ONNX"):
        check_package_path(path)
    with pytest.raises(ManifestInvalid, match="files"):
        build_manifest(manifest_fields(), {**FILES, path: "d" * 64})


def test_files_must_list_policy_and_use_lowercase_sha256() -> None:
    with pytest.raises(ManifestInvalid, match=r"files: must list policy.onnx"):
        build_manifest(manifest_fields(), {"report.md": "c" * 64})
    with pytest.raises(ManifestInvalid, match="not a lowercase sha256"):
        build_manifest(manifest_fields(), {"policy.onnx": "A" * 64})


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b"\xff", "not UTF-8"),
        (b"{", "not valid JSON"),
        (b"[1]", "top level must be a JSON object"),
        (b'{"version":"a","version":"b"}', "key.s. given more than once: version"),
        (b'{"x": NaN}', "NaN is not valid JSON"),
        (b'{"version":"a"}', "process: Field required"),
    ],
)
def test_parse_errors_name_the_problem(raw: bytes, message: str) -> None:
    with pytest.raises(ManifestInvalid, match=message) as exc:
        parse_manifest(raw)
    assert exc.value.culprit == "manifest.json"


def test_unknown_field_is_refused() -> None:
    doc = json.loads(manifest_bytes(build_manifest(manifest_fields(), FILES)))
    doc["pickle_loader"] = "please"
    with pytest.raises(ManifestInvalid, match="pickle_loader: Extra inputs are not permitted"):
        parse_manifest(canonical_json(doc))


@pytest.mark.parametrize(
    ("text", "expected"),
    [("1", (1, 0, 0)), ("0.1", (0, 1, 0)), ("2.3.4", (2, 3, 4)), ("0.3.0.dev1", (0, 3, 0))],
)
def test_app_version_tuple(text: str, expected: tuple[int, int, int]) -> None:
    assert app_version_tuple(text) == expected
