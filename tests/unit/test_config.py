"""Site configuration: the shipped demo file, and one test per kind of bad file."""

from __future__ import annotations

from pathlib import Path

import pytest

from app import config as cfg
from app.config import ConfigError, key_lines, load_site, parse_site
from app.plant.catalog import RO_CATALOG
from app.plant.plc_map import site_map, standard_map

DEMO = Path(__file__).resolve().parents[2] / "resources" / "sites" / "demo-ro.toml"

MINIMAL = """\
schema_version = 1

[site]
name = "t1"
process = "ro"

[plant]
protocol = "modbus"

[plant.modbus]
host = "10.0.0.5"
"""


def problems(text: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_site(text, "site.toml")
    return info.value.problems


def test_demo_site_is_valid_and_documents_every_key() -> None:
    site = load_site(DEMO)
    assert site.site.process == "ro"
    assert site.plant.protocol == "opcua"
    assert site.plant.opcua is not None and site.plant.modbus is not None
    assert set(site.limits) == {t.name for t in RO_CATALOG.setpoints}
    text = DEMO.read_text()
    documented = {path[-1] for path in key_lines(text)}
    for model in (
        cfg.SiteConfig,
        cfg.PlantConnection,
        cfg.ControlSettings,
        cfg.ModePolicy,
        cfg.AgentSettings,
        cfg.CloudSettings,
        cfg.RetrainSettings,
        cfg.OpcUaConnection,
        cfg.ModbusConnection,
        cfg.SiteInfo,
        cfg.TagLimits,
        cfg.OpcUaSecurity,
    ):
        for name, field in model.model_fields.items():
            key = field.alias or name
            assert key in documented or key in text, f"{model.__name__}.{key} is not documented"


def test_minimal_file_gets_defaults() -> None:
    site = parse_site(MINIMAL)
    assert site.plant.modbus is not None and site.plant.modbus.port == 502
    assert site.control.agent_period_s == 1800.0
    assert site.modes.initial == "advisory"
    assert not site.cloud.enabled


def test_models_are_frozen() -> None:
    site = parse_site(MINIMAL)
    with pytest.raises(ValueError, match="frozen"):
        site.site.name = "other"  # type: ignore[misc]


def test_not_toml() -> None:
    (only,) = problems("schema_version = 1\n[site\n")
    assert "not valid TOML" in only and "line 2" in only


def test_missing_schema_version() -> None:
    (only,) = problems(MINIMAL.replace("schema_version = 1\n", ""))
    assert only.startswith("schema_version: missing")


def test_newer_schema_version_is_refused() -> None:
    (only,) = problems(MINIMAL.replace("schema_version = 1", "schema_version = 99"))
    assert "version 99" in only and "update the console" in only


def test_unknown_key_names_key_and_line() -> None:
    (only,) = problems(MINIMAL + "stale_afetr_s = 3\n")
    assert only.startswith("plant.modbus.stale_afetr_s (line 12)")
    assert "unknown key" in only


def test_wrong_type_and_range_name_key_and_line() -> None:
    text = MINIMAL + 'port = 70000\ntimeout_s = "fast"\n'
    found = problems(text)
    assert any(p.startswith("plant.modbus.port (line 12)") for p in found), found
    assert any(p.startswith("plant.modbus.timeout_s (line 13)") for p in found), found


def test_every_problem_is_reported_at_once() -> None:
    text = MINIMAL.replace('process = "ro"', 'process = "nf"').replace(
        'name = "t1"', 'name = "bad name"'
    )
    found = problems(text)
    assert len(found) == 2
    assert found[0].startswith("site.name (line 4)")
    assert found[1].startswith("site.process (line 5)")


def test_protocol_without_its_table() -> None:
    (only,) = problems(MINIMAL.replace('protocol = "modbus"', 'protocol = "opcua"'))
    assert "[plant.opcua] table is missing" in only
    assert only.startswith("plant (line 7)")


def test_operator_limits_must_lie_inside_engineer_limits() -> None:
    text = MINIMAL + (
        "\n[limits.feed_pressure_sp_bar]\nengineer_low = 6\nengineer_high = 16\noperator_low = 5\n"
    )
    (only,) = problems(text)
    assert only.startswith("limits.feed_pressure_sp_bar (line 13)")
    assert "inside the engineer limits" in only


def test_plaintext_secret_is_refused() -> None:
    text = (
        MINIMAL
        + '\n[cloud]\nenabled = true\nconnection_string = "DefaultEndpointsProtocol=https;AccountKey=abc"\n'
    )
    (only,) = problems(text)
    assert only.startswith("cloud.connection_string (line 15)")
    assert "env:VARIABLE" in only
    assert "AccountKey" not in only


def test_secure_opcua_needs_certificates() -> None:
    text = MINIMAL.replace('protocol = "modbus"', 'protocol = "opcua"') + (
        '\n[plant.opcua]\nendpoint = "opc.tcp://plc:4840"\n\n[plant.opcua.security]\n'
        'policy = "Basic256Sha256"\nmode = "Sign"\n'
    )
    (only,) = problems(text)
    assert only.startswith("plant.opcua.security (line 16)")
    assert "certificate" in only


def test_bad_endpoint_url() -> None:
    text = MINIMAL.replace('protocol = "modbus"', 'protocol = "opcua"') + (
        '\n[plant.opcua]\nendpoint = "http://plc:4840"\n'
    )
    (only,) = problems(text)
    assert only.startswith("plant.opcua.endpoint (line 14)")


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="file not found"):
        load_site(tmp_path / "nope.toml")


def test_migration_chain(monkeypatch: pytest.MonkeyPatch) -> None:
    def v0_to_v1(doc: dict[str, object]) -> dict[str, object]:
        site = doc.pop("plant_site")
        return {**doc, "site": site}

    monkeypatch.setitem(cfg.MIGRATIONS, 0, v0_to_v1)
    old = MINIMAL.replace("schema_version = 1", "schema_version = 0").replace(
        "[site]", "[plant_site]"
    )
    assert parse_site(old).site.name == "t1"


def test_tag_overrides_apply_and_unknown_tags_are_named() -> None:
    text = MINIMAL + '\n[tags.feed_ph]\nregister = 300\ndatatype = "int16"\nscale = 0.01\n'
    site = parse_site(text)
    addresses = site_map(RO_CATALOG, site.tags)
    assert addresses["feed_ph"].register == 300
    assert addresses["feed_ph"].scale == pytest.approx(0.01)
    assert addresses["feed_flow_m3h"] == standard_map(RO_CATALOG)["feed_flow_m3h"]
    bad = parse_site(MINIMAL + "\n[tags.feed_salinity]\nregister = 3\n")
    with pytest.raises(ValueError, match="feed_salinity"):
        site_map(RO_CATALOG, bad.tags)


def test_overlapping_registers_are_refused() -> None:
    site = parse_site(MINIMAL + "\n[tags.feed_ph]\nregister = 0\n")
    with pytest.raises(ValueError, match="input register 0 is already used by 'feed_pressure_bar'"):
        site_map(RO_CATALOG, site.tags)
