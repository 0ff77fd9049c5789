"""``tf.data`` pipelines over the cached features of one fold.

:func:`make_fold_data` splits a fold's training part into train and validation speakers
(:func:`~emodarts_tf.data.protocols.validation_speakers`; MSP-Podcast's official Development split when the
records carry it), loads the three parts from the cache into memory, and normalises them with statistics
of the train part only (``data.normalize``: per MFCC coefficient, global, or none).

Batches are gathered from the in-memory arrays by shuffled indices: ``Dataset.range(n)`` -> seeded
``shuffle`` (the whole part, reshuffled every epoch) -> ``batch`` -> ``map(gather)`` -> SpecAugment (train
only) -> ``prefetch(AUTOTUNE)``. Each batch is ``(x, y)``: float32 ``[B, n_mfcc, frames, 1]`` and int32
``[B]``.

Two-stream folds (EmotionNAS) also hold a frame-level sequence per utterance (``frames``: float32
``[B, frames, dim]``, e.g. openSMILE low-level descriptors), normalised the same way per dimension; their
batches are ``({image_name: image, "frames": sequence}, y)`` with ``image_name`` ``"mfcc"`` or
``"spectrogram"``, and SpecAugment masks the image only.

SpecAugment (``data.spec_augment``) uses ``tensorflow_io.audio.time_mask`` / ``freq_mask``, which expect a
``[time, freq]`` spectrogram; each example ``[n_mfcc, frames, 1]`` is transposed to ``[frames, n_mfcc]``,
masked ``num_masks`` times (widths drawn from 0 to ``time_mask`` frames / ``freq_mask`` coefficients), and
transposed back. Masked values are 0, the training mean after normalisation. Mask positions come from TF's
random ops, reproducible under the global seed (``emodarts_tf.utils.seed.seed_everything``).

Example:

>>> fold = make_fold_data(prepared, 1, config)                        # doctest: +SKIP
>>> for x, y in fold.train(batch_size=64): ...                        # doctest: +SKIP
>>> weights_ds, alphas_ds = fold.search_split(64)                     # doctest: +SKIP
>>> for (xw, yw), (xa, ya) in tf.data.Dataset.zip((weights_ds, alphas_ds)).take(steps): ...  # doctest: +SKIP
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field, replace

import numpy as np
import tensorflow as tf

from emodarts_tf.config import ExperimentConfig, SpecAugmentConfig
from emodarts_tf.data.perturbation import check_speed_factors
from emodarts_tf.data.protocols import validation_speakers
from emodarts_tf.data.records import Fold

log = logging.getLogger(__name__)

NORMALIZATIONS = ("coefficient", "global", "none", "speaker")
SEARCH_SPLITS = ("utterance", "speaker")
PARTS = ("train", "val", "test", "weights", "alphas")
NORM_BLOCK = 1024  # utterances per block of normalization_stats


def normalization_stats(x: np.ndarray, mode: str) -> tuple:
    """``(mean, std)`` float32, broadcastable to ``(n_mfcc, frames, 1)``, of ``x`` ``(n, n_mfcc, frames)``."""
    if mode not in NORMALIZATIONS:
        raise ValueError(f"data.normalize: expected one of {list(NORMALIZATIONS)}, received {mode!r}")
    if mode in ("none", "speaker"):  # speaker: the features are already z-scored per speaker
        return np.zeros((1, 1, 1), np.float32), np.ones((1, 1, 1), np.float32)
    # Two passes in float64 over blocks of utterances: the memory beyond x is a float64 block or two, not a float64
    # copy of the whole part (gigabytes for a large corpus at the paper's 128 x 128 maps).
    x = np.asarray(x)
    if x.ndim != 3 or len(x) == 0:
        raise ValueError(f"normalization_stats: expected a non-empty (n, rows, frames) array, received shape "
                         f"{x.shape}")
    axes = (0, 2) if mode == "coefficient" else None
    count = x.size // (x.shape[1] if mode == "coefficient" else 1)
    blocks = [slice(i, i + NORM_BLOCK) for i in range(0, len(x), NORM_BLOCK)]
    total = sum(x[b].astype(np.float64).sum(axis=axes) for b in blocks)
    mean = np.asarray(total / count)
    centred = mean.reshape(1, -1, 1) if mode == "coefficient" else mean
    squares = 0.0
    for b in blocks:
        d = x[b].astype(np.float64)
        d -= centred
        squares = squares + np.square(d, out=d).sum(axis=axes)
    std = np.sqrt(np.asarray(squares / count))
    mean, std = mean.reshape(-1, 1, 1), std.reshape(-1, 1, 1)
    std = np.where(std < 1e-6, 1.0, std)  # a constant coefficient is centred, not blown up
    return mean.astype(np.float32), std.astype(np.float32)


def stratified_split(labels: np.ndarray, fraction: float, seed: int) -> tuple:
    """Indices ``(first, second)`` with about ``fraction`` of each class in ``first``, shuffled with ``seed``.

    A class with at least two examples puts at least one on each side.
    """
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"data.weights_fraction: expected a share in (0, 1), received {fraction!r}")
    rng = np.random.default_rng(seed)
    first, second = [], []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        rng.shuffle(idx)
        n_first = int(round(fraction * len(idx)))
        if len(idx) >= 2:
            n_first = min(max(n_first, 1), len(idx) - 1)
        else:
            n_first = len(idx)
        first.append(idx[:n_first])
        second.append(idx[n_first:])
    return np.sort(np.concatenate(first)), np.sort(np.concatenate(second))


def speaker_split(speakers, gender_of: dict, fraction: float, seed: int) -> tuple:
    """Indices ``(first, second)`` of utterances split by speaker: no speaker on both sides, about
    ``fraction`` of the utterances in ``first``.

    ``speakers[i]`` is utterance ``i``'s speaker, ``gender_of`` maps a speaker to its gender (or None). Within
    each gender (the larger groups first) the speakers, shuffled with ``seed``, go one at a time to the side
    furthest below its share of the utterances assigned so far; one gender's speakers thus alternate between
    the sides unless the sizes of its speakers say otherwise.

    Raises:
        ValueError: ``fraction`` outside (0, 1), or fewer than two speakers.
    """
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"data.weights_fraction: expected a share in (0, 1), received {fraction!r}")
    speakers = [str(s) for s in speakers]
    count: dict = {}
    for s in speakers:
        count[s] = count.get(s, 0) + 1
    if len(count) < 2:
        raise ValueError(
            f"data.search_split='speaker': the training part has {len(count)} speaker(s) {sorted(count)}; a "
            "speaker-disjoint weights/alphas split needs at least two (use data.search_split=utterance)"
        )
    rng = np.random.default_rng(seed)
    groups: dict = {}
    for s in sorted(count):
        groups.setdefault(gender_of.get(s) or "?", []).append(s)
    first_side, n = set(), [0, 0]
    for g in sorted(groups, key=lambda g: (-len(groups[g]), g)):
        members = list(groups[g])
        rng.shuffle(members)
        for s in members:
            # The side whose utterances fall shortest of its share goes next (ties: the weights side).
            side = 0 if n[0] * (1.0 - fraction) <= n[1] * fraction else 1
            if side == 0:
                first_side.add(s)
            n[side] += count[s]
    if len(first_side) == len(count):  # cannot happen with two or more speakers, kept as a guard
        raise ValueError("data.search_split='speaker': every speaker fell on the weights side")
    is_first = np.array([s in first_side for s in speakers])
    return np.flatnonzero(is_first), np.flatnonzero(~is_first)


@dataclass
class FoldData:
    """One fold's train / validation / test parts in memory, normalised, with ``tf.data`` views."""

    fold: Fold
    classes: list
    input_shape: tuple  # (n_mfcc, frames, 1)
    train_paths: list
    val_paths: list
    test_paths: list
    val_speakers: list
    mean: np.ndarray  # from the train part only, broadcastable to input_shape
    std: np.ndarray
    seed: int = 0
    spec_augment: SpecAugmentConfig = field(default_factory=SpecAugmentConfig)
    weights_fraction: float = 0.5
    synthetic: bool = False
    _x: dict = field(default_factory=dict, repr=False)  # part -> float32 (n, n_mfcc, frames, 1), normalised
    _y: dict = field(default_factory=dict, repr=False)  # part -> int32 (n,)
    _tensors: dict = field(default_factory=dict, repr=False)
    # Two-stream folds: the frame-level stream, part -> float32 (n, frames, dim), normalised; None: one stream.
    _f: dict | None = field(default=None, repr=False)
    frames_shape: tuple | None = None  # (frames, dim) of the frame-level stream
    frames_mean: np.ndarray | None = None  # its normalisation statistics, broadcastable to frames_shape
    frames_std: np.ndarray | None = None
    image_name: str = "mfcc"  # the input name of the image stream in two-stream batches
    # The search's (weights, alphas) indices into the train part; None: stratified by label over utterances.
    search_index: tuple | None = None
    # recipe.speed_perturb: part ("train", "val") -> float32 (factors, n, n_mfcc, frames, 1), the part's
    # utterances played at each speed factor, normalised as the utterances of other speakers; None: none.
    _x_speed: dict | None = field(default=None, repr=False)
    speed_factors: tuple = ()

    def __post_init__(self):
        if self.search_index is None:
            self.search_index = stratified_split(self._y["train"], self.weights_fraction,
                                                 self.seed + 7919 * self.fold.index)  # fmt: skip
        weights, alphas = (np.asarray(i, dtype=np.int64) for i in self.search_index)
        self.weights_index, self.alphas_index = weights, alphas
        sa = self.spec_augment
        if sa.enabled:
            n_mfcc, frames = self.input_shape[:2]
            if not 0 <= sa.time_mask < frames or not 0 <= sa.freq_mask < n_mfcc or sa.num_masks < 1:
                raise ValueError(
                    f"data.spec_augment: expected 0 <= time_mask < {frames} frames, 0 <= freq_mask < {n_mfcc} "
                    f"coefficients and num_masks >= 1, received {sa}"
                )

    # ------------------------------------------------------------------------------------ access
    def _part(self, part: str) -> str:
        if part not in PARTS:
            raise ValueError(f"part: expected one of {list(PARTS)}, received {part!r}")
        return part

    @property
    def weights_paths(self) -> list:
        return [self.train_paths[i] for i in self.weights_index]

    @property
    def alphas_paths(self) -> list:
        return [self.train_paths[i] for i in self.alphas_index]

    def _source(self, part: str) -> tuple:
        """``(stored part, indices into it or None)``: weights and alphas are views of the train part."""
        part = self._part(part)
        if part == "weights":
            return "train", self.weights_index
        if part == "alphas":
            return "train", self.alphas_index
        return part, None

    @property
    def two_stream(self) -> bool:
        return self._f is not None

    @property
    def model_input_shape(self):
        """The shape of one model input: ``input_shape``, or ``{image_name: input_shape, "frames":
        frames_shape}`` for a two-stream fold."""
        if not self.two_stream:
            return tuple(self.input_shape)
        return {self.image_name: tuple(self.input_shape), "frames": tuple(self.frames_shape)}

    def _inputs(self, source: str):
        if not self.two_stream:
            return self._x[source]
        return {self.image_name: self._x[source], "frames": self._f[source]}

    def arrays(self, part: str) -> tuple:
        """``(x, y)`` numpy arrays of a part (normalised x; a dict of them for a two-stream fold)."""
        source, index = self._source(part)
        x, y = self._inputs(source), self._y[source]
        if index is None:
            return x, y
        return tf.nest.map_structure(lambda a: a[index], x), y[index]

    def labels(self, part: str) -> np.ndarray:
        """int32 class ids of ``train``, ``val``, ``test``, ``weights`` or ``alphas``."""
        source, index = self._source(part)
        y = self._y[source]
        return y if index is None else y[index]

    def size(self, part: str) -> int:
        return len(self.labels(part))

    def steps(self, part: str, batch_size: int) -> int:
        """Batches in one pass over a part (the last one partial)."""
        return math.ceil(self.size(part) / batch_size)

    def with_validation_in_training(self) -> "FoldData":
        """This fold with the validation speakers' utterances added to the train part: the refit on every
        training speaker of the fold. The validation part stays (for monitoring only: its speakers are now
        trained on) and so do the normalisation statistics (the train part's)."""
        if not self.val_paths:
            raise ValueError(f"fold {self.fold.index} ({self.fold.name}): no validation part to add to training")
        frames = None if self._f is None else {**self._f, "train": np.concatenate([self._f["train"], self._f["val"]])}
        speed = None if self._x_speed is None else {
            **self._x_speed, "train": np.concatenate([self._x_speed["train"], self._x_speed["val"]], axis=1)}
        return replace(
            self,
            train_paths=self.train_paths + self.val_paths,
            _x={**self._x, "train": np.concatenate([self._x["train"], self._x["val"]])},
            _y={**self._y, "train": np.concatenate([self._y["train"], self._y["val"]])},
            _f=frames,
            _x_speed=speed,
            _tensors={},
        )

    # ---------------------------------------------------------------------------------- datasets
    def _tensor(self, part: str) -> tuple:
        if part not in self._tensors:
            self._tensors[part] = (tf.nest.map_structure(tf.constant, self._inputs(part)), tf.constant(self._y[part]))
        return self._tensors[part]

    def _augment_batch(self, x, y):
        import tensorflow_io as tfio

        sa = self.spec_augment

        def one(example):
            spec = tf.transpose(example[:, :, 0])  # [frames, n_mfcc]: tfio's [time, freq]
            for _ in range(sa.num_masks):
                if sa.time_mask > 0:
                    spec = tfio.audio.time_mask(spec, param=sa.time_mask + 1)
                if sa.freq_mask > 0:
                    spec = tfio.audio.freq_mask(spec, param=sa.freq_mask + 1)
            return tf.transpose(spec)[:, :, tf.newaxis]

        def images(batch):
            return tf.map_fn(one, batch, fn_output_signature=tf.TensorSpec(self.input_shape, tf.float32))

        if isinstance(x, dict):
            return {**x, self.image_name: images(x[self.image_name])}, y
        return images(x), y

    def _balanced_indices(self, part: str, seed: int) -> tf.data.Dataset:
        """``size(part)`` indices per pass, each drawn by a uniform class, then an example of it (each
        class's examples reshuffled every time they are used up)."""
        source, index = self._source(part)
        rows = np.arange(self.size(part)) if index is None else np.asarray(index)
        labels = self._y[source][rows]
        per_class = []
        for c in np.unique(labels):
            idx = np.asarray(rows[labels == c], dtype=np.int64)
            per_class.append(
                tf.data.Dataset.from_tensor_slices(idx).shuffle(len(idx), seed=seed + 31 * int(c) + 1).repeat()
            )
        weights = [1.0 / len(per_class)] * len(per_class)
        return tf.data.Dataset.sample_from_datasets(
            per_class, weights=weights, seed=seed, rerandomize_each_iteration=True
        ).take(self.size(part))

    def _versions_tensor(self, source: str):
        """``(1 + factors, n, ...)``: the part's images, then each speed factor's copies."""
        key = f"{source}+speed"
        if key not in self._tensors:
            self._tensors[key] = tf.constant(np.concatenate([self._x[source][np.newaxis], self._x_speed[source]]))
        return self._tensors[key]

    def dataset(
        self,
        part: str,
        batch_size: int,
        shuffle: bool,
        augment: bool = False,
        repeat: bool = False,
        seed: int = 0,
        balanced: bool = False,
        versions: bool = False,
    ) -> tf.data.Dataset:
        """Batches of a part. ``repeat`` makes it infinite with full batches only (a static batch size);
        ``balanced`` draws classes uniformly (as many examples per pass as the part holds); ``versions``
        takes each example from the original or one of its speed-perturbed copies (``recipe.speed_perturb``),
        uniformly, from a stateless RNG seeded per batch (the same batches from run to run)."""
        part = self._part(part)
        if versions and (self._x_speed is None or part not in self._x_speed):
            raise ValueError(
                f"fold {self.fold.index} ({self.fold.name}): no speed-perturbed copies of the {part} part; "
                "make_fold_data makes them when recipe.speed_perturb lists factors"
            )
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size: expected a positive integer, received {batch_size!r}")
        n = self.size(part)
        if n == 0:
            raise ValueError(f"fold {self.fold.index} ({self.fold.name}): the {part} part is empty")
        source, index = self._source(part)
        x_all, y_all = self._tensor(source)
        if balanced:
            ds = self._balanced_indices(part, seed)
        elif index is None:
            ds = tf.data.Dataset.range(n)
        else:
            ds = tf.data.Dataset.from_tensor_slices(np.asarray(index, dtype=np.int64))
        if shuffle and not balanced:
            ds = ds.shuffle(n, seed=seed, reshuffle_each_iteration=True)
        if repeat:
            ds = ds.repeat()
        ds = ds.batch(batch_size, drop_remainder=repeat)

        def gather(idx):
            return tf.nest.map_structure(lambda t: tf.gather(t, idx), x_all), tf.gather(y_all, idx)

        if versions:
            every = self._versions_tensor(source)
            count = int(every.shape[0])
            seeds = tf.data.Dataset.random(seed=seed + 6007, rerandomize_each_iteration=True).batch(2)

            def gather_version(idx, seed_pair):
                pair = tf.cast(seed_pair % (2**31 - 1), tf.int32)
                which = tf.random.stateless_uniform(tf.shape(idx), seed=pair, maxval=count, dtype=tf.int32)
                rows = tf.stack([tf.cast(which, tf.int64), tf.cast(idx, tf.int64)], axis=-1)
                return tf.gather_nd(every, rows), tf.gather(y_all, idx)

            ds = tf.data.Dataset.zip((ds, seeds)).map(gather_version, num_parallel_calls=tf.data.AUTOTUNE,
                                                      deterministic=True)  # fmt: skip
        else:
            ds = ds.map(gather, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        if augment and self.spec_augment.enabled:
            ds = ds.map(self._augment_batch, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        return ds.prefetch(tf.data.AUTOTUNE)

    def train(
        self, batch_size: int, shuffle: bool = True, augment: bool = True, repeat: bool = False, balanced: bool = False,
        versions: bool = False,
    ) -> tf.data.Dataset:
        """Training batches: shuffled per epoch (seeded), SpecAugment when ``data.spec_augment.enabled``,
        classes drawn uniformly when ``balanced``, original or speed-perturbed utterances with ``versions``."""
        return self.dataset("train", batch_size, shuffle, augment, repeat, seed=self.seed, balanced=balanced,
                            versions=versions)  # fmt: skip

    def val(self, batch_size: int) -> tf.data.Dataset:
        return self.dataset("val", batch_size, shuffle=False)

    def test(self, batch_size: int) -> tf.data.Dataset:
        return self.dataset("test", batch_size, shuffle=False)

    def search_split(self, batch_size: int, augment: bool = False) -> tuple:
        """``(weights, alphas)`` datasets over the train part (validation speakers excluded).

        ``data.weights_fraction`` of the train part trains the weights, seeded by ``config.seed`` and the fold:
        stratified by label over utterances, or by speaker (``data.search_split``, :func:`speaker_split`).
        Both are infinite (repeat, reshuffled every pass, full batches)
        so that ``tf.data.Dataset.zip((weights, alphas))`` never runs dry; an epoch is
        ``steps("weights", batch_size)`` steps.
        """
        weights = self.dataset("weights", batch_size, True, augment, repeat=True, seed=self.seed + 1)
        alphas = self.dataset("alphas", batch_size, True, augment, repeat=True, seed=self.seed + 2)
        return weights, alphas


def speaker_statistics(x: np.ndarray) -> tuple:
    """Per-coefficient ``(mean, std)`` float32 ``(n_mfcc, 1)`` over every frame of one speaker's utterances
    ``x`` ``(n, n_mfcc, frames)``; a constant coefficient gets std 1."""
    x64 = np.asarray(x, dtype=np.float64)
    mean = x64.mean(axis=(0, 2)).reshape(-1, 1)
    std = x64.std(axis=(0, 2)).reshape(-1, 1)
    std = np.where(std < 1e-6, 1.0, std)
    return mean.astype(np.float32), std.astype(np.float32)


def per_speaker_statistics(records: list, features, speakers=None) -> dict:
    """``{speaker: (mean, std)}`` (:func:`speaker_statistics`) over every utterance of each speaker in
    ``records`` (labels unused), for the speakers in ``speakers`` (default: all of them). ``features`` maps
    a list of paths to their ``(n, n_mfcc, frames)`` features."""
    wanted = sorted({r.speaker for r in records}) if speakers is None else sorted(set(speakers))
    paths = {s: [] for s in wanted}
    for r in records:
        if r.speaker in paths:
            paths[r.speaker].append(r.path)
    missing = [s for s in wanted if not paths[s]]
    if missing:
        raise ValueError(f"speaker normalisation: no utterance of speaker(s) {missing} to take statistics from")
    return {s: speaker_statistics(features(p)) for s, p in paths.items()}


def normalise_per_speaker(x: np.ndarray, speakers, statistics: dict) -> np.ndarray:
    """``x`` ``(n, n_mfcc, frames)`` z-scored row by row with the statistics of each row's speaker
    (``statistics`` as from :func:`per_speaker_statistics`); a new float32 array."""
    out = np.array(x, dtype=np.float32)
    who = np.asarray(speakers)
    if len(who) != len(out):
        raise ValueError(f"speaker normalisation: {len(out)} utterances but {len(who)} speaker names")
    for s in np.unique(who):
        mean, std = statistics[s]
        rows = who == s
        out[rows] = (out[rows] - mean) / std
    return out


def as_coefficient_layout(frames: np.ndarray) -> np.ndarray:
    """Frame-level sequences ``(n, frames, dim)`` as ``(n, dim, frames)``, the layout of the MFCC maps, so that the
    per-coefficient statistics above serve per dimension (and back: the transpose is its own inverse)."""
    return np.transpose(frames, (0, 2, 1))


def per_speaker_frame_statistics(records: list, frames_features, speakers=None) -> dict:
    """:func:`per_speaker_statistics` of frame-level sequences (``frames_features(paths)`` ``(n, frames, dim)``):
    ``{speaker: (mean, std)}`` per dimension, each ``(dim, 1)``."""
    return per_speaker_statistics(records, lambda paths: as_coefficient_layout(frames_features(paths)), speakers)


def normalise_frames_per_speaker(frames: np.ndarray, speakers, statistics: dict) -> np.ndarray:
    """:func:`normalise_per_speaker` of frame-level sequences ``(n, frames, dim)``, per dimension."""
    return as_coefficient_layout(normalise_per_speaker(as_coefficient_layout(frames), speakers, statistics))


def speaker_normalised_features(prepared, paths: list, statistics: dict | None = None) -> np.ndarray:
    """Features of ``paths`` z-scored per coefficient with the statistics of each one's speaker, taken over
    every utterance of that speaker in ``prepared`` (unlabelled: the test speakers' audio is used, never
    their labels; Busso et al., 2013). ``statistics`` (from :func:`per_speaker_statistics`) saves
    recomputing them when several parts of one corpus are normalised."""
    speaker = {r.path: r.speaker for r in prepared.records}
    who = [speaker[p] for p in paths]
    if statistics is None:
        statistics = per_speaker_statistics(prepared.records, prepared.features, who)
    return normalise_per_speaker(prepared.features(paths), who, statistics)


def make_fold_data(prepared, fold_index: int, config: ExperimentConfig, speed_copies: bool = True) -> FoldData:
    """Load fold ``fold_index`` (1-based) of ``prepared`` and normalise it with its train-part statistics.

    With ``recipe.speed_perturb`` (and ``speed_copies``; the search does without them) the train and
    validation parts also get their speed-perturbed copies (:func:`speed_copies_of`)."""
    data = config.data
    fold = prepared.fold(fold_index)
    val_speakers = validation_speakers(fold, prepared.records, data.val_fraction, config.seed)
    val_set = set(val_speakers)
    speaker = {r.path: r.speaker for r in prepared.records}
    train_paths = [p for p in fold.train if speaker[p] not in val_set]
    val_paths = [p for p in fold.train if speaker[p] in val_set]
    test_paths = list(fold.test)
    if not train_paths:
        raise ValueError(f"fold {fold.index} ({fold.name}): no training utterances left after validation")
    if data.normalize not in NORMALIZATIONS:
        raise ValueError(f"data.normalize: expected one of {list(NORMALIZATIONS)}, received {data.normalize!r}")
    if data.search_split not in SEARCH_SPLITS:
        raise ValueError(f"data.search_split: expected one of {list(SEARCH_SPLITS)}, received {data.search_split!r}")
    statistics = None
    if data.normalize == "speaker":  # each speaker of the fold once, for all three parts
        statistics = per_speaker_statistics(prepared.records, prepared.features, [speaker[p] for p in fold.train + test_paths])

    def features(paths):
        if statistics is None:
            return prepared.features(paths)
        return speaker_normalised_features(prepared, paths, statistics)

    x_train = features(train_paths)
    mean, std = normalization_stats(x_train, data.normalize)

    def norm(x: np.ndarray) -> np.ndarray:
        return ((x[..., np.newaxis] - mean) / std).astype(np.float32)

    x_parts = {"train": norm(x_train)}
    del x_train
    for part, paths in (("val", val_paths), ("test", test_paths)):
        x_parts[part] = norm(features(paths)) if paths else np.zeros((0, *prepared.input_shape), np.float32)
    frames = _frames_stream(prepared, data.normalize, train_paths, val_paths, test_paths,
                            [speaker[p] for p in fold.train + test_paths], speaker)
    factors = check_speed_factors(config.recipe.speed_perturb) if speed_copies else []
    x_speed = None
    if factors:
        if frames:
            raise ValueError("recipe.speed_perturb: the frame-level stream of a two-stream corpus has no "
                             "speed-perturbed copies; set recipe.speed_perturb: []")  # fmt: skip
        x_speed = speed_copies_of(prepared, config, factors, {"train": train_paths, "val": val_paths}, norm)
    y_parts = {
        "train": prepared.labels(train_paths),
        "val": prepared.labels(val_paths),
        "test": prepared.labels(test_paths),
    }
    search_index = None
    if data.search_split == "speaker":
        gender_of = {r.speaker: r.gender for r in prepared.records}
        search_index = speaker_split([speaker[p] for p in train_paths], gender_of, data.weights_fraction,
                                     config.seed + 7919 * fold.index)  # fmt: skip
        _warn_missing_classes(fold, y_parts["train"], search_index, list(prepared.classes))
    log.info(
        "fold %d (%s): train %d, val %d (speakers %s), test %d (speakers %s)%s",
        fold.index, fold.name, len(train_paths), len(val_paths), "+".join(val_speakers), len(test_paths),
        "+".join(fold.test_speakers), " [SYNTHETIC corpus]" if getattr(prepared, "synthetic", False) else "",
    )  # fmt: skip
    return FoldData(
        fold=fold,
        classes=list(prepared.classes),
        input_shape=tuple(prepared.input_shape),
        train_paths=train_paths,
        val_paths=val_paths,
        test_paths=test_paths,
        val_speakers=list(val_speakers),
        mean=mean,
        std=std,
        seed=config.seed,
        spec_augment=data.spec_augment,
        weights_fraction=data.weights_fraction,
        synthetic=bool(getattr(prepared, "synthetic", False)),
        _x=x_parts,
        _y=y_parts,
        search_index=search_index,
        _x_speed=x_speed,
        speed_factors=tuple(factors),
        **frames,
    )


def speed_copies_of(prepared, config: ExperimentConfig, factors: list, parts: dict, norm) -> dict:
    """``{part: float32 (len(factors), n, *input_shape)}``: the utterances of each part of ``parts``
    (``{name: paths}``) played at each speed factor (:mod:`emodarts_tf.data.perturbation`; extracted into the
    feature cache once), normalised as ``data.normalize`` asks and then by ``norm`` (the fold's train-part
    statistics). With ``normalize: speaker`` each factor's copies of a speaker are another speaker: z-scored
    with the statistics of that speaker's copies. A copy that cannot be computed is reported, and the
    original utterance stands in for it."""
    from emodarts_tf.data.cache import FeatureCache
    from emodarts_tf.data.perturbation import speed_extractor

    data = config.data
    speaker = {r.path: r.speaker for r in prepared.records}
    speakers = sorted({speaker[p] for paths in parts.values() for p in paths})
    wanted = set(speakers)
    own = [r.path for r in prepared.records if r.speaker in wanted]  # their statistics need every utterance
    out = {part: [] for part in parts}
    for factor in factors:
        cache = FeatureCache(data.cache_dir, speed_extractor(prepared.feature_config, factor))
        errors = cache.extract(own, workers=data.workers, progress=True, lock_timeout_s=data.lock_timeout_s)
        for path, problem in sorted(errors.items()):
            log.warning("%s: no copy at speed %g (%s); the original utterance stands in for it", path, factor, problem)

        # Every utterance of the parts' speakers, read once: the copies, or the originals that stand in.
        copies = np.zeros((len(own), *prepared.input_shape[:2]), np.float32)
        done = [i for i, p in enumerate(own) if p not in errors]
        failed = [i for i, p in enumerate(own) if p in errors]
        if done:
            copies[done] = cache.load([own[i] for i in done])
        if failed:
            copies[failed] = prepared.features([own[i] for i in failed])
        row = {p: i for i, p in enumerate(own)}

        def rows(paths, copies=copies, row=row):
            return copies[[row[p] for p in paths]]

        statistics = per_speaker_statistics(prepared.records, rows, speakers) if data.normalize == "speaker" else None
        for part, paths in parts.items():
            if not paths:
                out[part].append(np.zeros((0, *prepared.input_shape), np.float32))
                continue
            x = rows(paths)
            if statistics is not None:
                x = normalise_per_speaker(x, [speaker[p] for p in paths], statistics)
            out[part].append(norm(x))
    return {part: np.stack(arrays) for part, arrays in out.items()}


def _warn_missing_classes(fold: Fold, labels: np.ndarray, search_index: tuple, classes: list) -> None:
    """Log a warning naming the classes that a speaker-disjoint search split leaves out of one side."""
    for side, idx in zip(("weights", "alphas"), search_index):
        missing = sorted(set(range(len(classes))) - set(np.asarray(labels)[idx].tolist()))
        if missing:
            log.warning("fold %d (%s): the %s speakers of the search split have no utterance of class(es) %s",
                        fold.index, fold.name, side, [classes[c] for c in missing])  # fmt: skip


def _frames_stream(prepared, mode: str, train_paths: list, val_paths: list, test_paths: list, fold_speakers: list,
                   speaker: dict) -> dict:
    """The frame-level stream of a two-stream corpus as FoldData fields (``{}`` for one stream): each part
    ``(n, frames, dim)``, normalised per dimension as the image is per coefficient (``data.normalize``; per
    speaker from every utterance of the speaker, unlabelled). ``prepared`` has ``frames_features(paths)``
    ``(n, frames, dim)``, ``frames_shape`` and ``image_name`` when it holds two streams."""
    shape = getattr(prepared, "frames_shape", None)
    if not shape:
        return {}

    statistics = None
    if mode == "speaker":
        statistics = per_speaker_frame_statistics(prepared.records, prepared.frames_features, fold_speakers)

    def load(paths):  # (n, dim, frames): the layout of the image functions above
        raw = prepared.frames_features(paths)
        if statistics is not None:
            raw = normalise_frames_per_speaker(raw, [speaker[p] for p in paths], statistics)
        return as_coefficient_layout(raw)

    f_train = load(train_paths)
    mean, std = (a[..., 0] for a in normalization_stats(f_train, mode))  # (dim, 1) or (1, 1)

    def norm(f):
        return as_coefficient_layout((f - mean) / std).astype(np.float32)

    parts = {"train": norm(f_train)}
    for part, paths in (("val", val_paths), ("test", test_paths)):
        parts[part] = norm(load(paths)) if paths else np.zeros((0, *shape), np.float32)
    return {"_f": parts, "frames_shape": tuple(shape), "frames_mean": mean.T.astype(np.float32),
            "frames_std": std.T.astype(np.float32), "image_name": getattr(prepared, "image_name", "mfcc")}
