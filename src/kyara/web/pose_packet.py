"""Pose packets for browser render mode (issue 14): instead of a picture, the live server sends the
mixed pose and the page renders it (server/static/render/pose_packet.js decodes the same bytes).

192 bytes, little-endian: b"KP", uint8 version (1), uint8 0, uint32 seq (frame number), uint32 inputs
applied (as api.FrameHeader's), then the 45 pose values as float32 in kyara.pose order.
"""
from __future__ import annotations

import struct

import numpy as np

from kyara.pose import NUM_PARAMETERS

MAGIC = b"KP"
VERSION = 1
HEADER = struct.Struct("<2sBBII")
PACKET_BYTES = HEADER.size + 4 * NUM_PARAMETERS      # 192


class PosePacketError(ValueError):
    """A pose packet is malformed (wrong size, magic, version or a non-finite value)."""


def encode_pose_packet(seq: int, inputs: int, pose: np.ndarray) -> bytes:
    """(frame number, inputs applied, (45,) pose values) → 192 bytes."""
    values = np.asarray(pose, dtype="<f4").reshape(-1)
    if values.size != NUM_PARAMETERS or not np.isfinite(values).all():
        raise PosePacketError(f"a pose packet needs {NUM_PARAMETERS} finite values, got {values.size}")
    return HEADER.pack(MAGIC, VERSION, 0, seq & 0xFFFFFFFF, inputs & 0xFFFFFFFF) + values.tobytes()


def decode_pose_packet(data: bytes) -> tuple[int, int, np.ndarray]:
    """192 bytes → (seq, inputs, (45,) float32 pose); PosePacketError when malformed."""
    if len(data) != PACKET_BYTES:
        raise PosePacketError(f"a pose packet is {PACKET_BYTES} bytes, got {len(data)}")
    magic, version, _, seq, inputs = HEADER.unpack_from(data)
    if magic != MAGIC or version != VERSION:
        raise PosePacketError(f"not a version-{VERSION} pose packet (magic {magic!r}, version {version})")
    pose = np.frombuffer(data, dtype="<f4", count=NUM_PARAMETERS, offset=HEADER.size).astype(np.float32)
    if not np.isfinite(pose).all():
        raise PosePacketError("pose packet holds a non-finite value")
    return seq, inputs, pose
