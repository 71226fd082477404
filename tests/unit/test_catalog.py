"""The tag catalogue: lookups, roles and the standard PLC address map."""

from __future__ import annotations

import pytest

from app.domain import TagRole
from app.plant.catalog import CATALOGS, COMMON_TAGS, ProcessCatalog, TagDef, catalog
from app.plant.plc_map import REGISTER_WIDTH, standard_map


@pytest.mark.parametrize("process", sorted(CATALOGS))
def test_every_catalogue_is_complete_and_consistent(process: str) -> None:
    cat = catalog(process)
    names = [t.name for t in cat]
    for common in COMMON_TAGS:
        assert common.name in names
    for tag in cat:
        assert tag.low < tag.high, tag.name
        if tag.role is TagRole.SETPOINT:
            assert tag.plc_low is not None and tag.plc_high is not None, tag.name
            assert tag.low <= tag.plc_low < tag.plc_high <= tag.high, tag.name
            assert tag.max_move is not None and tag.max_move > 0, tag.name
            assert tag.base_value is not None and tag.plc_low <= tag.base_value <= tag.plc_high, (
                tag.name
            )
        if tag.writable:
            assert tag.plc_low is not None and tag.plc_high is not None, tag.name


@pytest.mark.parametrize("process", sorted(CATALOGS))
def test_standard_map_has_no_overlaps_and_puts_writables_in_holding(process: str) -> None:
    cat = catalog(process)
    addresses = standard_map(cat)
    assert set(addresses) == {t.name for t in cat}
    used: set[tuple[str, int]] = set()
    for tag in cat:
        a = addresses[tag.name]
        assert (a.table == "holding") == tag.writable
        regs = {(a.table, r) for r in range(a.register, a.register + REGISTER_WIDTH[a.datatype])}
        assert not regs & used
        used |= regs
        assert a.node_id == f"s={process}.{tag.name}"


def test_lookup_errors_name_the_culprit() -> None:
    with pytest.raises(KeyError, match="process 'ro' has no tag 'nope'"):
        catalog("ro").tag("nope")
    with pytest.raises(KeyError, match="unknown process 'xx'"):
        catalog("xx")


def test_duplicate_tags_are_refused() -> None:
    tag = TagDef("a_bar", "bar", 0, 1, TagRole.OBSERVATION, "a")
    with pytest.raises(ValueError, match=r"more than once: \['a_bar'\]"):
        ProcessCatalog("x", "X", (tag, tag), 60.0)


def test_console_heartbeat_is_writable_and_plc_heartbeat_is_not() -> None:
    cat = catalog("ro")
    assert cat.tag("console_heartbeat").writable
    assert not cat.tag("plc_heartbeat").writable
    assert {t.name for t in cat.setpoints} == {"feed_pressure_sp_bar", "feed_flow_sp_m3h"}
