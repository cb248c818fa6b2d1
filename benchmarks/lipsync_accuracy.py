"""Lip-sync accuracy: kyara.drive.audio.analyze vs espeak-ng's own phoneme timings.

    python benchmarks/lipsync_accuracy.py            # evaluate the packaged classifier, print markdown
    python benchmarks/lipsync_accuracy.py --fit      # refit src/kyara/data/lipsync_vowels.npz, then evaluate

Truth: espeak-ng (libespeak-ng, phoneme events) speaks each sentence; every phoneme is mapped to a
vowel class by kyara.drive.tts.phoneme_vowel (table in docs/audio.md); the truth of video frame i
(30 fps) is the class of the phoneme playing at the frame's centre (i + 0.5) / 30 s.

Held out: fitting uses FIT_VOICES speaking randomly generated word strings (FIT_WORDS, seeded);
evaluation uses EVAL_VOICES (voice + variant pairs never used for fitting) speaking EVAL_SENTENCES
(Harvard sentences; none of them is in the fitting text), plus a Spanish voice (a language never
used for fitting) as an extra row.
"""
from __future__ import annotations

import argparse
import platform
import sys
import time

import numpy as np

from kyara.drive import audio as A
from kyara.drive.tts import phoneme_spans, synthesize
from kyara.image import atomic_write_bytes

FPS = 30.0

FIT_VOICES = ("en-us+m2", "en-us+f2", "en-gb-x-rp+m4", "en+f4", "en-029+m1", "en-us+f5", "en+m7", "en-us+f1",
              "en-us+klatt", "en+klatt2", "en-us+klatt4", "en+klatt6")   # klatt*: espeak-ng's other glottal source
EVAL_VOICES = ("en-us", "en-us+f3", "en-gb-scotland+m3", "en-gb-x-gbcwmd+f5")
EXTRA_VOICES = (("es", "es"),)   # (voice, sentence set): a language never seen in fitting

FIT_WORDS = """
time year people way day man thing woman life child world school state family student group country
problem hand part place case week company system program question work government number night point
home water room mother area money story fact month lot right study book eye job word business issue
side kind head house service friend father power hour game line end member law car city community name
president team minute idea kid body information back parent face others level office door health person
art war history party result change morning reason research girl guy moment air teacher force education
foot boy age policy process music market sense nation plan college interest death experience effect use
class control care field development role effort rate heart drug show leader light voice wife police
mind price report decision son view relationship town road arm difference value building action model
season society tax director position player record paper space ground form event official matter center
couple site project activity star table need court oil situation cost industry figure street image phone
data picture practice piece land product doctor wall patient worker news test movie north love support
technology step baby computer type attention film tree source organization hair window evidence
population site lake blue green yellow orange purple open close speak look see hear go come eat drink
sleep walk run jump sing play read write draw think know feel want give take make find tell ask seem
leave call keep let begin help talk turn start might hold bring happen carry sit stand lose pay meet
include continue set learn lead understand watch follow stop create spend grow offer remember consider
appear buy wait serve die send expect build stay fall cut reach kill remain suggest raise pass sell
require decide pull moon soon food boot cool shoe true few new two who you do room noon tooth glue
ocean oak own go no slow road home phone gold bowl coat boat snow note low bone stone hope
father calm palm car far star hard heart dark arm art bar mask path glass half laugh aunt
see tea key me be free green tree sea need feet keen seed peace leaf cheese beach deep sleep
red bed head said bread ten men pen left best rest dress test egg leg spell well tell bell
all ball call tall talk walk saw law raw jaw dog hot not top stop box rock clock shop job
""".split()

EVAL_SENTENCES = (
    "The birch canoe slid on the smooth planks.",
    "Glue the sheet to the dark blue background.",
    "It's easy to tell the depth of a well.",
    "These days a chicken leg is a rare dish.",
    "Rice is often served in round bowls.",
    "The juice of lemons makes fine punch.",
    "The box was thrown beside the parked truck.",
    "The hogs were fed chopped corn and garbage.",
    "Four hours of steady work faced us.",
    "A large size in stockings is hard to sell.",
    "The boy was there when the sun rose.",
    "A rod is used to catch pink salmon.",
)
ES_SENTENCES = (
    "La casa de mi abuela tiene un jardín muy bonito.",
    "Mañana vamos a comer pescado con arroz.",
    "El perro corre por el parque todos los días.",
    "Nosotros queremos aprender a tocar la guitarra.",
    "Hoy hace sol y el cielo está azul.",
)


def fit_texts(n: int, seed: int) -> list[str]:
    """Random word strings (5–11 words, occasional comma) from FIT_WORDS, seeded."""
    rng = np.random.default_rng(seed)
    texts = []
    for _ in range(n):
        words = list(rng.choice(FIT_WORDS, size=int(rng.integers(5, 12))))
        if rng.random() < 0.4:
            words[int(rng.integers(1, len(words) - 1))] += ","
        texts.append(" ".join(words) + rng.choice([".", "?", "!"]))
    return texts


def speak(text: str, voice: str, rate_wpm: int) -> tuple[np.ndarray, list]:
    """espeak-ng → (float32 samples at 16 kHz, phoneme spans)."""
    pcm, rate, events = synthesize(text, voice, rate_wpm)
    spans = phoneme_spans(events, pcm.size, rate)
    return A.resample(pcm.astype(np.float32) / 32768.0, rate, A.ANALYSIS_RATE), spans


def truth_at(spans, times: np.ndarray) -> np.ndarray:
    """Class index (into VOWELS) of the phoneme playing at each time; 'closed' outside all spans."""
    out = np.full(times.shape, A.CLOSED, np.int64)
    for s in spans:
        if s.end_s > s.start_s:
            out[(times >= s.start_s) & (times < s.end_s)] = A.VOWELS.index(s.vowel)
    return out


# -- fitting ----------------------------------------------------------------------------------------
def build_fit_set(n_texts: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    from scipy.signal import butter, lfilter

    rng = np.random.default_rng(seed + 1)
    xs, ys = [], []
    for vi, voice in enumerate(FIT_VOICES):
        for text in fit_texts(n_texts, seed + 100 * vi):
            x, spans = speak(text, voice, int(rng.integers(130, 200)))
            # Channel augmentation so the classifier keys on formants, not on espeak-ng's exact spectrum:
            # random spectral tilt (first-order filter), sometimes a telephone-like low-pass, then
            # level -24..+3 dB and a noise floor at -75..-50 dBFS.
            x = lfilter([1.0, -rng.uniform(-0.5, 0.6)], [1.0], x)
            if rng.random() < 0.3:
                x = lfilter(*butter(4, rng.uniform(3400, 7000) / (A.ANALYSIS_RATE / 2)), x)
            x = x / max(np.abs(x).max(), 1e-6) * 0.5
            x = x * 10 ** (rng.uniform(-24, 3) / 20)
            x = np.clip(x + rng.normal(0, 10 ** (rng.uniform(-75, -50) / 20), x.size), -1, 1).astype(np.float32)
            feats = A.cepstra(x, A.ANALYSIS_RATE)
            times = np.arange(feats.shape[0]) * A.HOP / A.ANALYSIS_RATE
            xs.append(A.stack_context(feats))
            ys.append(truth_at(spans, times))
    return np.concatenate(xs), np.concatenate(ys)


def fit(n_texts: int = 80, hidden: int = 96, epochs: int = 40, seed: int = 0) -> A.VowelModel:
    """Fit the MLP with torch (CPU) on FIT_VOICES × fit_texts; returns numpy weights."""
    import torch

    torch.set_num_threads(1)
    t0 = time.time()
    x, y = build_fit_set(n_texts, seed)
    print(f"fit set: {x.shape[0]} hops ({x.shape[0] / 100 / 60:.1f} min), built in {time.time() - t0:.0f}s",
          file=sys.stderr)
    mean, scale = x.mean(axis=0), x.std(axis=0) + 1e-6
    torch.manual_seed(seed)
    xt = torch.from_numpy((x - mean) / scale).float()
    yt = torch.from_numpy(y)
    net = torch.nn.Sequential(torch.nn.Linear(x.shape[1], hidden), torch.nn.Tanh(), torch.nn.Linear(hidden, len(A.VOWELS)))
    opt = torch.optim.Adam(net.parameters(), lr=3e-3, weight_decay=1e-5)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, epochs)
    for epoch in range(epochs):
        perm = torch.randperm(xt.shape[0])
        for i in range(0, xt.shape[0], 512):
            b = perm[i:i + 512]
            loss = torch.nn.functional.cross_entropy(net(xt[b]), yt[b])
            opt.zero_grad()
            loss.backward()
            opt.step()
        sched.step()
        print(f"epoch {epoch + 1}/{epochs} loss {loss.item():.3f}", file=sys.stderr, flush=True)
    with torch.no_grad():
        acc = (net(xt).argmax(1) == yt).float().mean().item()
    print(f"fit done in {time.time() - t0:.0f}s, training hop accuracy {acc:.3f}", file=sys.stderr)
    w1, b1 = net[0].weight.detach().numpy().T, net[0].bias.detach().numpy()
    w2, b2 = net[2].weight.detach().numpy().T, net[2].bias.detach().numpy()
    return A.VowelModel(mean.astype(np.float32), scale.astype(np.float32), w1.copy(), b1.copy(), w2.copy(), b2.copy())


# -- evaluation -------------------------------------------------------------------------------------
def evaluate(voice: str, sentences, rate_wpm: int, model: A.VowelModel | None) -> tuple[np.ndarray, float, float]:
    """→ (6×6 confusion counts [truth, predicted], audio seconds, analysis seconds)."""
    conf = np.zeros((len(A.VOWELS), len(A.VOWELS)), np.int64)
    audio_s = analysis_s = 0.0
    for text in sentences:
        x, spans = speak(text, voice, rate_wpm)
        t0 = time.perf_counter()
        track = A.analyze(x, A.ANALYSIS_RATE, FPS, model=model)
        analysis_s += time.perf_counter() - t0
        audio_s += track.duration_s
        truth = truth_at(spans, (np.arange(len(track)) + 0.5) / FPS)
        np.add.at(conf, (truth, track.vowel), 1)
    return conf, audio_s, analysis_s


def _timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def confusion_table(conf: np.ndarray) -> str:
    head = "| truth \\ predicted | " + " | ".join(A.VOWELS) + " | recall |\n|---|" + "---:|" * (len(A.VOWELS) + 1)
    rows = []
    for i, name in enumerate(A.VOWELS):
        recall = conf[i, i] / max(conf[i].sum(), 1)
        rows.append(f"| **{name}** | " + " | ".join(str(v) for v in conf[i]) + f" | {recall:.0%} |")
    return head + "\n" + "\n".join(rows)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--fit", action="store_true", help="refit and overwrite the packaged classifier weights")
    ap.add_argument("--fit-texts", type=int, default=80, help="random word strings per fitting voice")
    ap.add_argument("--rate", type=int, default=160, help="espeak-ng speaking rate for evaluation (wpm)")
    args = ap.parse_args(argv)

    model = None
    if args.fit:
        model = fit(args.fit_texts)
        atomic_write_bytes(A.default_weights_path(), model.to_npz_bytes())
        print(f"wrote {A.default_weights_path()}", file=sys.stderr)
        A._default_model.cache_clear()

    rows, total = [], np.zeros((len(A.VOWELS),) * 2, np.int64)
    audio_total = analysis_total = 0.0
    for voice in EVAL_VOICES:
        conf, a_s, t_s = evaluate(voice, EVAL_SENTENCES, args.rate, model)
        total += conf
        audio_total += a_s
        analysis_total += t_s
        rows.append((voice, "English (Harvard)", conf, a_s, t_s))
    extra = []
    for voice, _ in EXTRA_VOICES:
        conf, a_s, t_s = evaluate(voice, ES_SENTENCES, args.rate, model)
        extra.append((voice, "Spanish", conf, a_s, t_s))

    def acc(c):
        return np.trace(c) / max(c.sum(), 1)

    def vowel_frames_acc(c):   # agreement on frames whose truth is a vowel
        return np.trace(c[:5, :5]) / max(c[:5].sum(), 1)

    print(f"Lip-sync accuracy, {time.strftime('%Y-%m-%d')}, {platform.processor() or platform.machine()}, "
          f"rate {args.rate} wpm, {FPS:g} fps\n")
    print("| voice (held out) | text | frames | per-frame agreement | on vowel frames | open/closed agreement | speed (× real time) |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for voice, text, conf, a_s, t_s in rows + [("**all English**", "", total, audio_total, analysis_total)] + extra:
        openc = conf[:5, :5].sum() + conf[5, 5]
        print(f"| {voice} | {text} | {conf.sum()} | {acc(conf):.1%} | {vowel_frames_acc(conf):.1%} | "
              f"{openc / max(conf.sum(), 1):.1%} | {a_s / max(t_s, 1e-9):.0f}× |")
    # Throughput on one long clip (per-sentence timings above include per-call overhead).
    long_clip = np.concatenate([speak(t, EVAL_VOICES[0], args.rate)[0] for t in EVAL_SENTENCES * 2])
    best = min(_timed(lambda: A.mouth_track(A.analyze(long_clip, A.ANALYSIS_RATE, FPS, model=model)))
               for _ in range(3))
    print(f"\nOne {long_clip.size / A.ANALYSIS_RATE:.0f} s clip, analyze + mouth_track, best of 3: "
          f"{best:.2f} s = {long_clip.size / A.ANALYSIS_RATE / best:.0f}× real time")
    print("\nConfusion matrix, all English voices (frames; rows = espeak-ng truth):\n")
    print(confusion_table(total))
    if extra:
        print(f"\nConfusion matrix, Spanish ({extra[0][0]}):\n")
        print(confusion_table(extra[0][2]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
