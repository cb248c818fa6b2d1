"""Text → speech WAV with phoneme timings, from the espeak-ng library itself (offline).

Timings come from espeak-ng's own synthesis events (``espeakEVENT_PHONEME``), read through ctypes
from ``libespeak-ng.so.1`` (Debian package ``espeak-ng``, 1.51). Each event carries the sample index
at which espeak-ng starts that phoneme in the audio it produces, so the spans line up with the WAV
exactly; no audio analysis is involved. (``espeak-ng --pho`` only works with MBROLA voices, and
``-x``/``--ipa`` print phonemes without times, so the CLI cannot give these.)

Phoneme names are IPA as the chosen voice realises them (espeak-ng's ``espeakINITIALIZE_PHONEME_IPA``
mode: "h", "ə", "oʊ", "ɑː"; "_" for a pause), so "lot" is "ɑː" in en-us but "ɒ" in en-gb.
:func:`phoneme_vowel` maps each to one of ``kyara.drive.audio.VOWELS`` (table in docs/audio.md).
The IPA string is cut at espeak-ng's 8-byte event field (long clusters may be truncated).

Every synthesis runs on a freshly loaded, freshly initialised copy of the library, so its audio and
timings do not depend on what was spoken before. espeak-ng 1.51 keeps hidden C state between
utterances that no API call resets: statics in its wave generator and synthesiser (echo tail,
pitch flutter, filter memories) and libc ``rand()`` for breath noise. With one long-lived copy, "?"
lasted 0.008 s in a fresh process, 0.021 s after any earlier utterance and 0.049 s after an "+f3"
one (its echo tail). Unloading the library (``dlclose``) drops all of that state; re-initialising a
loaded copy does not (its statics survive, and 1.51 hangs in espeak_Initialize after
espeak_Terminate). Load + initialise + unload costs about 9 ms per call (2-core shared CPU).
"""
from __future__ import annotations

import _ctypes  # dlopen/dlclose: unloading libespeak-ng is the only way to reset its hidden state
import ctypes
import ctypes.util
import io
import os
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from kyara.errors import KyaraError
from kyara.image import atomic_write_bytes


class TTSError(KyaraError):
    """espeak-ng is missing, the voice is unknown, or synthesis failed."""


@dataclass(frozen=True)
class PhonemeSpan:
    """One phoneme as espeak-ng timed it: [start_s, end_s) in the written WAV; vowel ∈ VOWELS."""
    phoneme: str
    start_s: float
    end_s: float
    vowel: str


# espeak-ng speak_lib.h constants (stable C API since espeak 1.4x).
_AUDIO_OUTPUT_SYNCHRONOUS = 2
_INIT_PHONEME_EVENTS = 0x0001
_INIT_PHONEME_IPA = 0x0002   # phoneme events carry IPA (as realised by the voice), not mnemonics
_INIT_DONT_EXIT = 0x8000
_EVENT_LIST_TERMINATED = 0
_EVENT_PHONEME = 7
_EVENT_SAMPLERATE = 8
_PARAM_RATE = 1
_POS_CHARACTER = 1
_CHARS_UTF8 = 1
_MIN_RATE_WPM, _MAX_RATE_WPM = 80, 450


class _Voice(ctypes.Structure):
    _fields_ = [("name", ctypes.c_char_p), ("languages", ctypes.c_char_p), ("identifier", ctypes.c_char_p),
                ("gender", ctypes.c_ubyte), ("age", ctypes.c_ubyte), ("variant", ctypes.c_ubyte),
                ("xx1", ctypes.c_ubyte), ("score", ctypes.c_int), ("spare", ctypes.c_void_p)]


class _EventId(ctypes.Union):
    _fields_ = [("number", ctypes.c_int), ("name", ctypes.c_char_p), ("string", ctypes.c_char * 8)]


class _Event(ctypes.Structure):
    _fields_ = [("type", ctypes.c_int), ("unique_identifier", ctypes.c_uint), ("text_position", ctypes.c_int),
                ("length", ctypes.c_int), ("audio_position", ctypes.c_int), ("sample", ctypes.c_int),
                ("user_data", ctypes.c_void_p), ("id", _EventId)]


_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.POINTER(_Event))

# espeak-ng keeps global state (one voice, one callback), so every load/synthesis/unload holds this lock.
_LOCK = threading.Lock()
_STATE: dict[str, str] = {}


def _library_name() -> str:
    """The name to dlopen, looked up once (find_library runs ldconfig)."""
    if "name" not in _STATE:
        _STATE["name"] = ctypes.util.find_library("espeak-ng") or "libespeak-ng.so.1"
    return _STATE["name"]


def _resident(name: str) -> bool:
    """True when the library is already mapped into this process (RTLD_NOLOAD loads nothing)."""
    try:
        handle = _ctypes.dlopen(name, os.RTLD_NOLOAD | os.RTLD_NOW)
    except OSError:
        return False
    _ctypes.dlclose(handle)
    return True


def _load():
    """dlopen a fresh copy of libespeak-ng and initialise it → (lib, sample_rate); pair with _unload."""
    name = _library_name()
    if _resident(name):
        # A copy that is still mapped keeps the previous utterance's state, and espeak-ng 1.51 hangs
        # when initialised again after espeak_Terminate: refuse rather than give order-dependent audio.
        raise TTSError(f"{name} is still loaded by something else in this process; kyara needs to load it "
                       "afresh for every synthesis (its hidden state would leak between utterances)")
    try:
        lib = ctypes.CDLL(name)
    except OSError as e:
        raise TTSError(f"espeak-ng library not found ({name}): install it with `apt-get install espeak-ng`") from e
    lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
    lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
    lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
    lib.espeak_SetSynthCallback.argtypes = [_CALLBACK]
    lib.espeak_Synth.argtypes = [ctypes.c_char_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int, ctypes.c_uint,
                                 ctypes.c_uint, ctypes.c_void_p, ctypes.c_void_p]
    rate = lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, 0, None, _INIT_PHONEME_EVENTS | _INIT_PHONEME_IPA | _INIT_DONT_EXIT)
    if rate <= 0:
        _ctypes.dlclose(lib._handle)  # failed before starting its worker thread: nothing to terminate
        raise TTSError("espeak-ng failed to initialise (espeak-ng-data missing?)")
    return lib, rate


def _unload(lib) -> None:
    """Terminate espeak-ng (joins its worker thread, frees its data) and unmap the library."""
    lib.espeak_Terminate()
    _ctypes.dlclose(lib._handle)


def _set_voice_by_language(lib, voice: str) -> bool:
    """Fallback for language codes that are not voice names (e.g. "en-gb"); no "+variant" allowed."""
    if "+" in voice:
        return False
    spec = _Voice(name=None, languages=voice.encode("utf-8"), identifier=None, gender=0, age=0, variant=0)
    if lib.espeak_SetVoiceByProperties(ctypes.byref(spec)) != 0:
        return False
    # espeak-ng picks the closest language ("no-such" → Norwegian "no"); accept only an exact match.
    lib.espeak_GetCurrentVoice.restype = ctypes.POINTER(_Voice)
    current = lib.espeak_GetCurrentVoice()
    # `languages` starts with (priority byte, name, NUL); ctypes hands back that first entry.
    first = current.contents.languages if current else None
    return bool(first) and first[1:].decode("ascii", "replace").lower() == voice.lower()


def _libc():
    """The C library of this process (for srand)."""
    libc = ctypes.CDLL(None)
    libc.srand.argtypes = [ctypes.c_uint]
    return libc


def espeak_available() -> bool:
    """True when libespeak-ng can be loaded and initialised here."""
    try:
        with _LOCK:
            _unload(_load()[0])
    except TTSError:
        return False
    return True


def synthesize(text: str, voice: str = "en-us", rate_wpm: int = 160) -> tuple[np.ndarray, int, list[tuple[str, int]]]:
    """Run espeak-ng on text → (samples int16 (N,), sample_rate, [(phoneme, start_sample), ...]).

    Pauses are kept as "_"; the list is in time order.
    """
    if not text.strip():
        raise TTSError("nothing to speak: text is empty")
    if not _MIN_RATE_WPM <= int(rate_wpm) <= _MAX_RATE_WPM:
        raise TTSError(f"rate_wpm={rate_wpm} outside [{_MIN_RATE_WPM}, {_MAX_RATE_WPM}]")
    chunks: list[np.ndarray] = []
    events: list[tuple[str, int]] = []

    def on_audio(wav, n, ev):
        if n > 0:
            chunks.append(np.ctypeslib.as_array(wav, shape=(n,)).copy())
        i = 0
        while ev[i].type != _EVENT_LIST_TERMINATED:
            if ev[i].type == _EVENT_PHONEME:
                name = bytes(ev[i].id.string).split(b"\0")[0].decode("utf-8", "replace") or "_"  # "" = pause
                if not name.startswith("("):  # "(en)", "(ja)": language-switch markers, not sounds
                    events.append((name, int(ev[i].sample)))
            i += 1
        return 0

    callback = _CALLBACK(on_audio)  # must stay referenced while espeak runs
    data = text.encode("utf-8")
    with _LOCK:
        lib, rate = _load()
        try:
            # Breath noise ("+f3" and other variants) comes from libc rand(); seed it as a fresh process
            # has it (C standard: srand(1)) so variant audio repeats too. kyara uses no other rand().
            _libc().srand(1)
            lib.espeak_SetSynthCallback(callback)
            if lib.espeak_SetVoiceByName(voice.encode("utf-8")) != 0 and not _set_voice_by_language(lib, voice):
                raise TTSError(f"espeak-ng voice {voice!r} not found (see `espeak-ng --voices`; variants as 'en-us+f3')")
            lib.espeak_SetParameter(_PARAM_RATE, int(rate_wpm), 0)
            if lib.espeak_Synth(data, len(data) + 1, 0, _POS_CHARACTER, 0, _CHARS_UTF8, None, None) != 0:
                raise TTSError(f"espeak-ng failed to synthesise {text[:40]!r}")
            lib.espeak_Synchronize()
        finally:
            _unload(lib)
    samples = np.concatenate(chunks) if chunks else np.zeros(0, np.int16)
    return samples.astype(np.int16), int(rate), events


# IPA vowel letter → mouth class. The first vowel letter of a phoneme decides, so diphthongs take
# their first (longest, most open) part: aɪ, aʊ → A; eɪ → E; oʊ, ɔɪ → O; ɪə → I. Schwa-like
# unrounded central vowels (ə, ɐ, ʌ) and æ → A; r-coloured / central rounded ones (ɚ, ɜ, ɝ, ʉ) and
# front rounded y, ʏ → U (lips forward); ø, œ → O. Everything else (consonants, glides w/j,
# pauses) → closed.
_VOWEL_BY_IPA = {
    **dict.fromkeys("aɑæɐʌəäɶ", "A"),
    **dict.fromkeys("iɪɨ", "I"),
    **dict.fromkeys("uʊɯʉɜɝɚɞyʏ", "U"),
    **dict.fromkeys("eɛɘ", "E"),
    **dict.fromkeys("oɔɒøœɤɵ", "O"),
}


def phoneme_vowel(phoneme: str) -> str:
    """espeak-ng IPA phoneme ("ɑː", "oʊ", "t", "_"...) → one of VOWELS ("A","I","U","E","O","closed")."""
    for ch in phoneme:
        if ch in _VOWEL_BY_IPA:
            return _VOWEL_BY_IPA[ch]
        if ch not in "ˈˌ%=ːˑ:'":   # a consonant letter comes first: the phoneme is a consonant
            return "closed"
    return "closed"


def phoneme_spans(events: list[tuple[str, int]], n_samples: int, sample_rate: int) -> list[PhonemeSpan]:
    """(phoneme, start_sample) events → spans ending where the next phoneme (or the audio) starts."""
    spans = []
    for k, (ph, start) in enumerate(events):
        end = events[k + 1][1] if k + 1 < len(events) else n_samples
        end = max(end, start)
        spans.append(PhonemeSpan(ph, start / sample_rate, end / sample_rate, phoneme_vowel(ph)))
    return spans


def speak_to_wav(text: str, path, voice: str = "en-us", rate_wpm: int = 160) -> list[PhonemeSpan]:
    """Synthesise text with espeak-ng into a 16-bit mono WAV at path (atomic) → its phoneme spans.

    Spans tile the audio from the first phoneme on; times are seconds in the written file.
    """
    import soundfile as sf  # `audio` extra

    samples, rate, events = synthesize(text, voice, rate_wpm)
    if samples.size == 0:
        raise TTSError(f"espeak-ng produced no audio for {text[:40]!r} with voice {voice!r}")
    buf = io.BytesIO()
    sf.write(buf, samples, rate, format="WAV", subtype="PCM_16")
    atomic_write_bytes(Path(path), buf.getvalue())
    return phoneme_spans(events, samples.size, rate)
