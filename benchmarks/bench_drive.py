"""Per-frame CPU cost of kyara.drive: parsing, mapping, mixing. Prints a markdown table.

Run: python benchmarks/bench_drive.py   (needs python-osc, the dev extra, to build VMC packets)
"""
from __future__ import annotations

import platform
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from senders import ifacialmocap_packet, unity_quaternion, vmc_frame  # noqa: E402

from kyara.drive.arkit import ARKIT_BLENDSHAPES, ArkitFrame, arkit_to_pose_values  # noqa: E402
from kyara.drive.idle import IdleMotion  # noqa: E402
from kyara.drive.ifacialmocap import parse_ifacialmocap_v2  # noqa: E402
from kyara.drive.mixer import PoseMixer  # noqa: E402
from kyara.drive.source import PoseSource, SourceSample  # noqa: E402
from kyara.drive.vmc import VmcState  # noqa: E402


def per_call_us(fn, n: int) -> float:
    fn()
    best = float("inf")
    for _ in range(3):
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        best = min(best, (time.perf_counter() - t0) / n)
    return best * 1e6


class _Live(PoseSource):
    name = "live"

    def __init__(self, values):
        self.values, self.t = values, 0.0

    def start(self): ...
    def stop(self): ...

    def latest(self, now):
        self.t += 1 / 60
        return SourceSample.from_dict(self.values, self.t)


def main() -> None:
    shapes = {n: 0.3 for n in ARKIT_BLENDSHAPES}
    ifm = ifacialmocap_packet(shapes, head_deg=(-5.0, 3.0, 1.0))
    vmc = vmc_frame(shapes, head_quat=unity_quaternion(3, 5, 1), neck_quat=unity_quaternion(1, 2, 0))
    frame_open = ArkitFrame(shapes)
    frame_closed = ArkitFrame({**shapes, "jawOpen": 0.0})
    state = VmcState()
    mixer = PoseMixer(idle=IdleMotion())
    mixer.add_source(_Live(arkit_to_pose_values(frame_open)))
    clock = iter(range(10**9))
    rows = [
        (f"parse_ifacialmocap_v2 (52 shapes, {len(ifm)} B)", per_call_us(lambda: parse_ifacialmocap_v2(ifm), 500)),
        (f"VmcState.feed (bundle: 2 bones + 52 blends + Apply, {len(vmc)} B)", per_call_us(lambda: state.feed(vmc), 300)),
        ("arkit_to_pose_values, mouth open (least-squares fit)", per_call_us(lambda: arkit_to_pose_values(frame_open), 300)),
        ("arkit_to_pose_values, mouth closed", per_call_us(lambda: arkit_to_pose_values(frame_closed), 300)),
        ("PoseMixer.mix (idle + 1 tracked source, smoothing)", per_call_us(lambda: mixer.mix(next(clock) / 60), 300)),
    ]
    print(f"Python {platform.python_version()}, {platform.processor() or platform.machine()}\n")
    print("| step | µs per call |")
    print("|---|---|")
    for name, us in rows:
        print(f"| {name} | {us:.0f} |")


if __name__ == "__main__":
    main()
