"""The built-in demo corpus: SYNTHETIC speech-like audio, so the whole method runs with no data at all.

Four synthetic voices (two male-like, two female-like base pitches and vocal-tract sizes) speak 4 emotions
(ang, hap, neu, sad), 11 utterances each (176 files, 2 s at 16 kHz). Emotions are rendered through prosody
only, with per-utterance variation so that classes overlap:

- pitch level and range (semitones of the accent excursions), and a falling declination,
- tempo (syllable rate) and syllable durations,
- energy, spectral tilt (vocal effort: brighter for anger) and breathiness (aspiration noise).

A harmonic source follows the pitch contour; its harmonics are weighted by three formant resonances of a
random vowel per syllable (scaled by the speaker's vocal-tract size), shaped into syllables by an amplitude
envelope, plus aspiration and background noise.

Generated once with a fixed seed into ``<cache_dir>/demo-corpus-v1/`` (``wav/*.wav``, ``manifest.csv`` with
columns ``path,label,speaker,session,split,gender``, and ``corpus.json`` saying ``"synthetic": true``), then
reused. Nothing here is real emotional speech; results on it only show that the machinery works.
"""
from __future__ import annotations

import csv
import io
import logging
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

from emodarts_tf.utils.io import write_json

log = logging.getLogger(__name__)

DEMO_NAME = "demo-corpus-v1"
DEMO_SEED = 20240321
SAMPLE_RATE = 16000
DURATION_S = 2.0
UTTERANCES_PER_EMOTION = 11

# id, gender, base f0 (Hz), vocal-tract scale (formants multiply by it)
SPEAKERS = (
    ("M01", "M", 112.0, 1.00),
    ("M02", "M", 131.0, 0.96),
    ("F01", "F", 206.0, 1.15),
    ("F02", "F", 232.0, 1.20),
)
# pitch factor, accent range (semitones), syllables/s, loudness (rms), spectral tilt, breathiness
EMOTIONS = {
    "ang": dict(pitch=1.20, range=4.0, rate=5.0, energy=0.85, tilt=0.95, breath=0.02),
    "hap": dict(pitch=1.26, range=6.5, rate=4.7, energy=0.62, tilt=1.25, breath=0.03),
    "neu": dict(pitch=1.00, range=2.6, rate=4.0, energy=0.42, tilt=1.50, breath=0.03),
    "sad": dict(pitch=0.91, range=1.6, rate=3.0, energy=0.28, tilt=1.80, breath=0.07),
}
# F1, F2, F3 (Hz) of five vowels of an adult male voice
VOWELS = np.array([[730, 1090, 2440], [270, 2290, 3010], [300, 870, 2240], [530, 1840, 2480], [570, 840, 2410]], float)
BANDWIDTHS = np.array([90.0, 120.0, 170.0])


def synthesize(speaker: tuple, emotion: str, rng: np.random.Generator, sr: int = SAMPLE_RATE) -> np.ndarray:
    """One synthetic utterance (float32, ``DURATION_S`` long) of ``speaker`` in ``emotion``."""
    _, _, base_f0, tract = speaker
    p = EMOTIONS[emotion]
    # Per-utterance variation, wide enough that neighbouring emotions overlap.
    pitch = base_f0 * p["pitch"] * np.exp(rng.normal(0, 0.06))
    accent = p["range"] * np.exp(rng.normal(0, 0.25))
    rate = p["rate"] * np.exp(rng.normal(0, 0.12))
    energy = p["energy"] * np.exp(rng.normal(0, 0.25))
    tilt = p["tilt"] + rng.normal(0, 0.15)
    breath = p["breath"] * np.exp(rng.normal(0, 0.3))

    n = int(sr * DURATION_S)
    t = np.arange(n) / sr
    start = rng.uniform(0.05, 0.25)
    speech = rng.uniform(1.35, 1.7)
    # Syllables: gamma-distributed durations around 1 / rate.
    bounds = [start]
    while bounds[-1] < start + speech:
        bounds.append(bounds[-1] + rng.gamma(8.0, 1.0 / (8.0 * rate)))
    bounds = np.array(bounds)
    n_syl = len(bounds) - 1
    centres = (bounds[:-1] + bounds[1:]) / 2
    envelope = np.zeros(n)
    for a, b in zip(bounds[:-1], bounds[1:]):
        length = (b - a) * rng.uniform(0.7, 0.9)  # a short gap closes each syllable
        inside = (t >= a) & (t < a + length)
        envelope[inside] += rng.uniform(0.6, 1.0) * np.sin(np.pi * (t[inside] - a) / length) ** 1.5
    # Pitch contour (semitones): declination plus smoothed accents per syllable plus slight jitter.
    accents = rng.uniform(-0.4, 1.0, n_syl) * accent
    semis = np.interp(t, centres, accents) - accent * 0.35 * (t - start) / speech
    semis += 0.08 * np.sin(2 * np.pi * rng.uniform(4.5, 6.5) * t)
    f0 = pitch * 2.0 ** (semis / 12.0)
    # Formant tracks: a random vowel per syllable, interpolated between syllable centres.
    vowels = VOWELS[rng.integers(0, len(VOWELS), n_syl)] * tract
    formants = np.stack([np.interp(t, centres, vowels[:, i]) for i in range(3)])  # (3, n)
    phase = 2 * np.pi * np.cumsum(f0) / sr
    n_harm = int(min(40, 5000 // f0.min()))
    k = np.arange(1, n_harm + 1)[:, None]
    freq = k * f0[None, :]  # (K, n)
    gain = sum(1.0 / (1.0 + ((freq - formants[i][None, :]) / BANDWIDTHS[i]) ** 2) for i in range(3)) + 0.03
    amp = gain * k ** (-tilt) * (freq < sr / 2 - 200)
    voiced = (amp * np.sin(k * phase[None, :] + rng.uniform(0, 2 * np.pi, (n_harm, 1)))).sum(axis=0)
    voiced /= np.sqrt(np.mean(voiced**2)) + 1e-9
    y = envelope * (voiced + breath * 8.0 * rng.standard_normal(n))
    active = envelope > 0.05
    y *= energy * 0.12 / (np.sqrt(np.mean(y[active] ** 2)) + 1e-9)
    y += 0.002 * rng.standard_normal(n)  # background noise
    return np.clip(y, -1.0, 1.0).astype(np.float32)


def _generate(target: Path) -> None:
    import soundfile as sf

    rows = []
    (target / "wav").mkdir(parents=True)
    for s_index, speaker in enumerate(SPEAKERS):
        for e_index, emotion in enumerate(EMOTIONS):
            for u in range(UTTERANCES_PER_EMOTION):
                rng = np.random.default_rng([DEMO_SEED, s_index, e_index, u])
                y = synthesize(speaker, emotion, rng)
                name = f"wav/{speaker[0]}_{emotion}_{u:02d}.wav"
                sf.write(target / name, y, SAMPLE_RATE, subtype="PCM_16")
                rows.append([name, emotion, f"demo-{speaker[0]}", str(s_index + 1), "", speaker[1]])
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["path", "label", "speaker", "session", "split", "gender"])
    writer.writerows(rows)
    (target / "manifest.csv").write_text(buf.getvalue(), encoding="utf-8")
    write_json(
        target / "corpus.json",
        {
            "name": DEMO_NAME,
            "synthetic": True,
            "description": "SYNTHETIC speech-like audio, emotions rendered through prosody; not real speech",
            "seed": DEMO_SEED,
            "sample_rate": SAMPLE_RATE,
            "duration_s": DURATION_S,
            "speakers": [{"id": f"demo-{s[0]}", "gender": s[1], "f0": s[2]} for s in SPEAKERS],
            "emotions": EMOTIONS,
            "utterances": len(rows),
        },
    )


def ensure_demo_corpus(cache_dir: str | os.PathLike) -> Path:
    """The demo corpus's ``manifest.csv`` under ``cache_dir``, generating the corpus on first use."""
    final = Path(cache_dir).expanduser() / DEMO_NAME
    manifest = final / "manifest.csv"
    if manifest.is_file():
        return manifest
    final.parent.mkdir(parents=True, exist_ok=True)
    log.info("generating the SYNTHETIC demo corpus into %s", final)
    tmp = Path(tempfile.mkdtemp(prefix=f".{DEMO_NAME}.", dir=final.parent))
    try:
        _generate(tmp)
        if final.exists() and not manifest.is_file():
            shutil.rmtree(final)  # a partial copy from an older, interrupted layout
        try:
            os.rename(tmp, final)
        except OSError:
            if not manifest.is_file():  # not another process finishing first
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return manifest
