"""A small, strict OSC 1.0 decoder for untrusted UDP input (messages and bundles).

Supported argument types: i (int32), f (float32), s (string), b (blob), T, F. Everything is
bounds-checked; anything else (missing type tags, unknown tags, bad padding, nested bundles deeper
than MAX_BUNDLE_DEPTH, more than MAX_MESSAGES messages) raises ProtocolError. Floats are returned
as decoded, NaN/inf included: judging values is the caller's job.
"""
from __future__ import annotations

import functools
import struct
from dataclasses import dataclass

from kyara.drive.source import ProtocolError

MAX_BUNDLE_DEPTH = 8
MAX_MESSAGES = 1024   # a full-body VMC frame is ~130 messages
MAX_ARGS = 256

_BUNDLE_TAG = b"#bundle\x00"
_I32 = struct.Struct(">i")


@dataclass(frozen=True)
class OscMessage:
    address: str
    args: tuple  # int | float | str | bytes | bool


def _read_string(data: bytes, pos: int, end: int, what: str) -> tuple[str, int]:
    """OSC-string at data[pos:end]: bytes, a NUL, NUL padding to a multiple of 4."""
    nul = data.find(b"\x00", pos, end)
    if nul < 0:
        raise ProtocolError(f"OSC {what}: missing NUL terminator")
    nxt = (nul - pos) // 4 * 4 + 4 + pos
    if nxt > end:
        raise ProtocolError(f"OSC {what}: padding runs past the end")
    if data.count(0, nul, nxt) != nxt - nul:
        raise ProtocolError(f"OSC {what}: non-NUL padding")
    try:
        text = data[pos:nul].decode("utf-8")
    except UnicodeDecodeError:
        raise ProtocolError(f"OSC {what}: not UTF-8") from None
    return text, nxt


@functools.lru_cache(maxsize=256)
def _plan(tags: str) -> tuple:
    """Type tags → steps: runs of fixed-size i/f become one struct unpack; s, b, T, F stay single."""
    steps: list = []
    run = ""
    for tag in tags:
        if tag in "if":
            run += tag
            continue
        if run:
            steps.append(struct.Struct(">" + run))
            run = ""
        if tag not in "sbTF":
            raise ProtocolError(f"unsupported OSC type tag {tag!r}")
        steps.append(tag)
    if run:
        steps.append(struct.Struct(">" + run))
    return tuple(steps)


def _parse_message(data: bytes, start: int, end: int) -> OscMessage:
    address, pos = _read_string(data, start, end, "address")
    if not address.startswith("/"):
        raise ProtocolError("OSC address must start with '/'")
    if pos >= end:
        raise ProtocolError(f"OSC message {address[:64]!r}: missing type tag string")
    tags, pos = _read_string(data, pos, end, "type tags")
    if not tags.startswith(","):
        raise ProtocolError(f"OSC message {address[:64]!r}: type tag string must start with ','")
    if len(tags) - 1 > MAX_ARGS:
        raise ProtocolError(f"OSC message {address[:64]!r}: more than {MAX_ARGS} arguments")
    try:
        steps = _plan(tags[1:])
    except ProtocolError as e:
        raise ProtocolError(f"OSC message {address[:64]!r}: {e}") from None
    args: list = []
    for step in steps:
        if step == "s":
            text, pos = _read_string(data, pos, end, "string argument")
            args.append(text)
        elif step == "b":
            if pos + 4 > end:
                raise ProtocolError(f"OSC message {address[:64]!r}: truncated blob size")
            size = _I32.unpack_from(data, pos)[0]
            pos += 4
            padded = (size + 3) // 4 * 4
            if size < 0 or pos + padded > end:
                raise ProtocolError(f"OSC message {address[:64]!r}: blob size {size} out of bounds")
            args.append(data[pos:pos + size])
            pos += padded
        elif step == "T":
            args.append(True)
        elif step == "F":
            args.append(False)
        else:
            if pos + step.size > end:
                raise ProtocolError(f"OSC message {address[:64]!r}: truncated numeric arguments")
            args.extend(step.unpack_from(data, pos))
            pos += step.size
    if pos != end:
        raise ProtocolError(f"OSC message {address[:64]!r}: {end - pos} trailing bytes")
    return OscMessage(address, tuple(args))


def _parse_element(data: bytes, start: int, end: int, depth: int, out: list[OscMessage]) -> None:
    if (end - start) % 4 or end <= start:
        raise ProtocolError(f"OSC packet size {end - start} is not a positive multiple of 4")
    if data.startswith(_BUNDLE_TAG, start):
        if depth >= MAX_BUNDLE_DEPTH:
            raise ProtocolError(f"OSC bundles nested deeper than {MAX_BUNDLE_DEPTH}")
        pos = start + 16  # "#bundle\0" + 8-byte time tag (ignored: we act on arrival)
        if pos > end:
            raise ProtocolError("OSC bundle: truncated time tag")
        while pos < end:
            if pos + 4 > end:
                raise ProtocolError("OSC bundle: truncated element size")
            size = _I32.unpack_from(data, pos)[0]
            pos += 4
            if size <= 0 or size % 4 or pos + size > end:
                raise ProtocolError(f"OSC bundle: element size {size} out of bounds")
            _parse_element(data, pos, pos + size, depth + 1, out)
            pos += size
    elif data[start:start + 1] == b"/":
        if len(out) >= MAX_MESSAGES:
            raise ProtocolError(f"OSC packet holds more than {MAX_MESSAGES} messages")
        out.append(_parse_message(data, start, end))
    else:
        raise ProtocolError("OSC packet is neither a message ('/') nor a bundle ('#bundle')")


def parse_osc_packet(data: bytes) -> list[OscMessage]:
    """All messages in one OSC packet (a message, or a bundle flattened in order)."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise ProtocolError(f"OSC packet must be bytes, got {type(data).__name__}")
    data = bytes(data)
    out: list[OscMessage] = []
    _parse_element(data, 0, len(data), 0, out)
    return out
