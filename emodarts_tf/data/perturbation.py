"""Speed perturbation of training utterances (``recipe.speed_perturb``), cached like any feature map.

Speed perturbation (Ko et al., "Audio augmentation for speech recognition", Interspeech 2015; Kaldi's
``perturb_data_dir_speed.sh``) replays an utterance ``f`` times faster: the waveform at ``sample_rate`` is
read as if it had been sampled at ``f * sample_rate`` and resampled back to ``sample_rate``. Duration scales by
``1 / f``, and pitch and every formant by ``f``: for a factor of 0.9 or 1.1 the copy sounds like another speaker
saying the same thing with the same emotion, which is the variation a speaker-independent model must ignore.

Each factor's maps are computed once per file, after the perturbation and before the usual cut or zero padding
to ``features.duration_s``, and kept in a cache folder of their own (``<kind>-speed<f>-<hash>``) with the
extraction, progress bar, resume and locking of :mod:`emodarts_tf.data.cache`. As in Kaldi, a perturbed copy
of a speaker's utterances counts as another speaker: with ``data.normalize: speaker`` it is normalised with the
statistics of that speaker's perturbed utterances (:func:`emodarts_tf.data.pipeline.make_fold_data`).
"""
from __future__ import annotations

import hashlib
import json
from functools import partial

import numpy as np

from emodarts_tf.config import FeatureConfig
from emodarts_tf.data import features as F

# Factors further from 1 than this change pitch and formants by more than speakers of one sex differ
# (about +-25%), so the copies would stop sounding like speech of the same kind.
MIN_FACTOR, MAX_FACTOR = 0.75, 1.25
SPEED_VERSION = 1


def check_speed_factors(factors) -> list:
    """``factors`` as a list of floats, or a ``ValueError`` naming the bad value (``recipe.speed_perturb``)."""
    if factors is None:
        return []
    if isinstance(factors, (int, float)) or not all(isinstance(f, (int, float)) and not isinstance(f, bool) for f in factors):
        raise ValueError(f"recipe.speed_perturb: expected a list of speed factors such as [0.9, 1.1], received {factors!r}")
    out = [float(f) for f in factors]
    for f in out:
        if not MIN_FACTOR <= f <= MAX_FACTOR or f == 1.0:
            raise ValueError(
                f"recipe.speed_perturb: expected factors in [{MIN_FACTOR}, {MAX_FACTOR}] other than 1 (the original "
                f"is always used), received {f!r}"
            )
    if len(set(out)) != len(out):
        raise ValueError(f"recipe.speed_perturb: a factor is listed twice in {factors!r}")
    return out


def speed_perturb(y: np.ndarray, sample_rate: int, factor: float) -> np.ndarray:
    """``y`` (at ``sample_rate``) played ``factor`` times faster: resampled from ``factor * sample_rate`` to
    ``sample_rate`` (about ``len(y) / factor`` samples), float32."""
    import librosa

    if factor == 1.0:
        return np.asarray(y, dtype=np.float32)
    out = librosa.resample(np.asarray(y, dtype=np.float32), orig_sr=float(sample_rate) * float(factor),
                           target_sr=float(sample_rate))  # fmt: skip
    return np.ascontiguousarray(out, dtype=np.float32)


def extract_speed_perturbed(path, cfg: FeatureConfig, factor: float) -> np.ndarray:
    """The map of ``path`` played ``factor`` times faster, cut or zero-padded to ``features.duration_s``
    afterwards (as :func:`~emodarts_tf.data.features.extract_features` does for the original).

    Raises:
        AudioError: the file cannot be used (as for the original).
    """
    import librosa

    y = speed_perturb(F.read_audio(path, cfg.sample_rate), cfg.sample_rate, factor)
    y = librosa.util.fix_length(y, size=F.num_samples(cfg))
    return F.map_from_waveform(y, cfg)


def speed_extractor(cfg: FeatureConfig, factor: float):
    """The cache :class:`~emodarts_tf.data.cache.Extractor` of ``cfg``'s maps played ``factor`` times faster."""
    from emodarts_tf.data.cache import Extractor

    (factor,) = check_speed_factors([factor])
    payload = {"features": F.feature_config_hash(cfg), "speed": factor, "speed_version": SPEED_VERSION}
    key = hashlib.sha256(json.dumps(payload, sort_keys=True).encode("utf-8")).hexdigest()[:16]
    return Extractor(
        kind=f"{cfg.kind}-speed{factor:g}",
        key=key,
        shape=tuple(F.feature_shape(cfg)),
        config={**F.hashed_feature_fields(cfg), "speed": factor},
        extract=partial(extract_speed_perturbed, cfg=cfg, factor=factor),
        version=SPEED_VERSION,
        label=f"{F.feature_extractor_label(cfg)} at speed {factor:g}",
    )
