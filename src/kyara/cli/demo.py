"""`kyara demo`: animate the bundled sample character with its bundled student → a video file.

Needs no GPU and no download. With --teacher (or if the bundled student is missing) it poses the
sample image with the THA3 teacher instead (slow on a CPU; needs `kyara models fetch`).
"""
from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np

from kyara.pose import INDEX, NUM_PARAMETERS, PRESETS

# Vowel sequence the demo "speaks" (5 syllables a second), and when it blinks (seconds).
SPEECH = ["mouth_aaa", "mouth_iii", "mouth_uuu", "mouth_eee", "mouth_ooo", "mouth_aaa", "mouth_eee", "mouth_ooo"]
BLINKS_S = (1.1, 3.3, 4.6)
BLINK_S = 0.16
MAX_SECONDS, MAX_FPS = 600, 120   # a demo clip; larger values only exhaust memory


def demo_track(seconds: float, fps: float) -> tuple[np.ndarray, np.ndarray]:
    """(T, 45) poses: breathing, head sway, a talking mouth, blinks and a closing smile; and the
    (T, 45) body-only track (without mouth and blinks) the split renderer keys on."""
    n = max(2, int(round(seconds * fps)))
    t = np.arange(n) / fps
    poses = np.zeros((n, NUM_PARAMETERS), np.float32)
    poses[:, INDEX["breathing"]] = (1 - np.cos(2 * math.pi * t / 3.0)) / 2
    poses[:, INDEX["head_y"]] = 0.45 * np.sin(2 * math.pi * t / 4.0)
    poses[:, INDEX["head_x"]] = 0.15 * np.sin(2 * math.pi * t / 3.0 + 1.0)
    poses[:, INDEX["neck_z"]] = 0.25 * np.sin(2 * math.pi * t / 5.0)
    poses[:, INDEX["body_y"]] = 0.5 * poses[:, INDEX["head_y"]]
    poses[:, INDEX["body_z"]] = 0.5 * poses[:, INDEX["neck_z"]]
    poses[:, INDEX["iris_rotation_y"]] = 0.3 * np.sin(2 * math.pi * t / 4.0)
    # smile over the last 30 % of the clip
    smile = np.clip((t / seconds - 0.7) / 0.15, 0, 1)
    for name, value in PRESETS["happy"].values.items():
        if not name.startswith("mouth_aaa"):
            poses[:, INDEX[name]] = np.maximum(poses[:, INDEX[name]], smile * value)
    body = poses.copy()
    # talking: syllables of 0.2 s with a sine envelope, between 0.4 s and 70 % of the clip
    talking = (t > 0.4) & (t < 0.7 * seconds)
    syllable = ((t - 0.4) / 0.2).astype(int)
    envelope = np.sin(math.pi * ((t - 0.4) / 0.2 % 1.0)) * talking
    for i in range(n):
        if talking[i]:
            poses[i, INDEX[SPEECH[syllable[i] % len(SPEECH)]]] = 0.8 * envelope[i]
    for b in BLINKS_S:
        if b < seconds:
            closed = np.clip(1 - np.abs(t - b) / (BLINK_S / 2), 0, 1)
            for side in ("left", "right"):
                poses[:, INDEX[f"eye_wink_{side}"]] = np.maximum(poses[:, INDEX[f"eye_wink_{side}"]], closed)
    return poses, body


def register(sub) -> None:
    p = sub.add_parser("demo", help="animate the bundled sample character (no GPU, no download)",
                       description="Render a short animation of the bundled sample character with its bundled "
                                   "distilled student: breathing, head sway, talking, blinks and a smile.")
    p.add_argument("-o", "--output", default="kyara-demo.mp4",
                   help="output video: .mp4, .webm (with alpha), .gif, .webp, or a directory for PNG frames")
    p.add_argument("--seconds", type=float, default=5.0, help="clip length")
    p.add_argument("--fps", type=float, default=24.0, help="frames per second of the video")
    p.add_argument("--device", default="auto", help="auto (a CUDA GPU if there is one, else the CPU), cpu, cuda or cuda:N")
    p.add_argument("--student", choices=["auto", "lite", "full"], default="auto",
                   help="student renderer: lite (CPU-fast: coarse body grid, movable face pixels only), full, "
                        "or auto (lite on the CPU; default)")
    p.add_argument("--background", default="white", help="background for formats without alpha (name, #rrggbb)")
    p.add_argument("--exact", action="store_true",
                   help="run the body network on every frame (slower; default interpolates between keyframes)")
    p.add_argument("--teacher", action="store_true", help="pose the sample image with the THA3 teacher instead (slow)")
    p.set_defaults(func=run)


def run(args) -> int:
    from tqdm import tqdm

    from kyara.character import SAMPLE_CHARACTER, SAMPLE_IMAGE, load
    from kyara.errors import KyaraError
    from kyara.image import parse_color
    from kyara.poser import pick_device
    from kyara.produce.frames import RenderStats, SplitConfig, render_track, render_track_split
    from kyara.render.video import open_writer

    if not (0 < args.seconds <= MAX_SECONDS and 0 < args.fps <= MAX_FPS):   # also refuses NaN
        raise KyaraError(f"--seconds must be in (0, {MAX_SECONDS}] and --fps in (0, {MAX_FPS}], got --seconds "
                         f"{args.seconds:g} --fps {args.fps:g}")
    device = str(pick_device(args.device))
    use_teacher = args.teacher or not SAMPLE_CHARACTER.exists()
    if use_teacher and not args.teacher:
        print(f"note: no bundled student at {SAMPLE_CHARACTER}; posing with the THA3 teacher (slow)")
    character = load(SAMPLE_IMAGE if use_teacher else SAMPLE_CHARACTER, device=device)
    if not use_teacher:
        from kyara.student.lite import use_student

        use_student(character, args.student)
    poses, body = demo_track(args.seconds, args.fps)
    stats = RenderStats()
    out = Path(args.output)
    started = time.perf_counter()
    with tqdm(total=len(poses), unit="frame", desc=f"demo ({'teacher' if use_teacher else 'student'}, {device})") as bar:
        if use_teacher:
            frames = render_track(character, poses, batch_size=4, stats=stats)
        else:
            split = SplitConfig(body_max_gap_s=0.0 if args.exact else SplitConfig.body_max_gap_s)
            frames = render_track_split(character, poses, body, args.fps, split, stats)
        with open_writer(out, fps=args.fps, background=parse_color(args.background)) as writer:
            for frame in frames:
                writer.write(frame)
                bar.update(1)
    elapsed = time.perf_counter() - started
    print(f"wrote {out}: {len(poses)} frames at {args.fps:g} fps ({args.seconds:g} s) of '{character.name}'; "
          f"rendered at {len(poses) / elapsed:.1f} frames/s on {device} "
          f"({'teacher' if use_teacher else 'student'}, {elapsed:.1f} s)")
    return 0
