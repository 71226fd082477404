"""Where each logical tag lives in a PLC: the standard address map and site overrides.

The simulated PLC serves exactly the standard map; a real site overrides what differs in its TOML
``[tags.<name>]`` tables. OPC UA: one namespace (``urn:intelwatt:plant`` by default), a string node id
``<process>.<tag>`` per tag. Modbus: read-only tags in input registers, writable tags in holding
registers, FLOAT32 big-endian (ABCD), two registers per tag, in catalogue order from address 0.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Literal

from app.config import TagAddressOverride
from app.plant.catalog import ProcessCatalog

RegisterTable = Literal["input", "holding"]
Datatype = Literal["int16", "uint16", "int32", "uint32", "float32"]

REGISTER_WIDTH: dict[str, int] = {"int16": 1, "uint16": 1, "int32": 2, "uint32": 2, "float32": 2}
"""Number of 16-bit registers each datatype occupies."""


@dataclass(frozen=True, slots=True)
class TagAddress:
    """The PLC address of one logical tag for both protocols.

    Attributes:
        tag: Logical tag name.
        node_id: OPC UA node id; ``s=...`` / ``i=...`` forms are in the site namespace.
        table: Modbus register table.
        register: First Modbus register (0-based protocol address).
        datatype: Register encoding.
        word_order: Order of the 16-bit words of 32-bit values.
        byte_swap: Swap the two bytes inside each register (BADC / DCBA devices).
        scale: Engineering value = raw * scale + offset.
        offset: See ``scale``.
        writable: True if the console writes this tag.
    """

    tag: str
    node_id: str
    table: RegisterTable
    register: int
    datatype: Datatype = "float32"
    word_order: Literal["big", "little"] = "big"
    byte_swap: bool = False
    scale: float = 1.0
    offset: float = 0.0
    writable: bool = False

    @property
    def width(self) -> int:
        """Number of registers this tag occupies."""
        return REGISTER_WIDTH[self.datatype]


def standard_map(catalog: ProcessCatalog) -> dict[str, TagAddress]:
    """The address map the simulated PLC serves for ``catalog``, by tag name."""
    addresses: dict[str, TagAddress] = {}
    next_register = {"input": 0, "holding": 0}
    for tag in catalog:
        table: RegisterTable = "holding" if tag.writable else "input"
        addresses[tag.name] = TagAddress(
            tag=tag.name,
            node_id=f"s={catalog.process}.{tag.name}",
            table=table,
            register=next_register[table],
            writable=tag.writable,
        )
        next_register[table] += REGISTER_WIDTH["float32"]
    return addresses


def site_map(
    catalog: ProcessCatalog, overrides: Mapping[str, TagAddressOverride]
) -> dict[str, TagAddress]:
    """The standard map with a site's ``[tags.*]`` overrides applied.

    Raises:
        ValueError: An override names a tag the process does not have, moves a writable tag out of
            the holding registers, or makes two tags overlap in one register table.
    """
    addresses = standard_map(catalog)
    unknown = sorted(set(overrides) - set(addresses))
    if unknown:
        raise ValueError(
            f"[tags] names tags that process {catalog.process!r} does not have: {', '.join(unknown)}"
        )
    for name, override in overrides.items():
        changes = {k: v for k, v in override.model_dump(by_alias=True).items() if v is not None}
        addresses[name] = replace(addresses[name], **changes)
        if addresses[name].writable and addresses[name].table != "holding":
            raise ValueError(f"[tags.{name}]: a writable tag must be in the holding registers")
    _check_overlaps(addresses)
    return addresses


def _check_overlaps(addresses: Mapping[str, TagAddress]) -> None:
    owner: dict[tuple[str, int], str] = {}
    for address in addresses.values():
        for register in range(address.register, address.register + address.width):
            key = (address.table, register)
            if key in owner:
                raise ValueError(
                    f"[tags.{address.tag}]: {address.table} register {register} is already used by "
                    f"{owner[key]!r}"
                )
            owner[key] = address.tag
