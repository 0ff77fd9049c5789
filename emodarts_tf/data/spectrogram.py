"""Log-magnitude spectrogram maps (``features.kind: spectrogram``): EmotionNAS's spectrogram stream.

The map of one utterance, from the fields of :class:`~emodarts_tf.config.FeatureConfig`:

1. :func:`~emodarts_tf.data.features.load_audio`: mono at ``sample_rate``, cut or zero-padded to
   ``duration_s`` exactly as for MFCCs (the start kept, zeros appended).
2. Frames of ``round(window_ms * sample_rate / 1000)`` samples every ``round(hop_ms * sample_rate / 1000)``
   samples (25 ms and 11 ms by default), starting at sample 0, without centring; only whole frames, i.e.
   ``1 + (samples - window) // hop`` of them.
3. Each frame times a symmetric Hamming window (``0.54 - 0.46 cos(2 pi n / (window - 1))``, ``np.hamming``),
   then the magnitude of its real FFT of length ``window``: ``window // 2 + 1`` bins from 0 Hz to Nyquist.
4. The bins averaged into ``freq_bins`` contiguous bands of (nearly) equal width, band ``b`` holding the bins
   ``[b * bins // freq_bins, (b + 1) * bins // freq_bins)``.
5. ``log(1 + magnitude)``.
6. Max-pooled over time by ``time_pool``, dropping the frames that do not fill a last window (as MFCCs).

The result is ``(freq_bins, frames)`` float32, frequency (low to high) on axis 0 and time on axis 1, the
orientation of the MFCC map, so the networks read either map the same way.

Why ``log(1 + |X|)`` rather than decibels: it needs no floor constant, it is 0 where the signal is 0, so the
zero padding of short files stays exactly 0 (as the zero-padded frames of the frame-level stream do) instead
of a floor such as -100 dB that would dominate the statistics used for normalisation, and it is close to
linear for the small magnitudes of quiet frames and logarithmic for loud ones.

Example:

>>> from emodarts_tf.config import FeatureConfig
>>> spectrogram_shape(FeatureConfig(kind="spectrogram", sample_rate=16000, duration_s=2.0, freq_bins=64))
(64, 45)
"""
from __future__ import annotations

import os

import numpy as np

from emodarts_tf.config import FeatureConfig
from emodarts_tf.data import features as F


def window_samples(cfg: FeatureConfig) -> int:
    """Samples per analysis window: ``round(window_ms * sample_rate / 1000)``."""
    return int(round(cfg.window_ms * cfg.sample_rate / 1000.0))


def hop_samples(cfg: FeatureConfig) -> int:
    """Samples between the starts of consecutive windows: ``round(hop_ms * sample_rate / 1000)``."""
    return int(round(cfg.hop_ms * cfg.sample_rate / 1000.0))


def _positive_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0


def validate_spectrogram_config(cfg: FeatureConfig) -> None:
    """Raise ``ValueError`` naming the field when ``cfg`` cannot produce a spectrogram map.

    (:func:`~emodarts_tf.data.features.validate_feature_config` checks ``kind``, ``sample_rate`` and
    ``duration_s`` and calls this for ``kind: spectrogram``.)
    """
    for name in ("window_ms", "hop_ms"):
        if not _positive_number(getattr(cfg, name)):
            raise ValueError(f"features.{name}: expected a positive number of milliseconds, received "
                             f"{getattr(cfg, name)!r}")  # fmt: skip
    for name in ("freq_bins", "time_pool"):
        value = getattr(cfg, name)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"features.{name}: expected a positive integer, received {value!r}")
    window, hop = window_samples(cfg), hop_samples(cfg)
    if window < 2:
        raise ValueError(f"features.window_ms: {cfg.window_ms} ms at {cfg.sample_rate} Hz is {window} sample(s); "
                         "expected at least 2")  # fmt: skip
    if hop < 1:
        raise ValueError(f"features.hop_ms: {cfg.hop_ms} ms at {cfg.sample_rate} Hz is under one sample")
    bins = window // 2 + 1
    if cfg.freq_bins > bins:
        raise ValueError(
            f"features.freq_bins: expected at most the {bins} FFT bins of a {window}-sample window, received "
            f"{cfg.freq_bins}"
        )
    samples = F.num_samples(cfg)
    if samples < window:
        raise ValueError(
            f"features.duration_s: {cfg.duration_s} s at {cfg.sample_rate} Hz is shorter than one window "
            f"({window} samples)"
        )
    frames = 1 + (samples - window) // hop
    if frames < cfg.time_pool:
        raise ValueError(f"features.time_pool: expected at most the {frames} spectrogram frames, received "
                         f"{cfg.time_pool}")  # fmt: skip


def spectrogram_shape(cfg: FeatureConfig) -> tuple[int, int]:
    """``(freq_bins, frames)`` after time pooling."""
    validate_spectrogram_config(cfg)
    frames = 1 + (F.num_samples(cfg) - window_samples(cfg)) // hop_samples(cfg)
    return cfg.freq_bins, frames // cfg.time_pool


def band_edges(bins: int, bands: int) -> np.ndarray:
    """``bands + 1`` bin indices: band ``b`` averages the bins ``[edges[b], edges[b + 1])``; none is empty
    when ``bands <= bins``."""
    return (np.arange(bands + 1) * bins) // bands


def spectrogram_from_waveform(y: np.ndarray, cfg: FeatureConfig) -> np.ndarray:
    """``(freq_bins, frames)`` float32: the log-magnitude map of ``y`` (at ``cfg.sample_rate``), max-pooled
    in time (steps 2-6 of the module's docstring)."""
    window, hop = window_samples(cfg), hop_samples(cfg)
    y = np.asarray(y, dtype=np.float64)
    if y.ndim != 1 or y.size < window:
        raise ValueError(f"waveform: expected a 1-D signal of at least {window} samples, received shape {y.shape}")
    frames = np.lib.stride_tricks.sliding_window_view(y, window)[::hop]  # (frames, window)
    magnitude = np.abs(np.fft.rfft(frames * np.hamming(window), axis=-1))  # (frames, bins)
    edges = band_edges(magnitude.shape[1], cfg.freq_bins)
    bands = np.add.reduceat(magnitude, edges[:-1], axis=1) / np.diff(edges)  # (frames, freq_bins)
    m = np.log1p(bands).T  # (freq_bins, frames)
    return np.ascontiguousarray(F.time_max_pool(m, cfg.time_pool), dtype=np.float32)


def extract_spectrogram(path: str | os.PathLike, cfg: FeatureConfig) -> np.ndarray:
    """:func:`~emodarts_tf.data.features.load_audio` then :func:`spectrogram_from_waveform`; shape
    :func:`spectrogram_shape` ``(cfg)``.

    Raises:
        AudioError: the file cannot be used (see :func:`~emodarts_tf.data.features.load_audio`).
    """
    return spectrogram_from_waveform(F.load_audio(path, cfg), cfg)
