"""espeak-ng synthesis (kyara.drive.tts): every call is independent of the calls made before it.

espeak-ng 1.51 keeps hidden C state between utterances (echo tail, pitch flutter, filter memories,
libc rand() for breath noise), so before the fix a "+f3" voice changed what a later plain "en-us"
call produced, and `kyara speak --text ?` measured 0.049 s instead of 0.008 s after test_drive_audio.
"""
import numpy as np
import pytest

from kyara.drive import tts

needs_espeak = pytest.mark.skipif(not tts.espeak_available(), reason="espeak-ng not installed (apt-get install -y espeak-ng)")


def _assert_same(a, b):
    """Two synthesize() results → identical phoneme timings, sample rate and samples."""
    samples_a, rate_a, events_a = a
    samples_b, rate_b, events_b = b
    assert events_b == events_a
    assert rate_b == rate_a
    np.testing.assert_array_equal(samples_b, samples_a)


@needs_espeak
def test_plain_voice_is_unchanged_by_a_variant_spoken_in_between():
    text = "The boy was there when the sun rose."
    first = tts.synthesize(text, "en-us")
    variant = tts.synthesize(text, "en-us+f3")  # f3: own pitch and formants, echo, breath noise
    again = tts.synthesize(text, "en-us")
    assert not np.array_equal(variant[0][:first[0].size], first[0][:variant[0].size]), "f3 was not applied"
    _assert_same(first, again)
    # The variant repeats exactly too: its breath noise does not continue an earlier random sequence.
    _assert_same(variant, tts.synthesize(text, "en-us+f3"))


@needs_espeak
def test_silent_text_is_not_padded_by_an_earlier_echo():
    first = tts.synthesize("?", "en-us")
    tts.synthesize("Hello there.", "en-us+f3")  # f3's echo used to leave a tail for the next utterance
    again = tts.synthesize("?", "en-us")
    _assert_same(first, again)
