"""iFacialMocap text protocol: strict parsing (v2 '&' and v1 '-'), receiver lifecycle, start string."""
import socket
import time

import pytest

from kyara.drive.ifacialmocap import START_STRING, IFacialMocapReceiver, parse_ifacialmocap_v2
from kyara.drive.source import ProtocolError
from senders import UdpSender, ifacialmocap_packet

# The example datagram from ifacialmocap.com/for-developer (v1 spelling, '-' separators).
DOC_V1 = (b"mouthSmile_R-0|eyeLookOut_L-0|mouthUpperUp_L-11|eyeWide_R-0|mouthClose-8|mouthPucker-4|mouthRollLower-9|"
          b"eyeBlink_R-7|eyeLookDown_L-17|cheekSquint_R-11|eyeBlink_L-7|tongueOut-0|jawRight-0|eyeLookIn_R-6|"
          b"cheekSquint_L-11|mouthDimple_L-10|mouthPress_L-4|eyeSquint_L-11|mouthRight-0|mouthShrugLower-9|"
          b"eyeLookUp_R-0|eyeLookOut_R-0|mouthPress_R-5|cheekPuff-2|jawForward-11|mouthLowerDown_L-9|mouthFrown_L-6|"
          b"mouthShrugUpper-26|browOuterUp_L-4|browInnerUp-20|mouthDimple_R-10|browDown_R-0|mouthUpperUp_R-10|"
          b"mouthRollUpper-8|mouthFunnel-12|mouthStretch_R-21|mouthFrown_R-13|eyeLookDown_R-17|jawOpen-12|jawLeft-0|"
          b"browDown_L-0|mouthSmile_L-0|noseSneer_R-18|mouthLowerDown_R-8|noseSneer_L-21|eyeWide_L-0|"
          b"mouthStretch_L-21|browOuterUp_R-4|eyeLookIn_L-4|eyeSquint_R-11|eyeLookUp_L-0|mouthLeft-1|"
          b"=head#-21.488958,-6.038993,-6.6019735,-0.030653415,-0.10287084,-0.6584072|"
          b"rightEye#6.0297494,2.4403017,0.25649446|leftEye#6.034903,-1.6660284,-0.17520553|")


def test_parse_documented_packet_v1_and_v2():
    for data in (DOC_V1, DOC_V1.replace(b"-", b"&").replace(b"#&", b"#-").replace(b",&", b",-")):
        f = parse_ifacialmocap_v2(data)
        assert len(f.blendshapes) == 52
        assert f.blendshapes["eyeBlinkLeft"] == pytest.approx(0.07)
        assert f.blendshapes["mouthShrugUpper"] == pytest.approx(0.26)
        assert (f.head_pitch_deg, f.head_yaw_deg, f.head_roll_deg) == pytest.approx((-21.488958, -6.038993, -6.6019735))


def test_sender_roundtrip_and_extras():
    f = parse_ifacialmocap_v2(ifacialmocap_packet({"jawOpen": 0.55, "eyeBlinkRight": 1.0}, head_deg=(1.5, -10.0, 3.0)))
    assert f.blendshapes == pytest.approx({"jawOpen": 0.55, "eyeBlinkRight": 1.0})
    assert (f.head_pitch_deg, f.head_yaw_deg, f.head_roll_deg) == pytest.approx((1.5, -10.0, 3.0))
    # Facemotion3d-style extras and the TCP suffix are tolerated; values are clamped to [0, 1].
    f = parse_ifacialmocap_v2(b"eyeBlinkLeft&130|FM_SAD&0|jawOpen&-3|=head#1,2,3___iFacialMocap")
    assert f.blendshapes == {"eyeBlinkLeft": 1.0, "jawOpen": 0.0} and f.head_roll_deg == 3.0


@pytest.mark.parametrize("data", [
    b"", b"   ", b"hello", b"|||", b"\xff\xfe\xfd", b"jawOpen&", b"jawOpen&abc", b"jawOpen&nan", b"jawOpen&inf",
    b"jawOpen&1e999", b"jawOpen&1e7", b"jawOpen&1&2", b"&5", b"=head#1,2", b"=head#1,2,3,4", b"=head#a,b,c",
    b"=head#nan,0,0", b"rightEye#1,2", b"FM_SAD&3", b"jaw Open&3", b"jawOpen&0x10", b"jawOpen&1_0",
    b"%%%#1,2,3", "jawOpen&\u0665".encode(), b"jawOpen&5|" * 1100,
])
def test_malformed_raises_protocol_error(data):
    with pytest.raises(ProtocolError):
        parse_ifacialmocap_v2(data)


def test_non_bytes_is_protocol_error():
    with pytest.raises(ProtocolError):
        parse_ifacialmocap_v2("jawOpen&5")


def _wait(pred, timeout=2.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(0.002)
    return pred()


def test_receiver_counts_and_stops_quickly():
    rx = IFacialMocapReceiver(port=0)
    assert rx.latest(time.monotonic()) is None and not rx.running
    rx.start()
    rx.start()  # idempotent
    tx = UdpSender(rx.port)
    try:
        tx.send(ifacialmocap_packet({"jawOpen": 0.5}))
        tx.send(b"garbage")
        assert _wait(lambda: rx.stats()["packets_ok"] == 1 and rx.stats()["packets_dropped"] == 1)
        s = rx.stats()
        assert s["last_packet_time"] is not None and "not name-value" in s["last_error"]
        now = time.monotonic()
        sample = rx.latest(now)
        assert sample is not None and sample.as_dict()["mouth_aaa"] > 0
        assert rx.latest(now + 10.0) is None  # stale
    finally:
        tx.close()
        t0 = time.monotonic()
        rx.stop()
        assert time.monotonic() - t0 < 0.5 and not rx.running
    rx.stop()  # idempotent


def test_start_string_sent_to_phone():
    phone = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    phone.bind(("127.0.0.1", 0))
    phone.settimeout(2.0)
    rx = IFacialMocapReceiver(port=0, phone_ip="127.0.0.1", phone_port=phone.getsockname()[1])
    rx.start()
    try:
        data, addr = phone.recvfrom(1024)
        assert data == START_STRING and addr[1] == rx.port  # sent from the listening socket
        # The "phone" answers to where the start string came from.
        phone.sendto(ifacialmocap_packet({"eyeBlinkLeft": 1.0}), addr)
        assert _wait(lambda: rx.stats()["packets_ok"] == 1)
        assert rx.latest(time.monotonic()).as_dict()["eye_wink_left"] == 1.0
    finally:
        rx.stop()
        phone.close()


def test_phone_on_lan_needs_listen_host():
    with pytest.raises(ValueError, match="--listen-host 0.0.0.0"):
        IFacialMocapReceiver(phone_ip="192.168.1.7")
    with pytest.raises(ValueError, match="IP address"):
        IFacialMocapReceiver(host="0.0.0.0", phone_ip="my-phone.local")
    IFacialMocapReceiver(host="0.0.0.0", phone_ip="192.168.1.7")  # fine (not started)


def test_port_in_use_is_clear_oserror():
    a = IFacialMocapReceiver(port=0)
    a.start()
    try:
        b = IFacialMocapReceiver(port=a.port)
        with pytest.raises(OSError, match=f"127.0.0.1:{a.port}.*another port"):
            b.start()
        assert not b.running
    finally:
        a.stop()


def test_calibrate_receiver():
    rx = IFacialMocapReceiver(port=0)
    assert rx.calibrate() is False  # no data yet
    now = time.monotonic()
    assert rx.handle_packet(ifacialmocap_packet({}, head_deg=(-20.0, 3.0, 0.0)), now)
    assert rx.latest(now).as_dict()["head_x"] == pytest.approx(1.0)
    assert rx.calibrate() is True
    assert rx.latest(now).as_dict()["head_x"] == pytest.approx(0.0, abs=1e-6)
    rx.handle_packet(ifacialmocap_packet({}, head_deg=(-20.0, 13.0, 0.0)), now + 0.1)
    assert rx.latest(now + 0.1).as_dict()["head_y"] == pytest.approx(-1.0)


def test_receiver_reports_each_accepted_packet_to_its_mixer():
    # Receivers tell the mixer (and through it the live engine) when input arrived, so the engine
    # can time tracker → frame latency; a dropped packet is no input.
    from kyara.drive.mixer import PoseMixer
    from kyara.drive.vmc import VmcReceiver
    from senders import vmc_frame

    mixer, heard = PoseMixer(), []
    mixer.on_input = lambda when, name: heard.append((name, when))
    ifm, vmc = IFacialMocapReceiver(port=0), VmcReceiver(port=0)
    mixer.add_source(ifm)
    mixer.add_source(vmc)
    assert ifm.handle_packet(ifacialmocap_packet({"jawOpen": 0.5}), 7.0)
    assert not ifm.handle_packet(b"garbage|", 7.1)
    assert vmc.handle_packet(vmc_frame({"A": 1.0}), 7.2)
    assert heard == [("ifacialmocap", 7.0), ("vmc", 7.2)]


def test_a_blink_between_two_reads_is_latched():
    # A renderer at 2 frames/s reads the receiver twice a second; the 60 fps packets of a blink in
    # between must still close the eyes in the next read, and only in that one.
    rx = IFacialMocapReceiver(port=0)
    rx.handle_packet(ifacialmocap_packet({}), 10.0)
    assert rx.latest(10.0).as_dict()["eye_wink_left"] == 0.0
    for k, blink in enumerate((0.3, 1.0, 1.0, 0.4, 0.0, 0.0)):
        rx.handle_packet(ifacialmocap_packet({"eyeBlinkLeft": blink, "eyeBlinkRight": blink / 2}), 10.1 + k / 60)
    latched = rx.latest(10.5).as_dict()
    assert latched["eye_wink_left"] == 1.0 and latched["eye_wink_right"] == pytest.approx(0.5 / 0.8)
    assert rx.latest(10.5).as_dict()["eye_wink_left"] == 0.0        # shown once: then the newest frame
    rx.handle_packet(ifacialmocap_packet({"eyeBlinkLeft": 0.5}), 11.0)
    assert rx.latest(11.0).as_dict()["eye_wink_left"] == pytest.approx(0.5 / 0.8)   # no peak: as sent
