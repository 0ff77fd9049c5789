"""Audio loading and MFCC features (librosa), as in the emoDARTS paper; the entry points of every 2-D map.

``features.kind`` chooses the map: ``mfcc`` (here), ``logmel`` (here: the same computation without its final
DCT, the log-mel filterbank energies in dB that MFCCs are the cosine transform of) or ``spectrogram``
(:mod:`emodarts_tf.data.spectrogram`); :func:`validate_feature_config`, :func:`feature_shape`,
:func:`feature_config_hash` and :func:`extract_features` serve all three. The cache key of an MFCC config hashes
every field but ``kind`` and the spectrogram's; a log-mel config's hashes ``kind`` and the fields it reads.

The paper's preset (the defaults of :class:`~emodarts_tf.config.FeatureConfig`): load at 32750 Hz, pad or
cut to 8 s, ``librosa.feature.mfcc(n_mfcc=128)`` with n_fft 2048 and hop 512 (512 frames), then max-pool
over time by 4, giving 128 x 128.

Every problem with an audio file (missing, empty, not audio, truncated, silent, non-finite samples) raises
:class:`AudioError`, a ``ValueError`` whose message names the file and the problem. Very short audio is
not an error (it is zero-padded like any file); :func:`find_short_audio` finds it for the reports (rule at
``SHORT_AUDIO_S``).

Example:

>>> from emodarts_tf.config import FeatureConfig
>>> feature_shape(FeatureConfig())
(128, 128)
"""
from __future__ import annotations

import hashlib
import json
import os
import struct
from dataclasses import asdict, fields
from pathlib import Path

import numpy as np

from emodarts_tf.config import FeatureConfig

# Bumped whenever the computation below changes in a way the FeatureConfig does not capture; part of the
# cache key, so that an old cache is never mistaken for a new one.
FEATURE_VERSION = 1

FEATURE_KINDS = ("mfcc", "logmel", "spectrogram")
# Fields of FeatureConfig that only the spectrogram reads; with `kind`, they are left out of an MFCC cache key.
SPECTROGRAM_ONLY_FIELDS = ("kind", "window_ms", "hop_ms", "freq_bins")
# Fields that only the mel-scale maps (MFCC, log-mel) read; left out of a spectrogram's cache key.
MFCC_ONLY_FIELDS = ("n_mfcc", "n_fft", "hop_length", "n_mels", "fmin", "fmax")
# Fields a log-mel config does not read: the spectrogram's and the number of cepstral coefficients.
LOGMEL_UNUSED_FIELDS = ("window_ms", "hop_ms", "freq_bins", "n_mfcc")

# Peak amplitude (full scale 1.0) below which a file counts as silent: about -80 dBFS, i.e. under 4 LSB
# of 16-bit PCM.
SILENCE_PEAK = 1e-4

# Very short audio is kept (zero-padded to ``duration_s`` like any other file) but reported: a file is
# "very short" when it lasts less than max(SHORT_AUDIO_S, SHORT_AUDIO_FRACTION * duration_s), i.e. under
# 0.25 s always, and under 10 % of the configured length when that is longer (0.3 s at 3 s, 0.8 s at the
# paper's 8 s): at least nine tenths of its MFCC map is then padding.
SHORT_AUDIO_S = 0.25
SHORT_AUDIO_FRACTION = 0.1


class AudioError(ValueError):
    """An audio file that cannot be used; the message names the file and the problem."""

    def __init__(self, path: str | os.PathLike, problem: str):
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")


def validate_feature_config(cfg: FeatureConfig) -> None:
    """Raise ``ValueError`` naming the field when ``cfg`` cannot produce features."""
    if cfg.kind not in FEATURE_KINDS:
        raise ValueError(f"features.kind: expected one of {list(FEATURE_KINDS)}, received {cfg.kind!r}")
    if cfg.sample_rate <= 0:
        raise ValueError(f"features.sample_rate: expected a positive rate in Hz, received {cfg.sample_rate!r}")
    if cfg.duration_s <= 0:
        raise ValueError(f"features.duration_s: expected a positive duration, received {cfg.duration_s!r}")
    if cfg.kind == "spectrogram":
        from emodarts_tf.data.spectrogram import validate_spectrogram_config

        validate_spectrogram_config(cfg)
        return
    names = ("n_fft", "hop_length", "n_mels", "time_pool")
    for name in names if cfg.kind == "logmel" else ("n_mfcc", *names):
        value = getattr(cfg, name)
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"features.{name}: expected a positive integer, received {value!r}")
    if cfg.kind == "mfcc" and cfg.n_mfcc > cfg.n_mels:
        raise ValueError(
            f"features.n_mfcc: expected at most n_mels ({cfg.n_mels}) coefficients, received {cfg.n_mfcc}"
        )
    nyquist = cfg.sample_rate / 2.0
    fmax = nyquist if cfg.fmax is None else cfg.fmax
    if not 0 <= cfg.fmin < fmax <= nyquist:
        raise ValueError(
            f"features.fmin/fmax: expected 0 <= fmin < fmax <= {nyquist:g} (Nyquist), "
            f"received fmin={cfg.fmin!r}, fmax={cfg.fmax!r}"
        )
    if num_samples(cfg) < cfg.hop_length:
        raise ValueError(
            f"features.duration_s: {cfg.duration_s} s at {cfg.sample_rate} Hz is shorter than one hop "
            f"({cfg.hop_length} samples)"
        )
    frames = 1 + num_samples(cfg) // cfg.hop_length
    if frames < cfg.time_pool:
        raise ValueError(
            f"features.time_pool: expected at most the {frames} STFT frames, received {cfg.time_pool}"
        )


def feature_extractor_label(cfg: FeatureConfig) -> str:
    """What the logs call the maps of ``cfg.kind``: ``MFCCs``, ``log-mel maps`` or ``spectrograms``."""
    return {"mfcc": "MFCCs", "logmel": "log-mel maps", "spectrogram": "spectrograms"}.get(cfg.kind, f"{cfg.kind} maps")


def num_samples(cfg: FeatureConfig) -> int:
    """Samples per utterance after padding or cutting to ``cfg.duration_s``."""
    return int(round(cfg.sample_rate * cfg.duration_s))


def feature_shape(cfg: FeatureConfig) -> tuple[int, int]:
    """``(n_mfcc, frames)`` after time pooling (the paper preset gives ``(128, 128)``); for log-mel maps
    ``(n_mels, frames)``, for a spectrogram ``(freq_bins, frames)``."""
    validate_feature_config(cfg)
    if cfg.kind == "spectrogram":
        from emodarts_tf.data.spectrogram import spectrogram_shape

        return spectrogram_shape(cfg)
    frames = 1 + num_samples(cfg) // cfg.hop_length  # librosa's centred framing
    return (cfg.n_mels if cfg.kind == "logmel" else cfg.n_mfcc), frames // cfg.time_pool


def hashed_feature_fields(cfg: FeatureConfig) -> dict:
    """The fields of ``cfg`` that determine its kind of map: for MFCCs every field but the spectrogram's (and
    ``kind``); for log-mel maps every field but the spectrogram's and ``n_mfcc``; for a spectrogram every field
    but the mel-scale maps'; for a kind not in ``FEATURE_KINDS`` (which ``validate_feature_config`` refuses)
    every field."""
    kind = cfg.kind if isinstance(cfg.kind, str) else None
    dropped = {"mfcc": SPECTROGRAM_ONLY_FIELDS, "logmel": LOGMEL_UNUSED_FIELDS,
               "spectrogram": MFCC_ONLY_FIELDS}.get(kind, ())  # fmt: skip
    return {k: v for k, v in asdict(cfg).items() if k not in dropped}


def read_feature_fields(features: dict, defaults: dict | None = None) -> dict:
    """``kind`` and the fields of a saved ``features`` section (a config or fingerprint read back from disk)
    that its kind of map reads (those of :func:`hashed_feature_fields`), so that two runs which compute the
    same maps compare equal whatever they hold in the fields their kind ignores.

    A field the section lacks (saved before the field existed) takes its value in ``defaults``, the value runs
    saved before it existed ran with; ``None`` gives every field its ``FeatureConfig`` default. A field that
    is neither in the section nor in ``defaults`` stays out of the result, and a key ``FeatureConfig`` does
    not know is kept as it is, so that either still counts as a difference."""
    known = {f.name for f in fields(FeatureConfig)}
    given = {k: v for k, v in features.items() if k in known}
    values = given if defaults is None else {**defaults, **given}
    cfg = FeatureConfig(**values)
    read = hashed_feature_fields(cfg)
    if defaults is not None:  # only the fields the section holds or `defaults` fills
        read = {k: v for k, v in read.items() if k in values}
    kind = cfg.kind if isinstance(cfg.kind, str) else repr(cfg.kind)
    return {**read, "kind": kind, **{k: v for k, v in features.items() if k not in known}}


def comparable_features(old: dict, new: dict, defaults: dict | None = None) -> tuple[dict, dict]:
    """Two saved ``features`` sections reduced to what decides whether they compute the same maps: the fields
    their kind reads (:func:`read_feature_fields`, a missing field taking its value in ``defaults``), or only
    ``kind`` when the kinds differ (every other field then differs or is not read by one of them)."""
    a, b = read_feature_fields(old, defaults), read_feature_fields(new, defaults)
    if a["kind"] != b["kind"]:
        return {"kind": a["kind"]}, {"kind": b["kind"]}
    return a, b


def feature_config_hash(cfg: FeatureConfig) -> str:
    """A short, stable hash of everything that determines the features (the cache key)."""
    import librosa

    payload = {
        "features": hashed_feature_fields(cfg),
        "feature_version": FEATURE_VERSION,
        "librosa": librosa.__version__,
    }
    text = json.dumps(payload, sort_keys=True, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def _check_wav_truncation(path: Path, size: int) -> None:
    """For RIFF/WAVE files, compare the data size the header declares with the bytes on disk.

    libsndfile silently reads what is there, so a cut-off copy would otherwise pass as a shorter file.
    """
    with path.open("rb") as handle:
        head = handle.read(12)
        if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
            return
        offset = 12
        while offset + 8 <= size:
            handle.seek(offset)
            chunk = handle.read(8)
            if len(chunk) < 8:
                return
            chunk_id, chunk_size = chunk[:4], struct.unpack("<I", chunk[4:])[0]
            if chunk_id == b"data":
                available = size - offset - 8
                # 0 and 0xFFFFFFFF mark a stream whose size was never written back; nothing to compare.
                if chunk_size not in (0, 0xFFFFFFFF) and chunk_size > available:
                    raise AudioError(
                        path,
                        f"truncated WAV file: the header declares {chunk_size} bytes of audio data, "
                        f"the file holds {available}",
                    )
                return
            offset += 8 + chunk_size + (chunk_size & 1)


def load_audio(path: str | os.PathLike, cfg: FeatureConfig) -> np.ndarray:
    """Mono float32 samples at ``cfg.sample_rate``, zero-padded or cut to ``cfg.duration_s``.

    Reads with soundfile, averages channels and resamples exactly as ``librosa.load(path, sr=...)`` does,
    so that features match librosa computed directly on the file.

    Raises:
        AudioError: the file is missing, empty, not audio, truncated, silent or holds non-finite samples.
    """
    import librosa

    y = read_audio(path, cfg.sample_rate)
    y = librosa.util.fix_length(y, size=num_samples(cfg))
    return np.ascontiguousarray(y, dtype=np.float32)


def read_audio(path: str | os.PathLike, sample_rate: int) -> np.ndarray:
    """Mono float32 samples of the whole file at ``sample_rate`` (:func:`load_audio` before padding or cutting).

    Raises:
        AudioError: the file is missing, empty, not audio, truncated, silent or holds non-finite samples.
    """
    import librosa
    import soundfile as sf

    path = Path(path)
    if not path.is_file():
        raise AudioError(path, "no such file")
    size = path.stat().st_size
    if size == 0:
        raise AudioError(path, "empty file (0 bytes)")
    _check_wav_truncation(path, size)
    try:
        with sf.SoundFile(str(path)) as handle:
            native_sr = handle.samplerate
            y = handle.read(dtype="float32", always_2d=False)
    except (sf.LibsndfileError, RuntimeError, TypeError) as exc:
        raise AudioError(path, f"not a readable audio file ({exc})") from None
    if y.size == 0:
        raise AudioError(path, "no audio samples (0 frames)")
    y = y.T  # librosa's layout: (channels, samples)
    y = librosa.to_mono(y)
    if not np.all(np.isfinite(y)):
        raise AudioError(path, "audio holds non-finite samples (NaN or infinity)")
    peak = float(np.max(np.abs(y)))
    if peak < SILENCE_PEAK:
        raise AudioError(path, f"silent audio (peak amplitude {peak:.2e} < {SILENCE_PEAK:.0e})")
    if native_sr != sample_rate:
        y = librosa.resample(y, orig_sr=native_sr, target_sr=sample_rate)
    return np.ascontiguousarray(y, dtype=np.float32)


def short_audio_limit(cfg: FeatureConfig) -> float:
    """Seconds below which a file counts as very short: ``max(SHORT_AUDIO_S, SHORT_AUDIO_FRACTION * duration_s)``."""
    return max(SHORT_AUDIO_S, SHORT_AUDIO_FRACTION * float(cfg.duration_s))


def audio_duration(path: str | os.PathLike) -> float | None:
    """Seconds of audio in ``path`` from its header (nothing is decoded); None when it cannot be read."""
    import soundfile as sf

    try:
        info = sf.info(str(path))
    except (sf.LibsndfileError, RuntimeError, TypeError, OSError):
        return None
    if not info.samplerate:
        return None
    return float(info.frames) / float(info.samplerate)


def find_short_audio(paths, cfg: FeatureConfig) -> dict:
    """``{path: seconds}`` of the readable files of ``paths`` shorter than :func:`short_audio_limit` ``(cfg)``.

    Such files are not errors (their features are computed, zero-padded to ``cfg.duration_s``); callers
    report them so that a 0.05 s click does not pass silently as a 3 s utterance.
    """
    limit = short_audio_limit(cfg)
    short = {}
    for path in paths:
        seconds = audio_duration(path)
        if seconds is not None and seconds < limit:
            short[str(path)] = seconds
    return short


def short_audio_message(short: dict, cfg: FeatureConfig, listed: int = 20) -> list:
    """Log lines for :func:`find_short_audio`'s result: a count with the rule, then the files (at most
    ``listed``, the shortest first); an empty list when there is none."""
    if not short:
        return []
    lines = [
        f"{len(short)} very short file(s) (under {short_audio_limit(cfg):g} s, i.e. max({SHORT_AUDIO_S:g} s, "
        f"{SHORT_AUDIO_FRACTION:.0%} of features.duration_s {cfg.duration_s:g} s)), kept and zero-padded to "
        f"{cfg.duration_s:g} s:"
    ]
    ordered = sorted(short.items(), key=lambda item: (item[1], item[0]))
    lines += [f"  {path}: {seconds:.3f} s" for path, seconds in ordered[:listed]]
    if len(ordered) > listed:
        lines.append(f"  ... and {len(ordered) - listed} more")
    return lines


def time_max_pool(m: np.ndarray, pool: int) -> np.ndarray:
    """Max-pool the last axis by ``pool``, dropping the frames that do not fill a last window."""
    if pool == 1:
        return m
    keep = (m.shape[-1] // pool) * pool
    return m[..., :keep].reshape(*m.shape[:-1], keep // pool, pool).max(axis=-1)


def _mel_arguments(y: np.ndarray, cfg: FeatureConfig) -> dict:
    """The librosa keyword arguments shared by the MFCCs and their log-mel energies."""
    return dict(y=np.asarray(y, dtype=np.float32), sr=cfg.sample_rate, n_fft=cfg.n_fft, hop_length=cfg.hop_length,
                n_mels=cfg.n_mels, fmin=cfg.fmin, fmax=cfg.fmax)


def mfcc_from_waveform(y: np.ndarray, cfg: FeatureConfig) -> np.ndarray:
    """``(n_mfcc, frames)`` float32: librosa MFCCs of ``y`` (at ``cfg.sample_rate``), max-pooled in time."""
    import librosa

    m = librosa.feature.mfcc(**_mel_arguments(y, cfg), n_mfcc=cfg.n_mfcc)
    return np.ascontiguousarray(time_max_pool(m, cfg.time_pool), dtype=np.float32)


def logmel_from_waveform(y: np.ndarray, cfg: FeatureConfig) -> np.ndarray:
    """``(n_mels, frames)`` float32: the log-mel energies (dB) of ``y`` that :func:`mfcc_from_waveform` takes the
    DCT of (``librosa.power_to_db`` of the mel power spectrogram, ``ref=1``, 80 dB below the utterance's peak
    floored), max-pooled in time."""
    import librosa

    m = librosa.power_to_db(librosa.feature.melspectrogram(**_mel_arguments(y, cfg)))
    return np.ascontiguousarray(time_max_pool(m, cfg.time_pool), dtype=np.float32)


def extract_mfcc(path: str | os.PathLike, cfg: FeatureConfig) -> np.ndarray:
    """:func:`load_audio` then :func:`mfcc_from_waveform`; shape :func:`feature_shape` ``(cfg)``."""
    return mfcc_from_waveform(load_audio(path, cfg), cfg)


def map_from_waveform(y: np.ndarray, cfg: FeatureConfig) -> np.ndarray:
    """The map of ``cfg.kind`` of a waveform at ``cfg.sample_rate`` and of ``cfg.duration_s``:
    :func:`mfcc_from_waveform`, :func:`logmel_from_waveform` or
    :func:`~emodarts_tf.data.spectrogram.spectrogram_from_waveform`."""
    if cfg.kind == "spectrogram":
        from emodarts_tf.data.spectrogram import spectrogram_from_waveform

        return spectrogram_from_waveform(y, cfg)
    if cfg.kind == "logmel":
        return logmel_from_waveform(y, cfg)
    if cfg.kind != "mfcc":
        raise ValueError(f"features.kind: expected one of {list(FEATURE_KINDS)}, received {cfg.kind!r}")
    return mfcc_from_waveform(y, cfg)


def extract_features(path: str | os.PathLike, cfg: FeatureConfig) -> np.ndarray:
    """The map of ``cfg.kind`` for one file: :func:`extract_mfcc`, :func:`logmel_from_waveform` of
    :func:`load_audio` or :func:`~emodarts_tf.data.spectrogram.extract_spectrogram`; shape :func:`feature_shape`
    ``(cfg)``."""
    if cfg.kind == "spectrogram":
        from emodarts_tf.data.spectrogram import extract_spectrogram

        return extract_spectrogram(path, cfg)
    if cfg.kind == "logmel":
        return logmel_from_waveform(load_audio(path, cfg), cfg)
    if cfg.kind != "mfcc":
        raise ValueError(f"features.kind: expected one of {list(FEATURE_KINDS)}, received {cfg.kind!r}")
    return extract_mfcc(path, cfg)
