"""Video and animation writers: a stream of (H, W, 4) uint8 sRGB straight-alpha RGBA frames → a file.

Formats, chosen by the output path (``open_writer``):

=================  =========================================================================
``.mp4``           H.264 yuv420p over a background colour (no alpha), AAC audio, +faststart
``.webm``          VP9 yuva420p (alpha kept unless a background is given), Opus audio
``.gif``           palette GIF (transparent unless a background is given), loops forever
``.webp``          animated WebP with alpha (Pillow), loops forever
directory / ``%d`` PNG sequence, one atomic write per frame
=================  =========================================================================

Video goes through the ffmpeg binary shipped by ``imageio-ffmpeg`` over a rawvideo pipe. Every
file is written to a temporary name in the target directory and renamed into place on ``close()``,
so a crash never leaves a half-written video under the requested name. When an audio file is
given, the video is encoded first, then muxed with the audio in a second, stream-copying pass
that pads or trims the audio to exactly ``frames / fps`` seconds (so A/V durations agree).
"""
from __future__ import annotations

import io
import os
import re
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import numpy as np
from PIL import Image

from kyara.errors import KyaraError, OutputError
from kyara.image import atomic_write_bytes, composite_over, encode_image

DEFAULT_FPS = 30.0
STDERR_TAIL_LINES = 12
VIDEO_EXTENSIONS = (".mp4", ".webm", ".gif", ".webp")


class VideoError(KyaraError):
    """A video could not be written or read; the message names the file and quotes ffmpeg."""


def ffmpeg_exe() -> str:
    """Path of the ffmpeg binary bundled with imageio-ffmpeg (a core dependency)."""
    import imageio_ffmpeg

    return imageio_ffmpeg.get_ffmpeg_exe()


def _stderr_tail(data: bytes, lines: int = STDERR_TAIL_LINES) -> str:
    text = data.decode("utf-8", "replace").strip().splitlines()
    return "\n  ".join(text[-lines:]) if text else "(no output from ffmpeg)"


def _run_ffmpeg(args: list[str], what: str) -> bytes:
    """Run ffmpeg to completion; returns stdout. Raises VideoError quoting stderr's last lines."""
    proc = subprocess.run([ffmpeg_exe(), "-hide_banner", "-nostdin", *args], capture_output=True)
    if proc.returncode != 0:
        raise VideoError(f"{what}: ffmpeg failed (exit {proc.returncode}):\n  {_stderr_tail(proc.stderr)}")
    return proc.stdout


def _temp_path(path: Path) -> Path:
    """A fresh temporary file name beside `path`, keeping its extension (ffmpeg picks muxers by it).
    Raises OutputError naming `path` when its folder cannot be made or written."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=path.suffix, dir=path.parent)
    except OSError as e:
        raise OutputError.writing(path, e) from None
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)   # mkstemp makes 0600; a published video should get the usual mode
    return Path(tmp)


def _check_frame(rgba: np.ndarray, size: tuple[int, int] | None, path: Path, channels: tuple[int, ...] = (4,)
                 ) -> tuple[int, int]:
    if not isinstance(rgba, np.ndarray) or rgba.dtype != np.uint8 or rgba.ndim != 3 or rgba.shape[2] not in channels:
        shape = getattr(rgba, "shape", None)
        want = "(H, W, 4) uint8 RGBA" if channels == (4,) else "(H, W, 3) uint8 RGB"
        raise VideoError(f"{path}: frames must be {want} arrays, got {shape} {getattr(rgba, 'dtype', type(rgba))}")
    hw = (int(rgba.shape[0]), int(rgba.shape[1]))
    if size is not None and hw != size:
        raise VideoError(f"{path}: frame size changed from {size[1]}×{size[0]} to {hw[1]}×{hw[0]}")
    return hw


class _WriterBase:
    """What every writer offers: write(rgba), close() → path (publishes the file), abort() (leaves the
    target untouched), write_all(frames); as a context manager it closes, or aborts on an exception."""
    path: Path
    frames_written: int

    def __init__(self, path: str | Path, fps: float, background: tuple[int, int, int] | None) -> None:
        self.path = Path(path)
        self.fps = float(fps)
        if not self.fps > 0:
            raise VideoError(f"{self.path}: fps must be positive, got {fps}")
        self.background = background
        self.frames_written = 0
        self._size: tuple[int, int] | None = None

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()

    def write_all(self, frames: Iterable[np.ndarray]) -> Path:
        with self:
            for rgba in frames:
                self.write(rgba)
        return self.path


# -- ffmpeg-backed writers (mp4, webm, gif) --------------------------------------------------------
@dataclass(frozen=True)
class _Codec:
    video_args: tuple[str, ...]   # output options for the video-only encode
    pipe_pix_fmt: str            # what we send: "rgba" keeps alpha, "rgb24" after compositing
    audio_args: tuple[str, ...]   # audio codec options for the mux pass


def _codec_for(suffix: str, background: tuple[int, int, int] | None) -> _Codec:
    if suffix == ".mp4":
        # yuv420p needs even sizes; the pad filter adds at most one row/column of background.
        return _Codec(("-vf", "pad=ceil(iw/2)*2:ceil(ih/2)*2", "-c:v", "libx264", "-preset", "veryfast",
                       "-crf", "18", "-pix_fmt", "yuv420p", "-movflags", "+faststart"),
                      "rgb24", ("-c:a", "aac", "-b:a", "160k", "-movflags", "+faststart"))
    if suffix == ".webm":
        pix = "yuv420p" if background is not None else "yuva420p"
        # -auto-alt-ref 0: libvpx refuses alt-ref frames together with an alpha plane.
        return _Codec(("-c:v", "libvpx-vp9", "-pix_fmt", pix, "-b:v", "0", "-crf", "32", "-deadline", "realtime",
                       "-cpu-used", "8", "-row-mt", "1", "-auto-alt-ref", "0"),
                      "rgb24" if background is not None else "rgba", ("-c:a", "libopus", "-b:a", "96k"))
    if suffix == ".gif":
        # One pass: palettegen sees every frame (ffmpeg buffers them), paletteuse maps with a
        # reserved transparent index; pixels under alpha 128 become transparent.
        graph = ("split[a][b];[a]palettegen=reserve_transparent=1:stats_mode=full[p];"
                 "[b][p]paletteuse=dither=sierra2_4a:alpha_threshold=128")
        return _Codec(("-filter_complex", graph, "-loop", "0"),
                      "rgb24" if background is not None else "rgba", ())
    raise VideoError(f"no ffmpeg codec for {suffix!r}")


class FfmpegWriter(_WriterBase):
    """Pipes raw frames into ffmpeg. Frames: (H, W, 4) uint8 sRGB straight RGBA, all the same size."""

    def __init__(self, path: str | Path, fps: float = DEFAULT_FPS, background: tuple[int, int, int] | None = None,
                 audio: str | Path | None = None) -> None:
        suffix = Path(path).suffix.lower()
        if suffix == ".mp4" and background is None:
            background = (255, 255, 255)   # H.264 yuv420p has no alpha plane
        super().__init__(path, fps, background)
        self.audio = Path(audio) if audio is not None else None
        if self.audio is not None and not self.audio.is_file():
            raise VideoError(f"audio file not found: {self.audio}")
        if self.audio is not None and suffix == ".gif":
            raise VideoError(f"{self.path}: GIF has no audio track; write .mp4 or .webm to keep the audio")
        self.codec = _codec_for(suffix, background)
        self._proc: subprocess.Popen | None = None
        self._stderr = None
        self._tmp: Path | None = None   # created with the first frame

    def _start(self, height: int, width: int) -> None:
        self._tmp = _temp_path(self.path)
        self._stderr = tempfile.TemporaryFile()   # a file, not a pipe: a chatty ffmpeg cannot block
        args = [ffmpeg_exe(), "-hide_banner", "-nostdin", "-loglevel", "error", "-y",
                "-f", "rawvideo", "-pix_fmt", self.codec.pipe_pix_fmt, "-s", f"{width}x{height}",
                "-framerate", f"{self.fps:g}", "-i", "-", "-an", *self.codec.video_args, str(self._tmp)]
        self._proc = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=self._stderr)

    def _ffmpeg_failure(self, what: str) -> VideoError:
        assert self._proc is not None and self._stderr is not None
        code = self._proc.wait()
        self._stderr.seek(0)
        tail = _stderr_tail(self._stderr.read())
        self._cleanup()
        return VideoError(f"{self.path}: {what} (ffmpeg exit {code}):\n  {tail}")

    @property
    def flattens_onto(self) -> tuple[int, int, int] | None:
        """The background colour frames are composited onto before encoding, or None if the
        encoded video keeps alpha. Frames already flattened onto it may go to ``write_flat``."""
        return self.background if self.codec.pipe_pix_fmt == "rgb24" else None

    def write_flat(self, rgb: np.ndarray) -> None:
        """rgb: (H, W, 3) uint8 already composited onto ``flattens_onto`` (as kyara.image.composite_over
        does); sent to the encoder as is, saving the per-frame compositing of ``write``."""
        if self.flattens_onto is None:
            raise VideoError(f"{self.path}: this video keeps alpha; write (H, W, 4) RGBA frames")
        self._send(rgb, (3,))

    def write(self, rgba: np.ndarray) -> None:
        """rgba: (H, W, 4) uint8 sRGB straight alpha."""
        self._send(rgba, (4,))

    def _send(self, rgba: np.ndarray, channels: tuple[int, ...]) -> None:
        size = _check_frame(rgba, self._size, self.path, channels)
        if self._proc is None:
            self._size = size
            self._start(*size)
        data = rgba
        if rgba.shape[2] == 4 and self.codec.pipe_pix_fmt == "rgb24":
            data = composite_over(rgba, self.background or (0, 0, 0))
        try:
            self._proc.stdin.write(np.ascontiguousarray(data).tobytes())
        except (BrokenPipeError, OSError):
            raise self._ffmpeg_failure("ffmpeg stopped accepting frames") from None
        self.frames_written += 1

    def close(self) -> Path:
        """Finish encoding, mux audio if any, and rename into place. Returns the final path."""
        if self._proc is None:
            self._cleanup()
            raise VideoError(f"{self.path}: no frames were written")
        try:
            self._proc.stdin.close()
        except OSError:
            pass
        if self._proc.wait() != 0:
            raise self._ffmpeg_failure("encoding failed")
        self._stderr.close()
        try:
            if self.audio is not None:
                self._mux_audio()
            os.replace(self._tmp, self.path)
        except OSError as e:
            self._cleanup()
            raise OutputError.writing(self.path, e) from None
        except BaseException:
            self._cleanup()
            raise
        self._proc = None
        return self.path

    def _mux_audio(self) -> None:
        """Copy the video stream and add the audio, padded with silence or cut to the video length."""
        duration_s = self.frames_written / self.fps
        muxed = _temp_path(self.path)
        try:
            _run_ffmpeg(["-loglevel", "error", "-y", "-i", str(self._tmp), "-i", str(self.audio),
                         "-map", "0:v:0", "-map", "1:a:0", "-c:v", "copy", "-af", "apad",
                         *self.codec.audio_args, "-t", f"{duration_s:.6f}", str(muxed)],
                        f"{self.path}: adding audio from {self.audio}")
            os.replace(muxed, self._tmp)
        finally:
            if muxed.exists():
                muxed.unlink()

    def abort(self) -> None:
        """Stop ffmpeg and delete the temporary file; the target path is left untouched."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait()
        self._cleanup()

    def _cleanup(self) -> None:
        if self._stderr is not None and not self._stderr.closed:
            self._stderr.close()
        self._proc = None
        if self._tmp is not None:
            self._tmp.unlink(missing_ok=True)


# -- Pillow-backed animated WebP ------------------------------------------------------------------
class WebPWriter(_WriterBase):
    """Animated WebP with alpha (lossy colour, exact alpha), looping. Buffers frames in memory:
    meant for short clips such as sticker loops."""

    def __init__(self, path: str | Path, fps: float = DEFAULT_FPS, background: tuple[int, int, int] | None = None,
                 quality: int = 90) -> None:
        super().__init__(path, fps, background)
        self.quality = int(quality)
        self._frames: list[Image.Image] = []

    def write(self, rgba: np.ndarray) -> None:
        self._size = _check_frame(rgba, self._size, self.path)
        if self.background is not None:
            self._frames.append(Image.fromarray(composite_over(rgba, self.background), "RGB"))
        else:
            self._frames.append(Image.fromarray(np.ascontiguousarray(rgba), "RGBA"))
        self.frames_written += 1

    def close(self) -> Path:
        if not self._frames:
            raise VideoError(f"{self.path}: no frames were written")
        buf = io.BytesIO()
        duration_ms = max(1, round(1000.0 / self.fps))
        self._frames[0].save(buf, format="WEBP", save_all=True, append_images=self._frames[1:], loop=0,
                             duration=duration_ms, quality=self.quality, alpha_quality=100, method=4)
        atomic_write_bytes(self.path, buf.getvalue())
        self._frames = []
        return self.path

    def abort(self) -> None:
        self._frames = []


# -- PNG sequence -----------------------------------------------------------------------------------
class PngSequenceWriter(_WriterBase):
    """One PNG per frame. `path` is a directory (files frame_000000.png, ...) or a pattern with a
    printf-style ``%d`` / ``%06d`` (e.g. ``out/talk_%04d.png``). Each file is written atomically;
    frames are numbered from 0."""

    def __init__(self, path: str | Path, fps: float = DEFAULT_FPS, background: tuple[int, int, int] | None = None) -> None:
        path = Path(path)
        if re.search(r"%0?\d*d", path.name):
            self.pattern = path
            self.path = path.parent
        else:
            self.pattern = path / "frame_%06d.png"
            self.path = path
        if self.pattern.suffix.lower() != ".png":
            raise VideoError(f"{path}: a frame pattern must end in .png")
        self.fps = float(fps)
        self.background = background
        self.frames_written = 0
        self._size: tuple[int, int] | None = None

    def frame_path(self, index: int) -> Path:
        return self.pattern.parent / (self.pattern.name % index)

    def write(self, rgba: np.ndarray) -> None:
        self._size = _check_frame(rgba, self._size, self.path)
        atomic_write_bytes(self.frame_path(self.frames_written), encode_image(rgba, "PNG", self.background))
        self.frames_written += 1

    def close(self) -> Path:
        if self.frames_written == 0:
            raise VideoError(f"{self.path}: no frames were written")
        return self.path

    def abort(self) -> None:
        pass


def is_png_sequence(path: str | Path) -> bool:
    path = Path(path)
    return bool(re.search(r"%0?\d*d", path.name)) or path.suffix == "" or path.is_dir()


def open_writer(path: str | Path, fps: float = DEFAULT_FPS, background: tuple[int, int, int] | None = None,
                audio: str | Path | None = None) -> FfmpegWriter | WebPWriter | PngSequenceWriter:
    """Pick a writer by the output path: .mp4, .webm, .gif, .webp, or a directory / ``%d`` pattern
    for PNG frames. background: (r, g, b) 0..255 to flatten onto, or None to keep alpha where the
    format has it (MP4 has none and defaults to white). audio: a sound file to mux (MP4/WebM only)."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix in (".mp4", ".webm", ".gif"):
        return FfmpegWriter(path, fps=fps, background=background, audio=audio)
    if audio is not None:
        raise VideoError(f"{path}: this format has no audio track; write .mp4 or .webm to keep the audio")
    if suffix == ".webp":
        return WebPWriter(path, fps=fps, background=background)
    if is_png_sequence(path):
        return PngSequenceWriter(path, fps=fps, background=background)
    raise VideoError(f"{path}: unsupported output; use .mp4, .webm, .gif, .webp, a directory or a pattern with %d for PNGs")


# -- reading back (tests, benchmarks, checks) ----------------------------------------------------
@dataclass(frozen=True)
class MediaInfo:
    """What ``ffmpeg -i`` reports about a file."""
    duration_s: float | None
    width: int | None
    height: int | None
    fps: float | None
    video_codec: str | None
    audio_codec: str | None
    has_alpha_tag: bool        # WebM's alpha_mode : 1
    text: str                  # the raw report


def probe(path: str | Path) -> MediaInfo:
    path = Path(path)
    if not path.is_file():
        raise VideoError(f"{path}: file not found")
    proc = subprocess.run([ffmpeg_exe(), "-hide_banner", "-nostdin", "-i", str(path)], capture_output=True)
    text = proc.stderr.decode("utf-8", "replace")
    if "Stream #" not in text:
        raise VideoError(f"{path}: not a readable media file:\n  {_stderr_tail(proc.stderr)}")
    dur = re.search(r"Duration: (\d+):(\d+):(\d+(?:\.\d+)?)", text)
    duration = int(dur[1]) * 3600 + int(dur[2]) * 60 + float(dur[3]) if dur else None
    video = re.search(r"Stream #.*?Video: (\w+).*?, (\d{2,5})x(\d{2,5})", text)
    fps = re.search(r"(\d+(?:\.\d+)?) fps", text)
    audio = re.search(r"Stream #.*?Audio: (\w+)", text)
    return MediaInfo(duration, int(video[2]) if video else None, int(video[3]) if video else None,
                     float(fps[1]) if fps else None, video[1] if video else None, audio[1] if audio else None,
                     bool(re.search(r"alpha_mode\s*:\s*1", text, re.IGNORECASE)), text)


def read_frames(path: str | Path, alpha: bool = False) -> np.ndarray:
    """Decode every frame → (N, H, W, 4 if alpha else 3) uint8. VP9 alpha needs the libvpx decoder
    (ffmpeg's native vp9 decoder drops the alpha plane)."""
    path = Path(path)
    info = probe(path)
    if info.width is None:
        raise VideoError(f"{path}: has no video stream")
    pre = ["-c:v", "libvpx-vp9"] if alpha and info.video_codec == "vp9" else []
    channels = 4 if alpha else 3
    raw = _run_ffmpeg(["-loglevel", "error", *pre, "-i", str(path), "-map", "0:v:0", "-f", "rawvideo",
                       "-pix_fmt", "rgba" if alpha else "rgb24", "-"], f"{path}: decoding video")
    frame_bytes = info.width * info.height * channels
    return np.frombuffer(raw, dtype=np.uint8).reshape(len(raw) // frame_bytes, info.height, info.width, channels)


def read_audio(path: str | Path, sample_rate: int = 16000) -> np.ndarray:
    """Decode the first audio stream → (S,) float32 mono at sample_rate (for A/V checks)."""
    raw = _run_ffmpeg(["-loglevel", "error", "-i", str(path), "-map", "0:a:0", "-ac", "1", "-ar", str(int(sample_rate)),
                       "-f", "f32le", "-"], f"{path}: decoding audio")
    return np.frombuffer(raw, dtype=np.float32)
