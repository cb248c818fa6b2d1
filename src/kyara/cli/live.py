"""`kyara live`: drive a character in real time from the browser studio, trackers, audio and events.

Thin over ``kyara.server.app.run_live`` (same parameter names).
"""
from __future__ import annotations

import argparse


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "live", help="real-time studio in the browser + OBS page, driven by sliders, trackers and events",
        description="Serve a local studio page where the character moves in real time, an OBS Browser Source "
                    "page with a transparent background, and UDP receivers for iFacialMocap and VMC trackers.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("character", nargs="?", default=None,
                   help="a .kyara character file (default: the bundled sample); an image with --teacher")
    p.add_argument("--port", type=int, default=8765, help="HTTP/WebSocket port (0 picks a free one)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind; anything but loopback requires --token")
    p.add_argument("--token", default=None, help="require this token on every request (header or ?token=)")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"], help="where the model runs")
    p.add_argument("--no-browser", dest="open_browser", action="store_false", help="do not open the studio page")
    p.add_argument("--teacher", action="store_true", help="drive an image with the slow THA3 teacher (no student)")
    p.add_argument("--fps", type=float, default=60.0, help="render loop target frames per second")
    p.add_argument("--ifacialmocap-port", type=int, default=49983, help="iFacialMocap v2 UDP port")
    p.add_argument("--vmc-port", type=int, default=39539, help="VMC protocol (OSC over UDP) port")
    p.add_argument("--listen-host", default="127.0.0.1",
                   help="address the tracker receivers bind (0.0.0.0 to accept a phone on the LAN)")
    p.add_argument("--no-trackers", dest="trackers", action="store_false", help="start no UDP receivers")
    p.add_argument("--audio", default=None, metavar="FILE", help="drive the mouth from an audio file")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from kyara.server.app import run_live

    run_live(args.character, port=args.port, host=args.host, token=args.token, device=args.device,
             open_browser=args.open_browser, teacher=args.teacher, fps=args.fps,
             ifacialmocap_port=args.ifacialmocap_port, vmc_port=args.vmc_port, listen_host=args.listen_host,
             trackers=args.trackers, audio=args.audio)
    return 0
