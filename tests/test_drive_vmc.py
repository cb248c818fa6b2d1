"""Strict OSC decoder (against python-osc as an independent encoder) and the VMC state machine."""
import math
import struct

import pytest
from pythonosc.osc_bundle_builder import IMMEDIATELY, OscBundleBuilder
from pythonosc.osc_message import OscMessage
from pythonosc.osc_message_builder import OscMessageBuilder

from kyara.drive.arkit import arkit_to_pose_values
from kyara.drive.osc import MAX_BUNDLE_DEPTH, parse_osc_packet
from kyara.drive.source import ProtocolError
from kyara.drive.vmc import VmcState, unity_quaternion_to_euler_deg
from senders import osc_message, unity_quaternion, vmc_frame


def test_osc_types_roundtrip_python_osc():
    b = OscMessageBuilder(address="/a/b")
    for value, tag in ((7, "i"), (-2, "i"), (1.5, "f"), ("héllo", "s"), (b"\x00\x01\x02", "b"), (True, "T"), (False, "F"),
                       ("", "s")):
        b.add_arg(value, tag)
    (msg,) = parse_osc_packet(b.build().dgram)
    assert msg.address == "/a/b"
    assert msg.args == (7, -2, 1.5, "héllo", b"\x00\x01\x02", True, False, "")


def test_osc_empty_blob_and_string():
    (msg,) = parse_osc_packet(b"/ab\x00" + b",bs\x00" + b"\x00" * 4 + b"\x00" * 4)  # blob size 0, then ""
    assert msg.args == (b"", "")


def test_osc_nested_bundles_flatten_in_order():
    inner = OscBundleBuilder(IMMEDIATELY)
    inner.add_content(OscMessageBuilder(address="/two").build())
    outer = OscBundleBuilder(IMMEDIATELY)
    outer.add_content(OscMessageBuilder(address="/one").build())
    outer.add_content(inner.build())
    outer.add_content(OscMessageBuilder(address="/three").build())
    assert [m.address for m in parse_osc_packet(outer.build().dgram)] == ["/one", "/two", "/three"]


def _nested(depth):
    pkt = osc_message("/x")
    for _ in range(depth):
        pkt = b"#bundle\x00" + b"\x00" * 7 + b"\x01" + struct.pack(">i", len(pkt)) + pkt
    return pkt


@pytest.mark.parametrize("packet,why", [
    (b"", "empty"),
    (b"/ab", "not multiple of 4"),
    (b"/abc\x00\x00\x00\x00", "missing type tags"),
    (b"/ab\x00,f\x00\x00", "truncated float"),
    (b"/ab\x00,d\x00\x00" + b"\x00" * 8, "unsupported double"),
    (b"/ab\x00,s\x00\x00abcd", "string without NUL"),
    (b"/ab\x00i\x00\x00\x00\x00\x00\x00\x01", "type tags without comma"),
    (b"/ab\x00,b\x00\x00\x7f\xff\xff\xff", "blob size out of bounds"),
    (b"/ab\x00,b\x00\x00\xff\xff\xff\xfc", "negative blob size"),
    (b"/ab\x00,\x00\x00\x00\x00\x00\x00\x00", "trailing bytes"),
    (b"/a\x00x,\x00\x00\x00", "non-NUL padding"),
    (b"xyz\x00,\x00\x00\x00", "address without slash"),
    (b"/\xff\xfe\x00,\x00\x00\x00", "address not UTF-8"),
    (b"#bundle\x00\x00\x00\x00\x00\x00\x00\x00\x01\x00\x00\x00\x40/ab\x00", "element size past end"),
    (b"#bundle\x00\x00\x00", "truncated time tag"),
])
def test_osc_rejects_malformed(packet, why):
    with pytest.raises(ProtocolError):
        parse_osc_packet(packet)


def test_osc_depth_limit_and_type():
    assert len(parse_osc_packet(_nested(MAX_BUNDLE_DEPTH))) == 1
    with pytest.raises(ProtocolError, match="nested"):
        parse_osc_packet(_nested(MAX_BUNDLE_DEPTH + 1))
    with pytest.raises(ProtocolError):
        parse_osc_packet("not bytes")


@pytest.mark.parametrize("x,y,z", [(10, 0, 0), (0, 25, 0), (0, 0, -12), (8, -20, 5), (-30, 60, 20)])
def test_unity_euler_roundtrip(x, y, z):
    ex, ey, ez = unity_quaternion_to_euler_deg(unity_quaternion(x, y, z))
    assert (ex, ey, ez) == pytest.approx((x, y, z), abs=1e-6)


def test_blend_accumulate_then_apply():
    st = VmcState()
    assert st.feed(osc_message("/VMC/Ext/Blend/Val", "A", 1.0)) is None
    assert st.feed(osc_message("/VMC/Ext/Blend/Val", "Blink_L", 1.0)) is None
    frame = st.feed(osc_message("/VMC/Ext/Blend/Apply"), now=5.0)
    assert frame is not None and frame.timestamp == 5.0
    assert frame.blendshapes["eyeBlinkLeft"] == 1.0 and "eyeBlinkRight" not in frame.blendshapes
    v = arkit_to_pose_values(frame)
    assert v["mouth_aaa"] == 1.0 and v["eye_wink_left"] == 1.0 and v["eye_wink_right"] == 0.0
    # Values persist across Apply until changed.
    frame = st.feed(vmc_frame({"Blink_L": 0.0, "Joy": 0.5}))
    v = arkit_to_pose_values(frame)
    assert v["mouth_aaa"] == 1.0 and v["eye_wink_left"] == 0.0 and v["eye_happy_wink_left"] == 0.5


def test_vrm1_and_perfect_sync_names():
    st = VmcState()
    frame = st.feed(vmc_frame({"ih": 0.8, "blinkRight": 1.0, "JawOpen": 0.5, "mouthSmileLeft": 0.3, "Custom_X": 1.0,
                               "a": 1.0}))
    assert frame.direct["mouth_iii"] == pytest.approx(0.8)
    assert frame.blendshapes == pytest.approx({"eyeBlinkRight": 1.0, "jawOpen": 0.5, "mouthSmileLeft": 0.3})
    assert st.unknown_blend_names == 2  # "Custom_X" and lower-case "a" (names are case-sensitive)


def test_head_bone_angles():
    st = VmcState()
    # Avatar turns to its own right by 10° (Unity +y) → head_y = +1; looks down 15° (Unity +x) → head_x = -1.
    v = arkit_to_pose_values(st.feed(vmc_frame({}, head_quat=unity_quaternion(y_deg=10.0))))
    assert v["head_y"] == pytest.approx(1.0) and v["head_x"] == pytest.approx(0.0, abs=1e-9)
    v = arkit_to_pose_values(st.feed(vmc_frame({}, head_quat=unity_quaternion(x_deg=15.0))))
    assert v["head_x"] == pytest.approx(-1.0)
    # Unity +z rolls the head towards the avatar's own left; ARKit roll is the opposite sign.
    v = arkit_to_pose_values(st.feed(vmc_frame({}, head_quat=unity_quaternion(z_deg=7.5))))
    assert v["neck_z"] == pytest.approx(-0.5)
    # Neck and Head rotations compose.
    f = st.feed(vmc_frame({}, head_quat=unity_quaternion(y_deg=3.0), neck_quat=unity_quaternion(y_deg=2.0)))
    assert f.head_yaw_deg == pytest.approx(-5.0)


def test_bones_only_sender_gets_frames():
    st = VmcState()
    f = st.feed(vmc_frame(None, head_quat=unity_quaternion(y_deg=5.0), apply=False))
    assert f is not None and f.head_yaw_deg == pytest.approx(-5.0)


@pytest.mark.parametrize("bad", [
    osc_message("/VMC/Ext/Blend/Val", "A", float("nan")),
    osc_message("/VMC/Ext/Blend/Val", "A", float("inf")),
    osc_message("/VMC/Ext/Blend/Val", "A", 1e30),
    osc_message("/VMC/Ext/Blend/Val", "A", "high"),
    osc_message("/VMC/Ext/Blend/Val", 3, 1.0),
    osc_message("/VMC/Ext/Blend/Val", "A"),
    osc_message("/VMC/Ext/Bone/Pos", "Head", 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0),
    osc_message("/VMC/Ext/Bone/Pos", "Head", 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 5.0),
    osc_message("/VMC/Ext/Bone/Pos", "Head", 0.0, 0.0, 0.0, 0.0, math.nan, 0.0, 1.0),
    osc_message("/VMC/Ext/Bone/Pos", "Head", 1.0),
])
def test_bad_vmc_messages_raise_and_leave_state(bad):
    st = VmcState()
    st.feed(vmc_frame({"A": 0.5}))
    with pytest.raises(ProtocolError):
        st.feed(bad)
    # A malformed bundle changes nothing, not even the messages before the bad one.
    bundle = OscBundleBuilder(IMMEDIATELY)
    bundle.add_content(_val("A", 0.9))
    bundle.add_content(OscMessage(bad))
    bundle.add_content(OscMessageBuilder(address="/VMC/Ext/Blend/Apply").build())
    with pytest.raises(ProtocolError):
        st.feed(bundle.build().dgram)
    assert st.frame().direct["mouth_aaa"] == pytest.approx(0.5)


def _val(name, v):
    m = OscMessageBuilder(address="/VMC/Ext/Blend/Val")
    m.add_arg(name)
    m.add_arg(v, "f")
    return m.build()


def test_unknown_addresses_and_bones_ignored():
    st = VmcState()
    assert st.feed(osc_message("/VMC/Ext/Root/Pos", "root", 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0)) is None
    assert st.feed(osc_message("/VMC/Ext/Bone/Pos", "LeftHand", 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0)) is None
    assert st.feed(osc_message("/something/else", 1, 2.0, "x")) is None
