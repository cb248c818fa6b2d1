"""Pose packets (browser render mode): compact, exact and validated (kyara.web.pose_packet)."""
from __future__ import annotations

import numpy as np
import pytest

from kyara.pose import Pose
from kyara.web.pose_packet import PACKET_BYTES, PosePacketError, decode_pose_packet, encode_pose_packet


def test_round_trip_is_exact_and_compact():
    pose = Pose.preset("happy").vector.copy()
    pose[40] = -0.123456789
    data = encode_pose_packet(7, 3, pose)
    assert len(data) == PACKET_BYTES == 192 <= 256
    seq, inputs, back = decode_pose_packet(data)
    assert (seq, inputs) == (7, 3)
    np.testing.assert_array_equal(back, pose.astype(np.float32))


@pytest.mark.parametrize("data, message", [
    (b"KP\x01\x00" + bytes(100), "192 bytes"),
    (b"XX\x01\x00" + bytes(188), "not a version-1"),
    (b"KP\x02\x00" + bytes(188), "not a version-1"),
    (b"KP\x01\x00" + bytes(8) + np.full(45, np.nan, "<f4").tobytes(), "non-finite"),
])
def test_malformed_packets_are_refused(data, message):
    with pytest.raises(PosePacketError, match=message):
        decode_pose_packet(data)


def test_encode_refuses_wrong_length_and_nan():
    with pytest.raises(PosePacketError):
        encode_pose_packet(0, 0, np.zeros(44))
    with pytest.raises(PosePacketError):
        encode_pose_packet(0, 0, np.full(45, np.inf))
