"""`kyara speak`: a lip-synced talking video from an audio file or text. Thin over ``kyara.produce.speak.speak``."""
from __future__ import annotations

import argparse

from kyara.cli import HelpFormatter
from kyara.produce.speak import SpeakConfig

DEFAULTS = SpeakConfig()


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "speak", help="lip-synced talking video from speech audio or text (espeak-ng)",
        description="Render CHARACTER talking: mouth from the audio (or espeak-ng phoneme timings for --text), natural "
                    "blinks and breathing, head nods and sway that follow loudness and pitch, an optional emotion. "
                    "The output format follows -o: .mp4 (H.264 + audio), .webm (VP9 with alpha + audio), .gif, .webp, "
                    "or a directory / pattern with %d for PNG frames.",
        formatter_class=HelpFormatter)
    p.add_argument("character", help="a .kyara character file (fast student) or an image (slow THA3 teacher)")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--audio", metavar="FILE", help="speech audio (WAV, FLAC, OGG, MP3, M4A...; any sample rate)")
    src.add_argument("--text", help="text to speak with espeak-ng")
    p.add_argument("--voice", default=DEFAULTS.voice, help="espeak-ng voice for --text (e.g. en-us, en-gb+f3, ja)")
    p.add_argument("--rate-wpm", type=int, default=DEFAULTS.rate_wpm, help="espeak-ng speaking rate for --text")
    p.add_argument("--emotion", default=DEFAULTS.emotion, help="expression preset held while speaking (e.g. happy)")
    p.add_argument("--emotion-intensity", type=float, default=DEFAULTS.emotion_intensity, help="0..1")
    p.add_argument("--emotion-timeline", metavar="YAML", default=DEFAULTS.emotion_timeline,
                   help="YAML list of {t, emotion, intensity}: expressions changing over time (overrides --emotion)")
    p.add_argument("-o", "--output", default=None,
                   help="output file (default: <audio name>.mp4, or <character>_speech.mp4 for --text)")
    p.add_argument("--fps", type=float, default=DEFAULTS.fps, help="frames per second")
    p.add_argument("--background", default=DEFAULTS.background,
                   help="green, #rrggbb, r,g,b or transparent (default: transparent where the format allows, MP4 white)")
    p.add_argument("--device", default="auto", help="auto (a CUDA GPU if there is one, else the CPU), cpu, cuda or cuda:N")
    p.add_argument("--student", choices=["auto", "lite", "full"], default="auto",
                   help="student renderer: lite (CPU-fast: coarse body grid, movable face pixels only), full, "
                        "or auto (lite on the CPU; default)")
    p.add_argument("--batch-size", type=int, default=DEFAULTS.batch_size, help="poses rendered per model call")
    p.add_argument("--seed", type=int, default=DEFAULTS.seed, help="seed for blinks and sway")
    p.add_argument("--exact", action="store_true",
                   help="render every frame's exact pose with the full network (slow reference; default ~45 dB from it)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from kyara.errors import KyaraError
    from kyara.produce.speak import speak

    if args.batch_size < 1:
        raise KyaraError(f"--batch-size must be at least 1, got {args.batch_size}")
    if not 0 < args.fps <= 120:   # also refuses NaN
        raise KyaraError(f"--fps must be in (0, 120], got {args.fps:g}")
    if not 0 <= args.emotion_intensity <= 1:
        raise KyaraError(f"--emotion-intensity must be in [0, 1], got {args.emotion_intensity:g}")
    config = SpeakConfig(fps=args.fps, voice=args.voice, rate_wpm=args.rate_wpm, emotion=args.emotion,
                         emotion_intensity=args.emotion_intensity, emotion_timeline=args.emotion_timeline,
                         background=args.background, batch_size=args.batch_size, seed=args.seed,
                         exact=args.exact)
    character = args.character
    if args.student != "full" and not args.exact:
        from kyara.character import is_student_path, load
        from kyara.student.lite import use_student

        if is_student_path(character) or args.student == "lite":
            character = use_student(load(character, device=args.device), args.student)
    path = speak(character, audio_path=args.audio, text=args.text, output=args.output, config=config,
                 device=args.device, progress=not args.quiet)
    print(path)
    return 0
