"""Webcam path on a real face photo: the pose it gives and the tracking time per frame.

    python benchmarks/webcam_tracking.py [--frames N]

Uses scikit-image's astronaut photo (public domain) through kyara.drive.webcam (MediaPipe
FaceLandmarker; the model is fetched from PyPI once). Prints markdown tables.
"""
from __future__ import annotations

import argparse
import os
import time

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, default=50)
    args = ap.parse_args()
    from skimage import data

    from kyara.drive.webcam import FaceTracker, pose_from_image

    rgb = data.astronaut()
    print(f"load average {os.getloadavg()[0]:.2f}\n")
    with FaceTracker() as tracker:
        pose = pose_from_image(rgb, tracker)
    values = pose.as_dict()
    shown = ["head_x", "head_y", "neck_z", "eye_wink_left", "eye_wink_right", "eye_happy_wink_left",
             "eye_happy_wink_right", "mouth_aaa", "mouth_raised_corner_left", "iris_rotation_x"]
    print("| parameter (astronaut) | value |\n|---|---|")
    for name in shown:
        if name in values:
            print(f"| {name} | {values[name]:.3f} |")
    print("\n| mode | frames | ms/frame median | p90 |\n|---|---|---|---|")
    for video in (False, True):
        with FaceTracker(video=video) as tracker:
            times = []
            for i in range(args.frames):
                t0 = time.perf_counter()
                tracker.track(rgb, i * 33 if video else None)
                times.append((time.perf_counter() - t0) * 1000)
        times = np.array(times[3:])
        print(f"| {'VIDEO' if video else 'IMAGE'} | {len(times)} | {np.median(times):.1f} | {np.percentile(times, 90):.1f} |")


if __name__ == "__main__":
    main()
