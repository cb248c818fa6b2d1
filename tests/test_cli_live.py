"""`kyara live` flags and their wiring into the pose sources (kyara.server.app.build_sources / run_live).

No model is loaded and no server is started: run_live is replaced where the CLI is tested, and
build_sources is called directly with port 0 receivers.
"""
from __future__ import annotations

import re
import socket

import numpy as np
import pytest

pytest.importorskip("starlette")  # kyara.server.app needs the [live] extra

from kyara.cli import build_parser  # noqa: E402
from kyara.drive.source import PoseSource  # noqa: E402
from kyara.errors import KyaraError  # noqa: E402
from kyara.server import app as server_app  # noqa: E402


def live_help() -> str:
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    return sub.choices["live"].format_help()


def option_entries(help_text: str) -> dict[str, str]:
    """Option name → its help entry (wrapped lines joined), from the options section of --help."""
    entries: dict[str, str] = {}
    current = None
    for line in help_text.split("options:", 1)[1].splitlines():
        m = re.match(r"  (--?[\w-]+)", line)
        if m:
            current = m.group(1)
            entries[current] = line.strip()
        elif current and line.startswith("   "):
            entries[current] += " " + line.strip()
    return entries


def test_help_shows_no_default_for_on_off_flags():
    entries = option_entries(live_help())
    for flag in ("--no-browser", "--no-trackers", "--teacher", "--audio-loop", "--mic"):
        assert "(default:" not in entries[flag], entries[flag]
    text = " ".join(entries.values())
    assert "(default: True)" not in text and "(default: False)" not in text and "(default: None)" not in text
    assert "(default: 8765)" in entries["--port"] and "(default: 49983)" in entries["--ifacialmocap-port"]
    assert entries["--webcam"].startswith("--webcam [INDEX]")
    assert entries["--ifacialmocap-phone-ip"].startswith("--ifacialmocap-phone-ip IP")
    assert entries["--webcam-model"].startswith("--webcam-model FILE") and "--mic-device" in entries


def parse(*argv):
    return build_parser().parse_args(["live", *argv])


def test_webcam_flag_is_off_by_default_and_takes_an_optional_index():
    assert parse().webcam is None
    assert parse("--webcam").webcam == 0
    assert parse("--webcam", "2").webcam == 2
    assert parse("me.kyara", "--webcam").character == "me.kyara"


def test_webcam_flag_refuses_a_non_index_with_a_hint(capsys):
    with pytest.raises(SystemExit):
        parse("--webcam", "me.kyara")
    assert "put the CHARACTER file before --webcam" in capsys.readouterr().err


def test_cli_passes_every_live_option_to_run_live(monkeypatch):
    seen = {}
    monkeypatch.setattr(server_app, "run_live", lambda character, **kw: seen.update(kw, character=character))
    args = parse("me.kyara", "--webcam", "1", "--webcam-model", "f.task", "--ifacialmocap-phone-ip", "192.168.1.7",
                 "--listen-host", "0.0.0.0", "--audio", "a.wav", "--audio-loop", "--mic-device", "3", "--no-browser", "--encoders", "5")
    assert args.func(args) == 0
    assert seen["character"] == "me.kyara" and seen["webcam"] == 1 and seen["webcam_model"] == "f.task"
    assert seen["phone_ip"] == "192.168.1.7" and seen["listen_host"] == "0.0.0.0"
    assert seen["audio"] == "a.wav" and seen["audio_loop"] is True
    assert seen["mic"] is True and seen["mic_device"] == 3        # --mic-device implies --mic
    assert seen["open_browser"] is False and seen["trackers"] is True
    assert seen["encoders"] == 5
    assert parse("me.kyara").encoders == 3


def test_phone_ip_is_wired_into_the_ifacialmocap_receiver_and_sends_the_start_message():
    phone = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    phone.bind(("127.0.0.1", 0))
    phone.settimeout(5.0)
    sources = server_app.build_sources(0, None, "127.0.0.1", None, print_fn=lambda s: None, phone_ip="127.0.0.1")
    try:
        (rx,) = sources
        assert rx.phone_ip == "127.0.0.1" and rx.stats()["phone_ip"] == "127.0.0.1"
        # The CLI targets the phone's fixed port 49983; resend to our fake phone to see the exact bytes.
        rx.phone_port = phone.getsockname()[1]
        rx._send_start(rx._sock)
        data, addr = phone.recvfrom(1024)
        assert data == b"iFacialMocap_sahuasouryya9218sauhuiayeta91555dy3719|sendDataVersion=v2"
        assert addr[1] == rx.address[1]      # sent from the listening socket, so the phone answers there
    finally:
        for s in sources:
            s.stop()
        phone.close()


def test_phone_on_the_lan_needs_a_lan_listen_host():
    with pytest.raises(KyaraError, match="--ifacialmocap-phone-ip: .*--listen-host 0.0.0.0"):
        server_app.build_sources(0, None, "127.0.0.1", None, print_fn=lambda s: None, phone_ip="192.168.1.7")
    with pytest.raises(KyaraError, match="IP address"):
        server_app.build_sources(0, None, "127.0.0.1", None, print_fn=lambda s: None, phone_ip="my-phone")


def test_phone_ip_without_trackers_is_refused_before_loading_anything(monkeypatch):
    monkeypatch.setattr(server_app, "load_live_character", lambda *a, **k: pytest.fail("loaded a character"))
    with pytest.raises(KyaraError, match="drop --no-trackers"):
        server_app.run_live(None, trackers=False, phone_ip="127.0.0.1", open_browser=False)


def _vowel_wav(tmp_path):
    """0.3 s of silence, then 0.3 s of a synthetic "a" (120 Hz pulses through F1-F3 resonators)."""
    sf = pytest.importorskip("soundfile")
    from scipy.signal import lfilter

    rate, n = 16000, int(0.3 * 16000)
    y = np.zeros(n)
    y[(np.arange(0, 0.3, 1 / 120) * rate).astype(int)] = 1.0
    for f, bw in ((800, 80), (1250, 100), (2600, 150)):
        r = np.exp(-np.pi * bw / rate)
        y = lfilter([1 - r], [1, -2 * r * np.cos(2 * np.pi * f / rate), r * r], y)
    voice = np.concatenate([np.zeros(n), 0.3 * y / np.abs(y).max()])
    path = tmp_path / "voice.wav"
    sf.write(path, voice.astype(np.float32), rate)
    return path


@pytest.mark.parametrize("loop", [False, True])
def test_audio_file_drives_the_mouth_and_stops_or_loops(tmp_path, loop):
    path = _vowel_wav(tmp_path)
    (src,) = server_app.build_sources(None, None, "127.0.0.1", path, print_fn=lambda s: None, audio_loop=loop)
    try:
        t0 = src._t0
        assert src.loop is loop and t0 is not None

        def mouth(t):
            sample = src.latest(t0 + t)
            return None if sample is None else max(sample.values.values())

        assert mouth(0.1) == 0.0 and mouth(0.5) > 0.2          # silent, then open: the file drives the mouth
        if loop:
            assert mouth(0.6 + 0.1) == 0.0 and mouth(0.6 + 0.5) > 0.2   # second pass repeats it
            assert mouth(60.5) > 0.2
        else:
            assert mouth(0.6 + 0.2) == 0.0                      # ended: mouth closed ...
            assert mouth(0.6 + 1.0) is None                     # ... then handed back to other sources
    finally:
        src.stop()


class _Probe(PoseSource):
    name = "probe"

    def __init__(self):
        self.stopped = False

    def start(self):
        pass

    def stop(self):
        self.stopped = True

    def latest(self, now):
        return None


def test_a_source_that_fails_stops_the_ones_already_started(monkeypatch):
    from kyara.drive import audio

    def no_device(self):
        raise audio.AudioError("no audio input device found (sounddevice lists none)")

    monkeypatch.setattr(audio.MicrophoneSource, "start", no_device)
    started = []
    real_vmc = __import__("kyara.drive.vmc", fromlist=["VmcReceiver"]).VmcReceiver

    class TrackedVmc(real_vmc):
        def start(self):
            super().start()
            started.append(self)

    monkeypatch.setattr("kyara.drive.vmc.VmcReceiver", TrackedVmc)
    with pytest.raises(KyaraError, match="no audio input device"):
        server_app.build_sources(None, 0, "127.0.0.1", None, print_fn=lambda s: None, mic=True)
    assert len(started) == 1 and not started[0].running


def test_webcam_that_cannot_open_fails_with_the_camera_named():
    pytest.importorskip("cv2")
    pytest.importorskip("mediapipe")
    with pytest.raises(KyaraError, match="cannot open camera 61"):
        server_app.build_sources(None, None, "127.0.0.1", None, print_fn=lambda s: None, webcam=61)
