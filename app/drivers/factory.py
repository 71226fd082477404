"""Build the configured PLC driver: switching protocol is a change in the site file only."""

from __future__ import annotations

from collections.abc import Callable, Mapping

from app.config import PlantConnection, SiteConfig, TagAddressOverride
from app.drivers.base import DriverConfigError, PlcDriver
from app.drivers.modbus import ModbusDriver
from app.drivers.opcua import OpcUaDriver
from app.plant.catalog import ProcessCatalog, catalog
from app.plant.plc_map import site_map
from app.secrets import resolve_secret


def build_driver(
    connection: PlantConnection,
    process_catalog: ProcessCatalog,
    overrides: Mapping[str, TagAddressOverride] | None = None,
    *,
    secret_resolver: Callable[[str], str] = resolve_secret,
) -> PlcDriver:
    """The driver for ``connection.protocol`` serving every tag of ``process_catalog``.

    Args:
        connection: The ``[plant]`` table of a site file.
        process_catalog: Tags of the site's process.
        overrides: The site's ``[tags.*]`` address overrides.
        secret_resolver: Turns secret references (OPC UA password) into values.

    Raises:
        DriverConfigError: The tag overrides are inconsistent (names the problem).
    """
    try:
        addresses = site_map(process_catalog, overrides or {})
    except ValueError as exc:
        raise DriverConfigError(str(exc)) from None
    definitions = process_catalog.tags
    if connection.protocol == "opcua":
        assert connection.opcua is not None  # guaranteed by PlantConnection validation
        return OpcUaDriver(
            connection.opcua, definitions, addresses, secret_resolver=secret_resolver
        )
    assert connection.modbus is not None
    return ModbusDriver(connection.modbus, definitions, addresses)


def driver_for_site(site: SiteConfig) -> PlcDriver:
    """The driver a site file describes."""
    return build_driver(site.plant, catalog(site.site.process), site.tags)


__all__ = ["build_driver", "driver_for_site"]
