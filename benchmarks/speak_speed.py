"""Time `kyara speak` end to end on N seconds of synthetic speech-like audio; print a markdown table.

    python benchmarks/speak_speed.py [--seconds 30] [--character FILE.kyara] [--modes split,split0,cache]

Without --character it uses the bundled sample character if present, else a random-init student
(same architecture, so the same speed). Modes: split (default speak: face/body networks on separate
schedules, adaptive body keyframes), split0 (split, body network on every frame's body pose),
cache (whole-frame cache only: each distinct full pose rendered once by the full student).
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


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--character", default=None)
    ap.add_argument("--modes", default="split")
    ap.add_argument("--output", default=None, help="keep the video here (default: temp, deleted)")
    args = ap.parse_args()

    from kyara import character as character_module
    from kyara.produce.frames import RenderStats
    from kyara.produce.speak import SpeakConfig, speak
    from kyara.render.video import read_audio, read_frames

    if args.character:
        ch = character_module.load_character(args.character)
        source = args.character
    elif character_module.SAMPLE_CHARACTER.is_file():
        ch = character_module.load_character(character_module.SAMPLE_CHARACTER)
        source = "bundled sample"
    else:
        ch = character_module.random_character(seed=0)
        source = "random-init student"
    print(f"character: {source}; {platform.processor() or platform.machine()}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads; python {sys.version.split()[0]}\n")
    print("| mode | audio s | frames | distinct poses | face renders (s) | body renders (s) | render s | total s "
          "| total / audio | A/V diff (frames) |")
    print("|---|---|---|---|---|---|---|---|---|---|", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        wav = Path(tmp) / "speech.wav"
        pcm = (speech_like(args.seconds) * 32767).astype("<i2")
        with wave.open(str(wav), "wb") as w:
            w.setnchannels(1), w.setsampwidth(2), w.setframerate(16000), w.writeframes(pcm.tobytes())
        for mode in args.modes.split(","):
            config = SpeakConfig()
            if mode == "split0":
                config = replace(config, body_max_gap_s=0.0)
            elif mode == "cache":
                config = replace(config, split=False)
            out = Path(args.output) if args.output else Path(tmp) / f"{mode}.mp4"
            stats = RenderStats()
            start = time.perf_counter()
            speak(ch, wav, output=out, config=config, progress=False, stats=stats)
            total = time.perf_counter() - start
            frames = len(read_frames(out))
            audio_s = len(read_audio(out)) / 16000
            av_frames = abs(audio_s - frames / config.fps) * config.fps
            print(f"| {mode} | {args.seconds:.1f} | {frames} | {stats.unique_poses} | {stats.face_poses} ({stats.face_s:.1f}) "
                  f"| {stats.body_poses} ({stats.body_s:.1f}) | {stats.render_s:.1f} | {total:.1f} "
                  f"| {total / args.seconds:.2f} | {av_frames:.2f} |", flush=True)


if __name__ == "__main__":
    main()
