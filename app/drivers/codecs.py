"""Register <-> engineering value for Modbus: datatype, word order, byte swap, scale, offset.

Bytes inside a register are big-endian on the wire (the Modbus standard); ``word_order`` orders the
16-bit words of 32-bit values and ``byte_swap`` swaps the two bytes inside every register, which
covers the four layouts devices use: ABCD (big, no swap), CDAB (little, no swap), BADC (big, swap)
and DCBA (little, swap). Engineering value = raw * scale + offset.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Sequence
from typing import Literal

from app.plant.plc_map import REGISTER_WIDTH, Datatype, TagAddress

WordOrder = Literal["big", "little"]

_STRUCT: dict[str, str] = {"int16": "h", "uint16": "H", "int32": "i", "uint32": "I", "float32": "f"}
_INT_BOUNDS: dict[str, tuple[int, int]] = {
    "int16": (-(2**15), 2**15 - 1),
    "uint16": (0, 2**16 - 1),
    "int32": (-(2**31), 2**31 - 1),
    "uint32": (0, 2**32 - 1),
}
_FLOAT32_MAX = 3.4028234663852886e38


class CodecError(ValueError):
    """A value cannot be encoded into, or decoded from, the registers of a tag."""


def _swap_bytes(register: int) -> int:
    return ((register & 0xFF) << 8) | (register >> 8)


def _check_registers(registers: Sequence[int], datatype: Datatype) -> None:
    width = REGISTER_WIDTH[datatype]
    if len(registers) != width:
        raise CodecError(f"{datatype} needs {width} register(s), got {len(registers)}")
    for reg in registers:
        if not 0 <= reg <= 0xFFFF:
            raise CodecError(f"register value {reg!r} is not a 16-bit unsigned integer")


def decode_raw(
    registers: Sequence[int],
    datatype: Datatype,
    word_order: WordOrder = "big",
    byte_swap: bool = False,
) -> float:
    """Decode registers into the raw (unscaled) number.

    Raises:
        CodecError: Wrong number of registers or a register outside 0..65535.
    """
    _check_registers(registers, datatype)
    words = [_swap_bytes(r) if byte_swap else r for r in registers]
    if word_order == "little":
        words.reverse()
    payload = b"".join(w.to_bytes(2, "big") for w in words)
    return float(struct.unpack(f">{_STRUCT[datatype]}", payload)[0])


def encode_raw(
    raw: float,
    datatype: Datatype,
    word_order: WordOrder = "big",
    byte_swap: bool = False,
) -> list[int]:
    """Encode a raw (unscaled) number into registers.

    Integer types round to the nearest integer.

    Raises:
        CodecError: The value is NaN/inf for an integer type, or does not fit the datatype.
    """
    if datatype == "float32":
        if math.isfinite(raw) and abs(raw) > _FLOAT32_MAX:
            raise CodecError(f"{raw!r} does not fit float32")
        payload = struct.pack(">f", raw)
    else:
        if not math.isfinite(raw):
            raise CodecError(f"{raw!r} cannot be encoded as {datatype}")
        number = round(raw)
        low, high = _INT_BOUNDS[datatype]
        if not low <= number <= high:
            raise CodecError(f"{raw!r} does not fit {datatype} [{low}, {high}]")
        payload = struct.pack(f">{_STRUCT[datatype]}", number)
    words = [int.from_bytes(payload[i : i + 2], "big") for i in range(0, len(payload), 2)]
    if word_order == "little":
        words.reverse()
    return [_swap_bytes(w) if byte_swap else w for w in words]


def decode(registers: Sequence[int], address: TagAddress) -> float:
    """Registers of ``address`` -> engineering value.

    Raises:
        CodecError: The registers do not match the tag's datatype (message names the tag).
    """
    try:
        raw = decode_raw(registers, address.datatype, address.word_order, address.byte_swap)
    except CodecError as exc:
        raise CodecError(f"tag {address.tag!r}: {exc}") from None
    return raw * address.scale + address.offset


def encode(value: float, address: TagAddress) -> list[int]:
    """Engineering value -> registers of ``address``.

    Raises:
        CodecError: The value is not representable in the tag's datatype (message names the tag).
    """
    raw = (value - address.offset) / address.scale
    try:
        return encode_raw(raw, address.datatype, address.word_order, address.byte_swap)
    except CodecError as exc:
        raise CodecError(f"tag {address.tag!r}: value {value!r}: {exc}") from None


def resolution(address: TagAddress, value: float) -> float:
    """Smallest engineering-unit step the tag's encoding can represent near ``value``.

    Used as the readback tolerance: a value read back may differ from the one written by at most
    one quantisation step.
    """
    if address.datatype == "float32":
        raw = (value - address.offset) / address.scale
        step = math.ulp(float(struct.unpack(">f", struct.pack(">f", raw))[0])) * 2**29
        return abs(step * address.scale)
    return abs(address.scale)


__all__ = ["CodecError", "decode", "decode_raw", "encode", "encode_raw", "resolution"]
