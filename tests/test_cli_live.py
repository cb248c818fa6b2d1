"""`kyara live` flags → ``LiveConfig`` (kyara.live.session) → pose sources and the served session.

No model is loaded: run_live is replaced where the CLI is tested, build_sources is called directly
with port 0 receivers, and the one run_live test serves a fake character on a free port.
"""
from __future__ import annotations

import dataclasses
import json
import re
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from kyara.cli import build_parser, main
from kyara.cli import live as cli_live
from kyara.drive.source import PoseSource
from kyara.errors import KyaraError
from kyara.live import session
from kyara.live.session import LiveConfig
from kyara.server import runner

ROOT = Path(__file__).resolve().parents[1]


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


def test_cli_builds_the_live_config_from_every_flag(monkeypatch):
    seen = []
    monkeypatch.setattr(runner, "run_live", lambda config: seen.append(config))
    args = parse("me.kyara", "--webcam", "1", "--webcam-model", "f.task", "--ifacialmocap-phone-ip", "192.168.1.7",
                 "--listen-host", "0.0.0.0", "--audio", "a.wav", "--audio-loop", "--mic-device", "3", "--no-browser",
                 "--encoders", "5", "--allow-origin", "http://localhost:3000", "--allow-origin", "https://x.example",
                 "--fps", "30", "--port", "0", "--vmc-port", "1234")
    assert args.func(args) == 0
    (config,) = seen
    assert config == LiveConfig(character="me.kyara", webcam=1, webcam_model="f.task", ifacialmocap_phone_ip="192.168.1.7",
                                listen_host="0.0.0.0", audio="a.wav", audio_loop=True, mic_device=3, open_browser=False,
                                encoders=5, allowed_origins=("http://localhost:3000", "https://x.example"), fps=30.0,
                                port=0, vmc_port=1234)
    assert config.uses_mic                                  # --mic-device implies --mic
    assert parse("--mic-device", "USB Mic").mic_device == "USB Mic"


def test_flags_map_one_to_one_onto_live_config_and_share_its_defaults():
    parser = build_parser()
    live = next(a for a in parser._actions if a.dest == "command").choices["live"]
    dests = {a.dest for a in live._actions if a.dest != "help"}
    fields = {f.name for f in dataclasses.fields(LiveConfig)}
    assert dests == fields - set(cli_live.NO_FLAG)
    defaults = cli_live.config_from_args(parse())
    assert defaults == LiveConfig()                     # every flag's default is the config's default
    from kyara.drive.ifacialmocap import IFACIALMOCAP_PORT
    from kyara.drive.vmc import VMC_MARIONETTE_PORT
    assert (defaults.ifacialmocap_port, defaults.vmc_port) == (IFACIALMOCAP_PORT, VMC_MARIONETTE_PORT)
    # the defaults are written once: in LiveConfig (the engine reads its fps/encoders from there too)
    literals = {"8765": 0, "49983": 0, "39539": 0}
    for path in ("src/kyara/cli/live.py", "src/kyara/server/app.py", "src/kyara/server/api.py", "src/kyara/live/engine.py"):
        text = (ROOT / path).read_text()
        for literal in literals:
            literals[literal] += len(re.findall(rf"\b{literal}\b", text))
    assert literals == {"8765": 0, "49983": 0, "39539": 0}, literals
    from kyara.live import LiveEngine
    import inspect
    params = inspect.signature(LiveEngine).parameters
    assert (params["fps"].default, params["encoders"].default) == (LiveConfig.fps, LiveConfig.encoders)


def test_phone_ip_is_wired_into_the_ifacialmocap_receiver_and_sends_the_start_message():
    phone = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    phone.bind(("127.0.0.1", 0))
    phone.settimeout(5.0)
    config = LiveConfig(ifacialmocap_port=0, vmc_port=0, ifacialmocap_phone_ip="127.0.0.1")
    sources = runner.build_sources(config, print_fn=lambda s: None)
    try:
        rx = next(s for s in sources if hasattr(s, "phone_ip"))
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
    for phone, message in (("192.168.1.7", "--ifacialmocap-phone-ip: .*--listen-host 0.0.0.0"), ("my-phone", "IP address")):
        config = LiveConfig(ifacialmocap_port=0, vmc_port=0, ifacialmocap_phone_ip=phone)
        with pytest.raises(KyaraError, match=message):
            runner.build_sources(config, print_fn=lambda s: None)


def test_phone_ip_without_trackers_is_refused_before_loading_anything(monkeypatch, capsys):
    monkeypatch.setattr(runner, "load_live_character", lambda *a, **k: pytest.fail("loaded a character"))
    assert main(["live", "--no-trackers", "--ifacialmocap-phone-ip", "127.0.0.1", "--no-browser"]) == 2
    assert "drop --no-trackers" in capsys.readouterr().err


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
    (src,) = runner.build_sources(LiveConfig(trackers=False, audio=str(path), audio_loop=loop), print_fn=lambda s: None)
    try:
        t0 = src._t0
        assert src.loop is loop and t0 is not None

        def mouth(t):
            sample = src.latest(t0 + t)
            return None if sample is None else max(sample.as_dict().values())

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
        runner.build_sources(LiveConfig(ifacialmocap_port=0, vmc_port=0, mic=True), print_fn=lambda s: None)
    assert len(started) == 1 and not started[0].running


def test_webcam_that_cannot_open_fails_with_the_camera_named():
    pytest.importorskip("cv2")
    pytest.importorskip("mediapipe")
    with pytest.raises(KyaraError, match="cannot open camera 61"):
        runner.build_sources(LiveConfig(trackers=False, webcam=61), print_fn=lambda s: None)


# -- issue 12.6: the live server's dependencies are core; a taken port fails at once ---------------
def test_live_server_imports_only_core_dependencies():
    """Every distribution whose modules the live stack imports must be required (transitively) by
    kyara's core dependencies; `kyara live` without the old [live] extra raised ModuleNotFoundError."""
    import importlib.metadata as md
    import tomllib

    code = ("import sys, kyara.cli.live, kyara.live.session, kyara.server.runner, kyara.server.app, kyara.server.api, uvicorn, "
            "uvicorn.protocols.websockets.auto, uvicorn.loops.auto, uvicorn.protocols.http.auto; "
            "print(sorted({m.split('.')[0] for m in sys.modules}))")
    modules = json.loads(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                                        cwd=ROOT).stdout.replace("'", '"'))
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    norm = lambda name: re.split(r"[<>=!~;\[ ]", name, maxsplit=1)[0].lower().replace("_", "-")
    core, todo = set(), [norm(d) for d in project["dependencies"]]
    while todo:  # the transitive closure of what the core dependencies install
        name = todo.pop()
        if name in core:
            continue
        core.add(name)
        try:
            requires = md.requires(name) or []
        except md.PackageNotFoundError:
            continue
        todo += [norm(r) for r in requires if "extra ==" not in r]
    providers = md.packages_distributions()
    missing = {(m, d) for m in modules for d in providers.get(m, []) if norm(d) not in core | {"kyara"}}
    assert not missing, f"the live server imports modules from non-core distributions: {sorted(missing)}"
    assert {"starlette", "uvicorn", "websockets"} <= core
    assert project["optional-dependencies"]["live"] == []  # the old extra still installs


def test_port_in_use_fails_at_once_with_one_line(monkeypatch, capsys):
    monkeypatch.setattr(runner, "load_live_character", lambda *a, **k: pytest.fail("loaded the character first"))
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        t0 = time.perf_counter()
        code = main(["live", "--port", str(port), "--no-browser", "--no-trackers"])
        elapsed = time.perf_counter() - t0
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1, err
    assert err[0].startswith(f"kyara live: error: port {port} on 127.0.0.1 is in use (")
    assert "--port" in err[0]
    assert elapsed < 1.0, f"took {elapsed:.2f} s"  # was ~11 s: the model loaded before uvicorn found the port taken


def test_run_live_on_all_interfaces_prints_the_lan_address_and_serves(monkeypatch):
    import uvicorn

    from e2e.fakes import FakeCharacter

    monkeypatch.setattr(runner, "load_live_character", lambda config, print_fn: FakeCharacter())
    monkeypatch.setattr(session, "lan_address", lambda: "192.0.2.77")
    servers, lines = [], []
    real_run = uvicorn.Server.run
    monkeypatch.setattr(uvicorn.Server, "run", lambda self, sockets=None: (servers.append(self), real_run(self, sockets))[1])
    token = "lan-token-1234"
    config = LiveConfig(host="0.0.0.0", port=0, token=token, trackers=False, open_browser=False)
    thread = threading.Thread(target=runner.run_live, args=(config, lines.append), daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while not any("Ctrl+C" in line for line in lines):
            assert thread.is_alive() and time.monotonic() < deadline, lines
            time.sleep(0.05)
        studio = next(line for line in lines if "studio:" in line)
        port = servers[0].servers[0].sockets[0].getsockname()[1]
        assert f"http://192.0.2.77:{port}/?token={token}" in studio and "127.0.0.1" not in studio
        assert any(f"http://127.0.0.1:{port}/?token={token}" in line for line in lines if "this machine" in line)
        assert any(f"http://192.0.2.77:{port}/obs?token={token}" in line for line in lines if "OBS" in line)
        request = urllib.request.Request(f"http://127.0.0.1:{port}/api/status",
                                         headers={"Authorization": f"Bearer {token}"})
        with urllib.request.urlopen(request, timeout=10) as r:
            assert json.loads(r.read())["character"] == "fake"
    finally:
        if servers:
            servers[0].should_exit = True
        thread.join(15)
    assert not thread.is_alive()
