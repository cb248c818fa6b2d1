"""Audio → mouth: vowel class, loudness and pitch per video frame, then THA3 mouth values.

Pipeline (all numpy/scipy, CPU):
1. :func:`load_audio` → mono float32 in [-1, 1] at 16 kHz.
2. :func:`analyze`: 25 ms windows every 10 ms → 13 log-mel cepstra (c1..c12 + frame level in dBFS)
   → 120 ms of past and 60 ms of future context stacked → a small MLP (weights in ``kyara/data/lipsync_vowels.npz``,
   fitted on espeak-ng speech by ``benchmarks/lipsync_accuracy.py --fit``) → probabilities over
   :data:`VOWELS` every 10 ms → averaged per video frame. Quiet frames (below :data:`GATE_DBFS`) are
   forced to "closed". Loudness and an autocorrelation pitch estimate come from the same signal.
3. :func:`mouth_track`: probabilities × loudness → mouth_aaa/iii/uuu/eee/ooo with an attack/release
   filter and a short look-ahead so the mouth opens slightly before the sound and does not flicker.

:class:`AudioFileSource` and :class:`MicrophoneSource` expose the same values as live pose sources.
"""
from __future__ import annotations

import shutil
import subprocess
import threading
import time
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from kyara.drive.source import PoseSource, SourceSample
from kyara.errors import KyaraError

VOWELS = ("A", "I", "U", "E", "O", "closed")   # "closed" = silence or closed-mouth consonant
MOUTH_PARAMETERS = ("mouth_aaa", "mouth_iii", "mouth_uuu", "mouth_eee", "mouth_ooo")  # VOWELS[:5] in order
CLOSED = VOWELS.index("closed")

ANALYSIS_RATE = 16000          # Hz; load_audio's default and what the classifier was fitted on
HOP = 160                      # 10 ms between analysis windows
WINDOW = 400                   # 25 ms analysis window
N_FFT = 512
N_MELS = 26
N_CEPS = 13                    # c1..c12 + frame level
CONTEXT = (-12, -9, -6, -4, -2, 0, 2, 4, 6)   # hop offsets stacked into one input (120 ms back, 60 ms ahead)
GATE_DBFS = -50.0              # frames quieter than this are "closed" whatever the classifier says
LOUD_FLOOR_DBFS, LOUD_FULL_DBFS = -50.0, -20.0   # loudness 0 → 1 between these RMS levels (dBFS)
PITCH_MIN_HZ, PITCH_MAX_HZ = 60.0, 500.0
VOICING_THRESHOLD = 0.5        # normalised autocorrelation peak needed to call a frame voiced
WEIGHTS_FILE = "lipsync_vowels.npz"
MAX_AUDIO_BYTES = 2 * 1024 ** 3


class AudioError(KyaraError):
    """An audio input cannot be used (missing, empty, corrupt, unreadable). The message names the file."""


# -- loading ----------------------------------------------------------------------------------------
def load_audio(path, sample_rate: int = ANALYSIS_RATE) -> tuple[np.ndarray, int]:
    """Read an audio file → (mono float32 samples in [-1, 1], shape (N,), sample_rate).

    WAV/FLAC/OGG/MP3 are read with soundfile; anything else (M4A, WebM, MP4 audio...) through the
    ffmpeg binary bundled with imageio-ffmpeg. Channels are averaged; the result is resampled to
    sample_rate. Raises AudioError naming the file if it is missing, empty, corrupt or silent-length.
    """
    path = Path(path)
    if sample_rate <= 0:
        raise AudioError(f"{path}: sample_rate must be positive, got {sample_rate}")
    if not path.is_file():
        raise AudioError(f"{path}: audio file not found")
    size = path.stat().st_size
    if size == 0:
        raise AudioError(f"{path}: audio file is empty (0 bytes)")
    if size > MAX_AUDIO_BYTES:
        raise AudioError(f"{path}: audio file is {size} bytes, over the {MAX_AUDIO_BYTES} byte limit")
    try:
        samples, rate = _read_soundfile(path)
    except _Unreadable as first:
        samples, rate = _read_ffmpeg(path, sample_rate, first)
    if samples.size == 0:
        raise AudioError(f"{path}: audio file contains no samples")
    if not np.all(np.isfinite(samples)):
        raise AudioError(f"{path}: audio contains NaN or infinite samples")
    return resample(samples, rate, sample_rate), sample_rate


class _Unreadable(Exception):
    pass


def _read_soundfile(path: Path) -> tuple[np.ndarray, int]:
    try:
        import soundfile as sf
    except ImportError as e:  # pragma: no cover - depends on install
        raise _Unreadable("soundfile is not installed (pip install 'kyara[audio]')") from e
    try:
        data, rate = sf.read(str(path), dtype="float32", always_2d=True)
    except Exception as e:  # libsndfile raises LibsndfileError / RuntimeError / TypeError on bad input
        raise _Unreadable(str(e)) from e
    return np.clip(data.mean(axis=1), -1.0, 1.0).astype(np.float32), int(rate)


def _read_ffmpeg(path: Path, sample_rate: int, first: Exception) -> tuple[np.ndarray, int]:
    try:
        import imageio_ffmpeg
        exe = imageio_ffmpeg.get_ffmpeg_exe()
    except Exception:
        exe = shutil.which("ffmpeg")
    if not exe:
        raise AudioError(f"{path}: not a readable audio file ({first}); ffmpeg is not available for other formats")
    cmd = [exe, "-nostdin", "-v", "error", "-i", str(path), "-vn", "-ac", "1", "-ar", str(sample_rate),
           "-f", "f32le", "-"]
    try:
        proc = subprocess.run(cmd, capture_output=True, timeout=600, check=False)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise AudioError(f"{path}: ffmpeg could not decode it ({e})") from e
    if proc.returncode != 0:
        detail = proc.stderr.decode("utf-8", "replace").strip().splitlines()
        raise AudioError(f"{path}: not a readable audio file ({first}; ffmpeg: {detail[-1] if detail else 'failed'})")
    samples = np.frombuffer(proc.stdout, dtype="<f4").astype(np.float32)
    return np.clip(samples, -1.0, 1.0), sample_rate


def resample(samples: np.ndarray, rate_in: int, rate_out: int) -> np.ndarray:
    """Polyphase resampling (scipy) of a 1-D float signal; returns float32."""
    samples = np.asarray(samples, dtype=np.float32)
    if rate_in == rate_out:
        return samples
    from math import gcd

    from scipy.signal import resample_poly
    g = gcd(int(rate_in), int(rate_out))
    out = resample_poly(samples, int(rate_out) // g, int(rate_in) // g)
    return np.clip(out, -1.0, 1.0).astype(np.float32)


# -- features ---------------------------------------------------------------------------------------
@lru_cache(maxsize=4)
def _mel_basis(sample_rate: int) -> np.ndarray:
    """(N_MELS, N_FFT//2+1) triangular mel filters, 80 Hz .. 7.6 kHz (capped at Nyquist)."""
    def mel(f):
        return 2595.0 * np.log10(1.0 + f / 700.0)

    def hz(m):
        return 700.0 * (10.0 ** (m / 2595.0) - 1.0)
    top = min(7600.0, sample_rate / 2 - 100.0)
    edges = hz(np.linspace(mel(80.0), mel(top), N_MELS + 2))
    freqs = np.fft.rfftfreq(N_FFT, 1.0 / sample_rate)
    lo, mid, hi = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    fb = np.maximum(0.0, np.minimum((freqs - lo) / (mid - lo), (hi - freqs) / (hi - mid)))
    return (fb / np.maximum(fb.sum(axis=1, keepdims=True), 1e-9)).astype(np.float32)


@lru_cache(maxsize=1)
def _dct_matrix() -> np.ndarray:
    """(N_CEPS-1, N_MELS) DCT-II rows 1..12 (c0 is replaced by the frame level)."""
    n = np.arange(N_MELS)
    k = np.arange(1, N_CEPS)[:, None]
    return (np.cos(np.pi * k * (n + 0.5) / N_MELS) * np.sqrt(2.0 / N_MELS)).astype(np.float32)


def _frames(x: np.ndarray, size: int, hop: int, n: int) -> np.ndarray:
    """(n, size) windows of x starting at 0, hop, 2·hop...; x zero-padded at the end."""
    need = (n - 1) * hop + size
    if x.size < need:
        x = np.pad(x, (0, need - x.size))
    return np.lib.stride_tricks.sliding_window_view(x, size)[::hop][:n]


def cepstra(samples: np.ndarray, sample_rate: int = ANALYSIS_RATE) -> np.ndarray:
    """Mono float signal → (H, 13) float32 features every 10 ms: c1..c12 of the log-mel spectrum and
    the window's RMS level in dBFS / 20 (H = ceil(N / HOP)). Window h is centred at h·10 ms."""
    if sample_rate != ANALYSIS_RATE:
        samples, sample_rate = resample(samples, sample_rate, ANALYSIS_RATE), ANALYSIS_RATE
    x = np.asarray(samples, dtype=np.float32)
    n = max(1, int(np.ceil(x.size / HOP)))
    padded = np.pad(x, (WINDOW // 2, WINDOW))
    frames = _frames(padded, WINDOW, HOP, n)
    level_db = 10.0 * np.log10(np.mean(frames.astype(np.float64) ** 2, axis=1) + 1e-10)
    emph = frames[:, 1:] - 0.97 * frames[:, :-1]
    spec = np.abs(np.fft.rfft(emph * np.hanning(WINDOW - 1).astype(np.float32), N_FFT)) ** 2
    logmel = np.log(spec @ _mel_basis(sample_rate).T + 1e-8)
    ceps = logmel @ _dct_matrix().T
    return np.concatenate([ceps, (level_db / 20.0)[:, None]], axis=1).astype(np.float32)


def stack_context(feats: np.ndarray) -> np.ndarray:
    """(H, F) → (H, F·len(CONTEXT)): each hop with its neighbours at CONTEXT offsets (edge-padded)."""
    h = feats.shape[0]
    idx = np.clip(np.arange(h)[:, None] + np.array(CONTEXT)[None, :], 0, h - 1)
    return feats[idx].reshape(h, -1)


# -- classifier -------------------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)   # holds arrays: compare by identity
class VowelModel:
    """Standardise → dense(tanh) → dense → softmax. Arrays float32; mean/scale (D,), w1 (D, H), w2 (H, 6)."""
    mean: np.ndarray
    scale: np.ndarray
    w1: np.ndarray
    b1: np.ndarray
    w2: np.ndarray
    b2: np.ndarray

    def probs(self, x: np.ndarray) -> np.ndarray:
        """(N, D) stacked features → (N, 6) probabilities over VOWELS."""
        h = np.tanh(((x - self.mean) / self.scale) @ self.w1 + self.b1)
        z = h @ self.w2 + self.b2
        z = np.exp(z - z.max(axis=1, keepdims=True))
        return z / z.sum(axis=1, keepdims=True)

    def to_npz_bytes(self) -> bytes:
        import io
        buf = io.BytesIO()
        np.savez(buf, **{k: getattr(self, k).astype(np.float32) for k in ("mean", "scale", "w1", "b1", "w2", "b2")},
                 vowels=np.array(VOWELS), context=np.array(CONTEXT))
        return buf.getvalue()


def load_vowel_model(path=None) -> VowelModel:
    """Read classifier weights (plain npz arrays, no pickle). Default: the packaged file."""
    try:
        data = np.load(default_weights_path() if path is None else path, allow_pickle=False)
        model = VowelModel(*(np.asarray(data[k], dtype=np.float32) for k in ("mean", "scale", "w1", "b1", "w2", "b2")))
        if tuple(str(v) for v in data["vowels"]) != VOWELS or tuple(int(c) for c in data["context"]) != CONTEXT:
            raise AudioError(f"{path or WEIGHTS_FILE}: lip-sync weights were fitted for other vowels/context")
    except (OSError, KeyError, ValueError) as e:
        raise AudioError(f"{path or WEIGHTS_FILE}: cannot read lip-sync classifier weights ({e})") from e
    return model


def default_weights_path() -> Path:
    """Where the packaged classifier weights live (src/kyara/data/lipsync_vowels.npz)."""
    return Path(__file__).resolve().parent.parent / "data" / WEIGHTS_FILE


@lru_cache(maxsize=1)
def _default_model() -> VowelModel:
    return load_vowel_model()


# -- analysis ---------------------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)   # holds arrays: compare by identity
class AudioTrack:
    """Per-video-frame audio description; frame i covers [i/fps, (i+1)/fps) seconds.

    vowel: (T,) int64 index into VOWELS; vowel_probs: (T, 6) float32 rows summing to 1;
    loudness: (T,) float32 in [0, 1]; pitch_hz: (T,) float32, 0 where unvoiced.
    """
    fps: float
    vowel: np.ndarray
    vowel_probs: np.ndarray
    loudness: np.ndarray
    pitch_hz: np.ndarray
    duration_s: float

    def __len__(self) -> int:
        return int(self.vowel.shape[0])

    def vowel_names(self) -> list[str]:
        return [VOWELS[i] for i in self.vowel]


def hop_probs(samples: np.ndarray, sample_rate: int, model: VowelModel | None = None) -> tuple[np.ndarray, np.ndarray]:
    """→ ((H, 6) vowel probabilities every 10 ms, (H,) window level in dBFS). Gate applied."""
    feats = cepstra(samples, sample_rate)
    probs = (model or _default_model()).probs(stack_context(feats)).astype(np.float32)
    level_db = feats[:, -1] * 20.0
    quiet = level_db < GATE_DBFS
    probs[quiet] = 0.0
    probs[quiet, CLOSED] = 1.0
    return probs, level_db


def analyze(samples: np.ndarray, sample_rate: int, fps: float = 30.0, model: VowelModel | None = None) -> AudioTrack:
    """Mono samples (N,) float in [-1, 1] → AudioTrack with ceil(duration·fps) frames.

    Each frame averages the 10 ms classifier outputs whose window centres fall inside it.
    Offline and causal-enough for live use: the classifier looks 60 ms ahead.
    """
    if fps <= 0:
        raise AudioError(f"fps must be positive, got {fps}")
    x = np.asarray(samples, dtype=np.float32)
    if x.ndim != 1:
        raise AudioError(f"analyze expects mono samples of shape (N,), got {x.shape}")
    if sample_rate != ANALYSIS_RATE:
        x = resample(x, sample_rate, ANALYSIS_RATE)
    duration = x.size / ANALYSIS_RATE
    n_frames = max(1, int(np.ceil(duration * fps - 1e-9)))
    probs, _ = hop_probs(x, ANALYSIS_RATE, model)
    hop_t = np.arange(probs.shape[0]) * (HOP / ANALYSIS_RATE)
    frame_of_hop = np.minimum((hop_t * fps).astype(np.int64), n_frames - 1)
    sums = np.zeros((n_frames, len(VOWELS)), np.float64)
    np.add.at(sums, frame_of_hop, probs)
    counts = np.bincount(frame_of_hop, minlength=n_frames)[:, None].astype(np.float64)
    frame_probs = np.where(counts > 0, sums / np.maximum(counts, 1), 0.0)
    frame_probs[counts[:, 0] == 0, CLOSED] = 1.0  # fps above 100: a frame with no hop is silent
    frame_probs = frame_probs.astype(np.float32)

    # Loudness and pitch on 40 ms windows centred in each frame.
    win = int(0.04 * ANALYSIS_RATE)
    centres = ((np.arange(n_frames) + 0.5) / fps * ANALYSIS_RATE).astype(np.int64)
    padded = np.pad(x, (win // 2, win))
    idx = np.clip(centres, 0, x.size)[:, None] + np.arange(win)[None, :]
    frames = padded[idx]
    rms_db = 10.0 * np.log10(np.mean(frames.astype(np.float64) ** 2, axis=1) + 1e-10)
    loudness = np.clip((rms_db - LOUD_FLOOR_DBFS) / (LOUD_FULL_DBFS - LOUD_FLOOR_DBFS), 0.0, 1.0).astype(np.float32)
    pitch = _pitch(frames, ANALYSIS_RATE)
    pitch[rms_db < GATE_DBFS] = 0.0
    return AudioTrack(fps=float(fps), vowel=frame_probs.argmax(axis=1).astype(np.int64), vowel_probs=frame_probs,
                      loudness=loudness, pitch_hz=pitch, duration_s=float(duration))


def _pitch(frames: np.ndarray, sample_rate: int) -> np.ndarray:
    """(T, W) windows → (T,) float32 f0 in Hz by normalised autocorrelation; 0 where unvoiced."""
    t, w = frames.shape
    x = frames - frames.mean(axis=1, keepdims=True)
    x = x * np.hanning(w)[None, :]
    n = 1 << int(np.ceil(np.log2(2 * w)))
    spec = np.fft.rfft(x, n, axis=1)
    ac = np.fft.irfft(np.abs(spec) ** 2, n, axis=1)[:, :w]
    # Divide by the window's own autocorrelation so long lags are not penalised (Boersma 1993).
    win_ac = np.fft.irfft(np.abs(np.fft.rfft(np.hanning(w), n)) ** 2, n)[:w]
    ac = ac / np.maximum(ac[:, :1], 1e-12) / np.maximum(win_ac / win_ac[0], 1e-3)
    lo, hi = int(sample_rate / PITCH_MAX_HZ), min(int(sample_rate / PITCH_MIN_HZ), w - 2)
    seg = ac[:, lo - 1:hi + 2]
    local_max = (seg[:, 1:-1] >= seg[:, :-2]) & (seg[:, 1:-1] >= seg[:, 2:])
    seg = seg[:, 1:-1]
    # Octave guard: the shortest lag whose peak is within 10% of the best, not the best itself
    # (a period's multiples score almost as high, which would halve f0).
    good = local_max & (seg >= 0.9 * seg.max(axis=1, keepdims=True))
    k = np.where(good.any(axis=1), good.argmax(axis=1), seg.argmax(axis=1))
    peak = seg[np.arange(t), k]
    lag = (k + lo).astype(np.float64)
    # Parabolic interpolation around the peak for sub-sample lag.
    km = np.clip(k + lo, 1, w - 2)
    a, b, c = ac[np.arange(t), km - 1], ac[np.arange(t), km], ac[np.arange(t), km + 1]
    denom = a - 2 * b + c
    lag = lag + np.where(np.abs(denom) > 1e-12, 0.5 * (a - c) / np.where(denom == 0, 1, denom), 0.0)
    f0 = np.where(peak >= VOICING_THRESHOLD, sample_rate / np.maximum(lag, 1.0), 0.0)
    return f0.astype(np.float32)


# -- mouth ------------------------------------------------------------------------------------------
VOWEL_SHARPNESS = 2.0   # >1 lets the most likely vowel dominate the shape instead of a muddy blend
LOUDNESS_GAMMA = 0.7    # <1 opens the mouth more at moderate loudness


def mouth_targets(vowel_probs: np.ndarray, loudness: np.ndarray) -> np.ndarray:
    """(T, 6) probabilities + (T,) loudness → (T, 5) unsmoothed mouth values (MOUTH_PARAMETERS order).

    Openness = (1 − P(closed)) · loudness^0.7; it is shared among the five vowel shapes in
    proportion to P(vowel)², so each row sums to at most 1.
    """
    p = np.asarray(vowel_probs, dtype=np.float64)
    share = p[:, :CLOSED] ** VOWEL_SHARPNESS
    share = share / np.maximum(share.sum(axis=1, keepdims=True), 1e-12)
    openness = (1.0 - p[:, CLOSED]) * np.clip(np.asarray(loudness, np.float64), 0.0, 1.0) ** LOUDNESS_GAMMA
    return np.clip(share * openness[:, None], 0.0, 1.0)


class MouthFilter:
    """Attack/release smoothing of mouth values, one step per frame (used live and offline).

    Rising values follow with time constant smoothing_s / 2 (fast attack), falling ones with
    smoothing_s (slower release), which removes single-frame flicker without lagging onsets much.
    """

    def __init__(self, smoothing_s: float = 0.06) -> None:
        if smoothing_s < 0:
            raise ValueError(f"smoothing_s must be >= 0, got {smoothing_s}")
        self.smoothing_s = float(smoothing_s)
        self.state = np.zeros(len(MOUTH_PARAMETERS))

    def step(self, target: np.ndarray, dt: float) -> np.ndarray:
        target = np.asarray(target, dtype=np.float64)
        if self.smoothing_s == 0 or dt <= 0:
            self.state = target.copy() if self.smoothing_s == 0 else self.state
            return self.state
        attack = 1.0 - np.exp(-dt / (self.smoothing_s / 2))
        release = 1.0 - np.exp(-dt / self.smoothing_s)
        alpha = np.where(target > self.state, attack, release)
        self.state = self.state + alpha * (target - self.state)
        return self.state


def mouth_track(track: AudioTrack, smoothing_s: float = 0.06) -> list[dict[str, float]]:
    """AudioTrack → one {mouth_aaa, mouth_iii, mouth_uuu, mouth_eee, mouth_ooo} dict per frame, in [0, 1].

    Coarticulation: targets are read smoothing_s / 2 ahead (the mouth starts moving before the
    sound, as real speakers do, and the attack delay is compensated), then attack/release
    filtered. smoothing_s = 0 gives the raw per-frame targets. Silence gives exactly 0.
    """
    targets = mouth_targets(track.vowel_probs, track.loudness)
    n = targets.shape[0]
    dt = 1.0 / track.fps
    if smoothing_s > 0 and n:
        ahead = int(round(smoothing_s / 2 * track.fps))
        if ahead:
            targets = np.concatenate([targets[ahead:], np.repeat(targets[-1:], min(ahead, n), axis=0)])[:n]
    filt = MouthFilter(smoothing_s)
    out = []
    for t in range(n):
        v = np.clip(filt.step(targets[t], dt), 0.0, 1.0)
        v[v < 1e-4] = 0.0   # no denormal-ish residue after the release: silence is exactly closed
        out.append({name: float(v[k]) for k, name in enumerate(MOUTH_PARAMETERS)})
    return out


# -- live sources -----------------------------------------------------------------------------------
SOURCE_RATE_HZ = 100.0      # AudioFileSource precomputes mouth values on a 10 ms grid
END_HOLD_S = 0.5            # after the file ends, report a closed mouth this long, then nothing


class AudioFileSource(PoseSource):
    """Plays an audio file's mouth movement in real time: latest(now) gives the mouth values at
    `now − start time` (time.monotonic() seconds). The sound itself is not played (no audio
    device is assumed); pair it with a player that starts at the same moment.

    The file is read in __init__ (so a bad path fails early) and analysed in start().
    loop=True restarts at the end; otherwise the mouth closes and, END_HOLD_S later, latest()
    returns None so the mixer can hand the mouth back to other sources.
    """

    name = "audio"

    def __init__(self, path, smoothing_s: float = 0.06, loop: bool = False) -> None:
        self.path = Path(path)
        self.samples, self.sample_rate = load_audio(self.path)
        self.smoothing_s = smoothing_s
        self.loop = loop
        self._frames: list[dict[str, float]] | None = None
        self._t0: float | None = None
        self._lock = threading.Lock()

    def start(self) -> None:
        with self._lock:
            if self._t0 is not None:
                return
            if self._frames is None:
                track = analyze(self.samples, self.sample_rate, fps=SOURCE_RATE_HZ)
                self._frames = mouth_track(track, self.smoothing_s)
            self._t0 = time.monotonic()

    def stop(self) -> None:
        with self._lock:
            self._t0 = None

    @property
    def duration_s(self) -> float:
        return self.samples.size / self.sample_rate

    def latest(self, now: float) -> SourceSample | None:
        t0, frames = self._t0, self._frames
        if t0 is None or not frames:
            return None
        t = now - t0
        if t < 0:
            return None
        if self.loop:
            t = t % max(self.duration_s, 1e-3)
        i = int(t * SOURCE_RATE_HZ)
        if i >= len(frames):
            if t > self.duration_s + END_HOLD_S:
                return None
            return SourceSample.from_dict(dict.fromkeys(MOUTH_PARAMETERS, 0.0), now)
        return SourceSample.from_dict(frames[i], now)

    def stats(self) -> dict:
        return {"file": str(self.path), "duration_s": self.duration_s, "playing": self._t0 is not None}


class MicrophoneSource(PoseSource):
    """Live microphone → mouth values, through the optional `sounddevice` package (PortAudio).

    An input stream at 16 kHz fills a 0.5 s ring buffer; latest(now) classifies the newest
    complete 10 ms hop (the classifier looks 60 ms ahead, so values lag the voice by ~70 ms) and
    runs the same attack/release filter as mouth_track. start() raises AudioError if sounddevice,
    PortAudio or an input device is missing.
    """

    name = "microphone"
    BUFFER_S = 0.5

    def __init__(self, device=None, smoothing_s: float = 0.06) -> None:
        self.device = device
        self._filter = MouthFilter(smoothing_s)
        self._buf = np.zeros(int(self.BUFFER_S * ANALYSIS_RATE), np.float32)
        self._written = 0
        self._last_input: float | None = None
        self._last_now: float | None = None
        self._stream = None
        self._lock = threading.Lock()
        self._overflows = 0

    def start(self) -> None:
        if self._stream is not None:
            return
        try:
            import sounddevice as sd
        except ImportError as e:
            raise AudioError("microphone input needs the `sounddevice` package (pip install sounddevice)") from e
        except OSError as e:  # raised at import when libportaudio is missing
            raise AudioError(f"microphone input needs PortAudio (apt-get install libportaudio2): {e}") from e
        try:
            devices = sd.query_devices()
            if not any(d.get("max_input_channels", 0) > 0 for d in devices):
                raise AudioError("no audio input device found (sounddevice lists none)")
            stream = sd.InputStream(samplerate=ANALYSIS_RATE, channels=1, dtype="float32", device=self.device,
                                    blocksize=HOP, callback=self._on_audio)
            stream.start()
        except AudioError:
            raise
        except Exception as e:  # PortAudioError, ValueError for a bad device
            raise AudioError(f"cannot open microphone {self.device if self.device is not None else '(default)'}: {e}") from e
        self._stream = stream

    def stop(self) -> None:
        stream, self._stream = self._stream, None
        if stream is not None:
            stream.stop()
            stream.close()

    def _on_audio(self, indata, frames, time_info, status) -> None:
        if status:
            self._overflows += 1
        self.feed(indata[:, 0], time.monotonic())

    def feed(self, block: np.ndarray, arrival: float) -> None:
        """Append mono 16 kHz samples (called by the audio thread; public for tests and other inputs)."""
        block = np.asarray(block, dtype=np.float32)[-self._buf.size:]
        with self._lock:
            self._buf = np.roll(self._buf, -block.size)
            self._buf[-block.size:] = block
            self._written += block.size
            self._last_input = arrival
        self._input_arrived(arrival)

    def latest(self, now: float) -> SourceSample | None:
        with self._lock:
            if self._last_input is None or self._written < WINDOW:
                return None
            window = self._buf[-int(0.2 * ANALYSIS_RATE):].copy()
            arrival = self._last_input
        probs, level_db = hop_probs(window, ANALYSIS_RATE)
        # Newest hop whose +60 ms context and window are complete.
        k = max(0, probs.shape[0] - 1 - (max(CONTEXT) + WINDOW // HOP))
        loud = np.clip((level_db[k] - LOUD_FLOOR_DBFS) / (LOUD_FULL_DBFS - LOUD_FLOOR_DBFS), 0.0, 1.0)
        target = mouth_targets(probs[k:k + 1], np.array([loud]))[0]
        dt = 0.0 if self._last_now is None else min(now - self._last_now, 0.2)
        self._last_now = now
        values = np.clip(self._filter.step(target, dt) if dt > 0 else target, 0.0, 1.0)
        return SourceSample.from_dict(dict(zip(MOUTH_PARAMETERS, values.tolist())), arrival)

    def stats(self) -> dict:
        return {"last_packet_time": self._last_input, "overflows": self._overflows, "running": self._stream is not None}
