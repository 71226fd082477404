"""Golden tests for the Modbus register codecs (library-notes §2.4)."""

from __future__ import annotations

import math

import pytest
from pymodbus.client import AsyncModbusTcpClient
from pymodbus.simulator import DataType, SimData

from app.drivers.codecs import CodecError, decode, decode_raw, encode, encode_raw, resolution
from app.plant.plc_map import TagAddress


def _addr(**kw: object) -> TagAddress:
    return TagAddress(tag="x", node_id="s=x", table="holding", register=0, **kw)  # type: ignore[arg-type]


def test_issue_2616_example_little_word_order_is_huge_negative() -> None:
    value = decode_raw([0xDA77, 0xFB41], "float32", word_order="little")
    assert value == pytest.approx(-1.0065443e36, rel=1e-6)
    dt = AsyncModbusTcpClient.DATATYPE.FLOAT32
    expected = AsyncModbusTcpClient.convert_from_registers(
        [0xDA77, 0xFB41], dt, word_order="little"
    )
    assert value == pytest.approx(expected, rel=1e-7)


def test_issue_2616_example_byte_swapped_is_31_4335() -> None:
    value = decode_raw([0xDA77, 0xFB41], "float32", word_order="little", byte_swap=True)
    assert value == pytest.approx(31.4335, abs=1e-4)


@pytest.mark.parametrize(
    ("word_order", "byte_swap", "registers"),
    [
        ("big", False, [0x421A, 0x0000]),  # ABCD
        ("little", False, [0x0000, 0x421A]),  # CDAB
        ("big", True, [0x1A42, 0x0000]),  # BADC
        ("little", True, [0x0000, 0x1A42]),  # DCBA
    ],
)
def test_float32_layouts_of_38_5(word_order: str, byte_swap: bool, registers: list[int]) -> None:
    assert encode_raw(38.5, "float32", word_order, byte_swap) == registers  # type: ignore[arg-type]
    assert decode_raw(registers, "float32", word_order, byte_swap) == 38.5  # type: ignore[arg-type]


def test_float32_matches_pymodbus_simdata_encoding() -> None:
    values = [1.0, 2.0, 3.0, 38.5, -12.25]
    sim = SimData(0, values=values, datatype=DataType.FLOAT32).build_registers(False)
    assert sim[:6] == [0x3F80, 0, 0x4000, 0, 0x4040, 0]
    ours = [r for v in values for r in encode_raw(v, "float32")]
    assert ours == sim
    decoded = [decode_raw(sim[i : i + 2], "float32") for i in range(0, len(sim), 2)]
    assert decoded == values


@pytest.mark.parametrize(
    ("datatype", "sim_type", "value"),
    [
        ("int16", DataType.INT16, -1234),
        ("uint16", DataType.UINT16, 54321),
        ("int32", DataType.INT32, -123456789),
        ("uint32", DataType.UINT32, 3_000_000_000),
    ],
)
def test_integers_match_pymodbus(datatype: str, sim_type: DataType, value: int) -> None:
    sim = SimData(0, values=[value], datatype=sim_type).build_registers(False)
    assert encode_raw(value, datatype) == sim  # type: ignore[arg-type]
    assert decode_raw(sim, datatype) == value  # type: ignore[arg-type]
    client_type = getattr(AsyncModbusTcpClient.DATATYPE, datatype.upper())
    assert AsyncModbusTcpClient.convert_from_registers(sim, client_type) == value


def test_int32_little_word_order_matches_pymodbus_client() -> None:
    regs = encode_raw(-123456789, "int32", "little")
    dt = AsyncModbusTcpClient.DATATYPE.INT32
    assert AsyncModbusTcpClient.convert_from_registers(regs, dt, word_order="little") == -123456789


def test_scale_and_offset() -> None:
    address = _addr(datatype="int16", scale=0.1, offset=-50.0)
    assert encode(12.3, address) == encode_raw(623, "int16")
    assert decode(encode(12.3, address), address) == pytest.approx(12.3)
    assert resolution(address, 12.3) == pytest.approx(0.1)


def test_float32_resolution_covers_rounding() -> None:
    address = _addr()
    for value in (0.1, 12.345678, 39.99, 65535.0):
        back = decode(encode(value, address), address)
        assert abs(back - value) <= resolution(address, value)
        assert resolution(address, value) < 1e-5 * max(1.0, value)


def test_out_of_range_integer_names_the_tag() -> None:
    address = _addr(datatype="uint16", scale=1.0)
    with pytest.raises(CodecError, match=r"tag 'x'.*uint16"):
        encode(70000, address)
    with pytest.raises(CodecError, match="tag 'x'"):
        encode(-1, address)


def test_nan_cannot_be_an_integer_but_is_a_float32() -> None:
    with pytest.raises(CodecError, match="int16"):
        encode_raw(math.nan, "int16")
    assert math.isnan(decode_raw(encode_raw(math.nan, "float32"), "float32"))


def test_wrong_register_count_is_rejected() -> None:
    with pytest.raises(CodecError, match="2 register"):
        decode_raw([1], "float32")
    with pytest.raises(CodecError, match="16-bit"):
        decode_raw([70000], "uint16")
