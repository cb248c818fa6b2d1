"""Time `kyara speak` end to end on N seconds of synthetic speech-like audio; print a markdown table.

    python benchmarks/speak_speed.py [--seconds 30] [--character FILE.kyara] [--modes fast,full] [--psnr-every 10]

Without --character it uses the bundled sample character if present, else a random-init student
(same architecture, so the same speed). Modes: fast (default `kyara speak`: render_track_fast),
full (`kyara speak --exact`: every frame's exact pose through the full student). The PSNR column
compares each mode's frames (written again as lossless PNGs, flattened on white like the MP4) with
full renders of every Nth frame (--psnr-every).
"""
from __future__ import annotations

import argparse
import platform
import sys
import tempfile
import time
import wave
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch


def speech_like(seconds: float, sample_rate: int = 16000, seed: int = 0) -> np.ndarray:
    """Syllables (~4/s) of a buzzy voice with varying pitch and formant-ish colour, and pauses."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sample_rate)) / sample_rate
    f0 = 130 + 25 * np.sin(2 * np.pi * 0.3 * t) + 10 * np.sin(2 * np.pi * 1.7 * t)
    phase = 2 * np.pi * np.cumsum(f0) / sample_rate
    voice = sum(np.sin(k * phase) * (1.0 / k) * (1 + 0.8 * np.sin(2 * np.pi * 0.5 * k * t + rng.uniform(0, 6)))
                for k in range(1, 16))
    syll = np.clip(np.sin(2 * np.pi * 4.0 * t + 0.5 * np.sin(2 * np.pi * 0.7 * t)), 0, None) ** 0.7
    pauses = (np.sin(2 * np.pi * 0.12 * t) > -0.7).astype(float)     # a pause every ~8 s
    return (0.2 * voice / 4 * syll * pauses + 0.001 * rng.standard_normal(t.size)).astype(np.float32)


def cpu_seconds() -> tuple[float, float]:
    """CPU seconds (user + system) of this process and of its finished children (ffmpeg) so far."""
    import resource

    me, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime, children.ru_utime + children.ru_stime


def psnr(mse: float) -> float:
    return float("inf") if mse == 0 else 10 * np.log10(255.0 ** 2 / mse)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--character", default=None)
    ap.add_argument("--modes", default="fast,full", help="fast (default speak), lite (fast with the CPU-lite student, kyara.student.lite), full (--exact: "
                         "every frame's exact pose, full network)")
    ap.add_argument("--psnr-every", type=int, default=10,
                    help="PSNR of each mode against the full render on every Nth frame (full renders, slow); 0: off")
    args = ap.parse_args()

    from kyara import character as character_module
    from kyara.image import composite_over, tensor_to_rgba_u8
    from kyara.produce.frames import RenderStats
    from kyara.produce.speak import SpeakConfig, speak
    from kyara.render.video import read_audio

    if args.character:
        ch = character_module.load_character(args.character)
        source = args.character
    elif character_module.SAMPLE_CHARACTER.is_file():
        ch = character_module.load_character(character_module.SAMPLE_CHARACTER)
        source = "bundled sample"
    else:
        ch = character_module.random_character(seed=0)
        source = "random-init student"
    load = open("/proc/loadavg").read().split()[:3] if Path("/proc/loadavg").exists() else ["?"]
    print(f"character: {source}; {platform.processor() or platform.machine()}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads; python {sys.version.split()[0]}; load average before: {' '.join(load)}\n")
    print("| mode | audio s | frames | body renders (s) | face renders (s) | render s | total s | total / audio "
          "| CPU s (this process + ffmpeg) | A/V diff (frames) | PSNR vs full (dB, clip / worst frame) |")
    print("|---|---|---|---|---|---|---|---|---|---|---|", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        wav = Path(tmp) / "speech.wav"
        pcm = (speech_like(args.seconds) * 32767).astype("<i2")
        with wave.open(str(wav), "wb") as w:
            w.setnchannels(1), w.setsampwidth(2), w.setframerate(16000), w.writeframes(pcm.tobytes())
        reference: dict[int, np.ndarray] = {}
        for mode in args.modes.split(","):
            config = SpeakConfig()
            target = ch
            if mode == "lite":
                import copy

                from kyara.student.lite import LiteStudent

                target = copy.copy(ch)
                target.poser = LiteStudent(ch.poser)
                target.poser.face_plan()   # the one-time analysis, outside the timed run (reported by lite_student.py)
            if mode == "full":
                config = replace(config, exact=True)
            frames_dir = Path(tmp) / f"{mode}_frames"
            stats = RenderStats()
            start = time.perf_counter()
            cpu_start = cpu_seconds()
            # Timed run: the real MP4 (render + encode + mux).
            video = Path(tmp) / f"{mode}.mp4"
            speak(target, wav, output=video, config=config, progress=False, stats=stats)
            total = time.perf_counter() - start
            cpu = [b - a for a, b in zip(cpu_start, cpu_seconds())]
            frames = stats.frames
            audio_s = len(read_audio(video)) / 16000
            av_frames = abs(audio_s - frames / config.fps) * config.fps
            quality = "(reference)" if mode == "full" else "-"
            if args.psnr_every and mode != "full":
                # Quality: the same frames as PNGs (lossless), flattened on white like the MP4.
                speak(target, wav, output=frames_dir, config=config, progress=False)
                from PIL import Image
                mses = []
                for t in range(0, frames, args.psnr_every):
                    got = np.asarray(Image.open(frames_dir / f"frame_{t:06d}.png").convert("RGBA"))
                    if t not in reference:
                        reference[t] = composite_over(tensor_to_rgba_u8(ch.render(torch.from_numpy(
                            _exact_poses(ch, wav, config)[t:t + 1]))[0].cpu()), (255, 255, 255)).astype(np.float64)
                    mses.append(np.mean((composite_over(got, (255, 255, 255)) - reference[t]) ** 2))
                quality = f"{psnr(float(np.mean(mses))):.2f} / {min(psnr(m) for m in mses):.2f}"
            print(f"| {mode} | {args.seconds:.1f} | {frames} | {stats.body_poses} ({stats.body_s:.1f}) "
                  f"| {stats.face_poses} ({stats.face_s:.1f}) | {stats.render_s:.1f} | {total:.1f} "
                  f"| {total / args.seconds:.2f} | {cpu[0]:.1f} + {cpu[1]:.1f} | {av_frames:.2f} | {quality} |", flush=True)
    load = open("/proc/loadavg").read().split()[:3] if Path("/proc/loadavg").exists() else ["?"]
    print(f"\nload average after: {' '.join(load)}")


_POSES: dict = {}


def _exact_poses(ch, wav: Path, config) -> np.ndarray:
    """The unquantized (T, 45) pose track speak() builds for this audio (what --exact renders)."""
    if wav not in _POSES:
        from kyara.drive.audio import analyze, load_audio
        from kyara.produce.speak import speech_tracks

        samples, rate = load_audio(wav)
        _POSES[wav] = speech_tracks(analyze(samples, rate, fps=config.fps), config).poses
    return _POSES[wav]


if __name__ == "__main__":
    main()
