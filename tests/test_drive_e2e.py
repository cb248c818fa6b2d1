"""End to end over 127.0.0.1 UDP: independent senders (tests/senders.py) → receivers → PoseMixer → Pose."""
import time

import pytest

from kyara.drive.idle import IdleMotion
from kyara.drive.ifacialmocap import IFacialMocapReceiver
from kyara.drive.mixer import PoseMixer
from kyara.drive.vmc import VmcReceiver
from senders import UdpSender, ifacialmocap_packet, unity_quaternion, vmc_frame


def _wait_ok(rx, n, timeout=3.0):
    end = time.monotonic() + timeout
    while rx.stats()["packets_ok"] < n and time.monotonic() < end:
        time.sleep(0.002)
    assert rx.stats()["packets_ok"] >= n, rx.stats()


@pytest.fixture
def mixer():
    return PoseMixer(idle=IdleMotion(seed=0))


def test_ifacialmocap_end_to_end(mixer):
    rx = IFacialMocapReceiver(port=0)
    rx.start()
    tx = UdpSender(rx.port)
    try:
        mixer.add_source(rx)
        rest = mixer.mix(time.monotonic())
        assert rest["mouth_aaa"] == 0.0
        # jawOpen with the lower lip following, as ARKit reports an "aaa"; head turned 10° to the
        # person's left (+yaw) → head_y = -1 per the official converter; left eye closed.
        tx.send(ifacialmocap_packet({"jawOpen": 0.6, "mouthLowerDownLeft": 0.5, "mouthLowerDownRight": 0.5,
                                     "eyeBlinkLeft": 1.0}, head_deg=(0.0, 10.0, 0.0)))
        _wait_ok(rx, 1)
        p = mixer.mix(time.monotonic())
        assert p["mouth_aaa"] > 0.5
        assert p["head_y"] == pytest.approx(-1.0) and p["body_y"] == pytest.approx(-1.0)
        assert p["eye_wink_left"] == pytest.approx(1.0) and p["eye_wink_right"] < 0.5
        assert [(n, live) for n, _, live in mixer.sources()] == [("ifacialmocap", True)]
        # v1 spelling ('-') from an older app works too.
        ys = []
        for i in range(20):  # ~60 fps stream; the one-euro filter converges within a few frames
            tx.send(ifacialmocap_packet({}, head_deg=(0.0, -10.0, 0.0), version=1))
            _wait_ok(rx, 2 + i)
            ys.append(mixer.mix(time.monotonic())["head_y"])
            time.sleep(1 / 60)
        assert -1.0 < ys[0] < ys[5] < ys[-1] and ys[-1] > 0.9
    finally:
        tx.close()
        rx.stop()


def test_vmc_end_to_end(mixer):
    rx = VmcReceiver(port=0)
    rx.start()
    tx = UdpSender(rx.port)
    try:
        mixer.add_source(rx)
        tx.send(vmc_frame({"A": 0.9, "Blink_R": 1.0}, head_quat=unity_quaternion(y_deg=10.0)))
        _wait_ok(rx, 1)
        p = mixer.mix(time.monotonic())
        assert p["mouth_aaa"] == pytest.approx(0.9, abs=1e-6)
        assert p["head_y"] == pytest.approx(1.0)
        assert p["eye_wink_right"] == pytest.approx(1.0) and p["eye_wink_left"] < 0.5
        # Perfect-sync sender (ARKit names).
        tx.send(vmc_frame({"A": 0.0, "Blink_R": 0.0, "jawOpen": 0.7, "mouthLowerDownLeft": 0.5,
                           "mouthLowerDownRight": 0.5}))
        _wait_ok(rx, 2)
        assert rx.latest(time.monotonic()).as_dict()["mouth_aaa"] > 0.5
    finally:
        tx.close()
        rx.stop()


def test_silent_tracker_fades_back_to_idle(mixer):
    rx = IFacialMocapReceiver(port=0)
    rx.start()
    tx = UdpSender(rx.port)
    try:
        mixer.add_source(rx)
        tx.send(ifacialmocap_packet({}, head_deg=(0.0, -10.0, 0.0)))
        _wait_ok(rx, 1)
        t = rx.latest_frame().timestamp
        assert mixer.mix(t)["head_y"] == pytest.approx(1.0)
        idle_only = IdleMotion(seed=0).sample(t + 2.0)["head_y"]
        assert mixer.mix(t + 2.0)["head_y"] == pytest.approx(idle_only, abs=1e-6)
    finally:
        tx.close()
        rx.stop()
