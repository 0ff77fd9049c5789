"""Typed experiment configuration: dataclasses loaded from YAML and overridden from the command line.

A config file (``configs/*.yaml``) holds any subset of the sections below; what it leaves out keeps the
dataclass default. The defaults are the emoDARTS paper's settings (Rajapakshe et al., 2024) where the
paper gives one. Command-line overrides use dotted keys, e.g. ``--set search.epochs=3``; values are
parsed as YAML scalars or lists (``--set space.seq_ops=[lstm_1,skip_connect]``).
"""
from __future__ import annotations

import dataclasses
import re
import typing
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Optional

import yaml

CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"


@dataclass
class FeatureConfig:
    """The 2-D feature map of an utterance (EmotionNAS: stream A): MFCCs, their log-mel energies or a
    log-magnitude spectrogram.

    The defaults are the emoDARTS paper's MFCC preset: 32750 Hz, 8 s, 128 MFCCs, max-pool 4 in time. Only the
    fields of the chosen ``kind`` enter the cache key (``features.feature_config_hash``): an MFCC config's key
    hashes every field but ``kind`` and the spectrogram's, a log-mel config's ``kind`` and the fields it reads.
    """

    sample_rate: int = 32750
    duration_s: float = 8.0
    n_mfcc: int = 128
    n_fft: int = 2048
    hop_length: int = 512
    n_mels: int = 128
    fmin: float = 0.0
    fmax: Optional[float] = None
    time_pool: int = 4  # max-pooling over time, every kind
    # mfcc | logmel (the MFCCs' log-mel energies in dB, before their DCT: (n_mels, frames)) | spectrogram
    # (emodarts_tf/data/spectrogram.py)
    kind: str = "mfcc"
    # kind spectrogram: Hamming window and hop in milliseconds, and the frequency bands the STFT bins are
    # averaged into (the map's height).
    window_ms: float = 25.0
    hop_ms: float = 11.0
    freq_bins: int = 128


@dataclass
class FramesConfig:
    """A frame-level sequence ``(frames, dim)`` per utterance (EmotionNAS: stream B), see
    ``emodarts_tf/data/frame_features.py``."""

    source: str = "opensmile"  # opensmile | model | npy
    opensmile_set: str = "eGeMAPSv02"  # eGeMAPSv02 (25 LLDs) | ComParE_2016 (65 LLDs)
    model_path: Optional[str] = None  # source model: a TF SavedModel folder or a .keras file (waveform -> frames)
    model_output: Optional[str] = None  # source model: the output to use when it has several
    # source npy: None reads the CSV manifest's `features` column; a folder holds <npy_dir>/<audio path relative
    # to data.root (a CSV manifest's folder), suffix .npy>, e.g. wav/03a01Fa.wav -> <npy_dir>/wav/03a01Fa.npy.
    npy_dir: Optional[str] = None
    sample_rate: int = 16000  # opensmile and model: audio is resampled to this rate
    duration_s: float = 8.0  # opensmile and model: longer audio is cut (its start kept) before extraction
    frames: int = 200  # fixed length after pooling: longer sequences cut (start kept), shorter zero-padded
    time_pool: int = 4  # frames pooled into one (1: none); the last window may be partial
    pool: str = "mean"  # max | mean
    dim: Optional[int] = None  # values per frame; None: from the source (the set, the model, the arrays)


@dataclass
class SpecAugmentConfig:
    """Time and frequency masking (tensorflow-io) applied to training batches only."""

    enabled: bool = False
    time_mask: int = 0  # widest time mask, in frames
    freq_mask: int = 0  # widest frequency mask, in coefficients
    num_masks: int = 1


@dataclass
class DataConfig:
    """Which corpus, which utterances, which folds, and how batches are streamed."""

    corpus: str = "demo"  # iemocap | msp-improv | msp-podcast | emodb | csv | demo
    root: Optional[str] = None  # corpus root (a CSV file for `csv`); unused for `demo`
    encoding: str = "utf-8-sig"  # text encoding of a `csv` manifest (utf-8, with or without a BOM)
    protocol: str = "default"  # default | loso | loso-session | emodarts | official | emodb5
    classes: Optional[list] = None  # None: the corpus's standard 4-class set (csv: every label of the manifest)
    selection: str = "all"  # IEMOCAP: improvised | scripted | all
    merge_exc: bool = False  # IEMOCAP: count `exc` as `hap`
    msp_improv_labels: str = "consensus"  # MSP-IMPROV: consensus | target
    cache_dir: str = "cache"  # feature cache (shared by runs with the same feature config)
    workers: int = 0  # extraction processes; 0 = all cores
    # Seconds a command waits for another process's lock on the feature cache (an extraction in progress)
    # before it gives up with an error naming the holder (pid, host, since when).
    lock_timeout_s: float = 300.0
    # A class spoken by fewer speakers is dropped by prepare (logged, counted in prepared.json), so that no
    # fold's training part lacks it; 1 keeps every class.
    min_speakers_per_class: int = 2
    # coefficient | global | none: statistics of the fold's training part; speaker: z-scores per speaker and
    # coefficient from each speaker's own utterances (uses the test speakers' unlabelled audio)
    normalize: str = "coefficient"
    weights_fraction: float = 0.5  # search split: share of the training part that trains the weights
    # How the search splits the training part between weights and alphas: "utterance" (stratified by label;
    # every speaker on both sides, the paper's) or "speaker" (no speaker on both sides, genders spread: the
    # alphas are then chosen for speakers the weights never saw, as the evaluation asks).
    search_split: str = "utterance"
    val_fraction: float = 0.2  # share of training speakers held out for validation (at least one)
    shuffle_buffer: int = 2048
    spec_augment: SpecAugmentConfig = field(default_factory=SpecAugmentConfig)


@dataclass
class SearchSpaceConfig:
    """Sizes and candidate ops of the emoDARTS search space (and of the retrained network)."""

    init_channels: int = 8
    cnn_cells: int = 4  # reduction cells at cnn_cells // 3 and 2 * cnn_cells // 3
    cnn_nodes: int = 4
    stem_multiplier: int = 3
    cnn_ops: Any = "all"  # "all" or a list of CNN op names
    # Reduction cells halve frequency and time (the paper's); false: frequency only, so the SeqNN cells read
    # every frame of the MFCC image (at the cost of larger maps in the cells after a reduction).
    reduce_time: bool = True
    # How the last CNN map becomes the SeqNN cells' sequence over time, before a linear projection to
    # seq_hidden: "avg" (mean over frequency, the paper's network), "max", or "flatten" (each frame's frequency
    # rows x channels, so the projection learns which frequency region matters, as convolutional-recurrent SER
    # models read a map).
    frequency_pooling: str = "avg"
    seq_cells: int = 4
    seq_nodes: int = 4
    seq_hidden: Optional[int] = None  # None: the channel count of the CNN output
    seq_ops: Any = "all"  # "all" | "lstm" | "rnn" | "lstm_att" | "rnn_att" | a list of SeqNN op names
    # Over time, before the classifier: "mean" (the paper's network) or "mean_std" (mean and standard
    # deviation of each feature, the statistics pooling of x-vectors; twice the classifier's inputs).
    pooling: str = "mean"
    dropout: float = 0.0  # before the classifier
    # EmotionNAS (--method emotionnas) only: how the two streams meet before the classifier.
    # supplement: each stream adds what it reads from the other (gated cross-attention over time);
    # concat: pooled streams concatenated; spectrogram / frames: that stream alone (ablations).
    fusion: str = "supplement"
    # How the supplement module starts. random: each stream adds its gated context from the first step.
    # identity: the context also passes a learned scale tanh(s), s = 0 at the start (the gated cross-attention
    # of Flamingo, Alayrac et al. 2022), so the module starts as the identity and the fused network as the
    # concatenation of the two projected streams; it learns how much of the other stream to add.
    supplement_init: str = "random"


@dataclass
class SearchConfig:
    """The bilevel DARTS search (the paper's settings)."""

    # emodarts: MFCC image -> CNN cells -> SeqNN cells (the paper); emotionnas: two streams, the image through
    # CNN cells and a frame-level sequence (``frames``) through SeqNN cells, fused (``space.fusion``).
    method: str = "emodarts"
    epochs: int = 50
    batch_size: int = 64
    w_lr: float = 0.025
    w_lr_min: float = 0.001
    w_momentum: float = 0.9
    w_weight_decay: float = 3e-4
    grad_clip: float = 5.0
    alpha_lr: float = 3e-4
    # None: alpha_lr as given. A number B: alpha_lr = B / (alpha steps of the search), the distance an Adam
    # step of alpha_lr can move an alpha over the whole search (DARTS on CIFAR: 3e-4 x ~19.5k steps = 5.9;
    # PC-DARTS: 6e-4 x ~3.4k = 2.1). Keeps short searches on small corpora from ending at their random start.
    alpha_budget: Optional[float] = None
    alpha_beta1: float = 0.5
    alpha_beta2: float = 0.999
    alpha_weight_decay: float = 1e-3
    alpha_init_scale: float = 1e-3
    order: str = "first"  # first | second (unrolled)
    warmup_epochs: int = 0  # epochs of weight-only training before alphas move
    # Drop-path in the supernet (one of RobustDARTS's regularisers, Zela et al., ICLR 2020): in both steps, each CNN
    # edge's candidates but the identity are zeroed per example with probability drop_path * epoch / epochs (epoch
    # from 0, DARTS's retraining schedule). First order only. 0: off, the paper's search.
    drop_path: float = 0.0
    # Progressive pruning (P-DARTS's search-space approximation, search/pruning.py): the candidates each edge keeps
    # after each of len(prune) + 1 equal stages of the alpha epochs, e.g. [5, 3] (P-DARTS: 8 -> 5 -> 3); at the last
    # pruning `none` goes first. []: off, the paper's search. Not with search.select perturbation.
    prune: list = field(default_factory=list)
    # Edge normalisation (PC-DARTS, search/edge_normalization.py): a searched weight per edge, softmaxed over the
    # edges into each node, scales the edge's mixture and ranks the node's edges in the genotype. False: the paper's
    # search (edges ranked by their best op's weight). Not with search.select perturbation.
    edge_norm: bool = False
    # Partial channel connections (PC-DARTS, Xu et al., ICLR 2020; MixedOp(partial_channels=K)): each CNN edge's
    # candidates see 1/K of its channels (the rest bypass the mixture and the channels are shuffled), about 1/K of
    # the candidates' compute and memory. K must divide every CNN cell's channels. 1: off, the paper's search.
    partial_channels: int = 1
    max_skip: Optional[int] = 2  # cap on skip_connect per normal/SeqNN cell of the genotype (P-DARTS: 2)
    steps_per_epoch: Optional[int] = None  # None: one pass over the weights part
    jit_compile: bool = False  # XLA; slower on CPUs, opt-in
    # TensorFlow's graph optimiser (Grappler) on the traced steps. False skips its rewriting: less tracing,
    # slower steps; a gain only for short searches (docs/performance.md; utils.runtime.graph_optimization).
    graph_optimization: bool = True
    # The folds one process searches (--fold all) share one supernet and its traced steps: each later fold
    # restores the supernet's initial state instead of building and tracing it again (search/reuse.py). The
    # same values as a fresh build; false builds each fold anew.
    reuse_supernet: bool = True
    mixed_precision: bool = False
    # Memory: recompute each CNN mixed op's forward in the backward pass instead of keeping its candidates'
    # activations (gradient checkpointing per edge); costs about one extra CNN forward per backward.
    recompute_cnn: bool = True
    # SeqNN: one time loop for all recurrent candidates of the edges reading one state (same function and
    # weights count as one Keras layer per candidate; far less memory and tracing). False: Keras layers.
    seq_grouped: bool = True
    # Memory: the same checkpointing for the grouped SeqNN banks (one bank's time-loop activations at a time;
    # about one extra SeqNN forward per backward).
    recompute_seq: bool = True
    # Trace only the forward+backward pass and run the update arithmetic between passes eagerly (far less
    # graph memory in large supernets, some dispatch time per step; see SearchModel.compile). None: on for
    # supernets of at least 10 M weights (the paper's has 128 M), where graphs dominate the memory and the
    # dispatch is a small share of a step; off for small ones, whose steps it would slow down 2-3x.
    eager_updates: Optional[bool] = None
    # Speed: the passes that need only the alpha gradients (first order's alpha pass, second order's two
    # finite-difference passes) run a traced forward+backward without weight gradients: about a third less time
    # per such pass with eager updates, for the memory of a second traced function (about 0.6 GB at the
    # paper's size). Same values; no effect on the one-graph step, where Grappler prunes them already.
    arch_only_passes: bool = True
    strategy: str = "auto"  # auto | default | mirrored | multi_worker (TF_CONFIG; README, Several machines)
    # best | final | perturbation: the genotype of genotypes.json and cells/ (best and final are always written;
    # perturbation: DARTS-PT's selection by removing candidates from the trained supernet, genotype_pt.json,
    # search.perturbation_selection)
    select: str = "best"
    # perturbation selection: weight steps of the search's weight step after each projected edge and pruned node
    # (DARTS-PT tunes the supernet between its decisions); null: one epoch of the weights part
    pt_tune_steps: Optional[int] = None
    checkpoints_to_keep: int = 2  # latest search checkpoints kept per fold

    @property
    def two_stream(self) -> bool:
        """Whether this search reads two streams (``method: emotionnas``), so a corpus is prepared with both."""
        return self.method == "emotionnas"


@dataclass
class TrainConfig:
    """Retraining a genotype from scratch (the paper's 'augment' stage)."""

    epochs: int = 50
    batch_size: int = 64
    lr: float = 0.025
    lr_min: float = 0.001
    momentum: float = 0.9
    weight_decay: float = 3e-4
    # coupled: L2 added to the gradient before momentum (the paper's PyTorch SGD, and the search's);
    # decoupled: Keras' weight_decay (w -= lr * wd * w), about 10x weaker at momentum 0.9.
    weight_decay_mode: str = "coupled"
    grad_clip: float = 5.0
    drop_path: float = 0.0
    aux_weight: float = 0.0  # > 0 adds the auxiliary head after the 2/3 reduction cell
    # EmotionNAS: > 0 gives each of the two streams its own classifier before the fusion, its loss weighted by this
    # (each stream is also asked to classify alone; ignored when one stream is retrained).
    stream_heads: float = 0.0
    # EmotionNAS: in training, the probability that an example loses one whole stream before the fusion (modality
    # dropout, ModDrop; ignored when one stream is retrained).
    stream_dropout: float = 0.0
    patience: int = 10  # early stopping on validation UA
    init_channels: Optional[int] = None  # None: space.init_channels
    cnn_cells: Optional[int] = None  # None: space.cnn_cells
    seq_cells: Optional[int] = None  # None: space.seq_cells
    seq_hidden: Optional[int] = None  # None: space.seq_hidden (width of the retrained SeqNN cells)
    # EmotionNAS: None retrains a two-stream genotype with its own fusion; supplement | concat | spectrogram |
    # frames | late retrains its cells with that fusion (the ablations: plain concatenation, each stream alone;
    # late: a classifier per stream, each trained on its own loss, their class probabilities averaged).
    fusion: Optional[str] = None
    dropout: Optional[float] = None  # None: space.dropout (before the classifier of the retrained network)
    jit_compile: bool = False
    mixed_precision: bool = False
    # default: one process (the default strategy); mirrored: MirroredStrategy over the local devices;
    # multi_worker: MultiWorkerMirroredStrategy over the hosts of TF_CONFIG (README, Several machines);
    # auto: MirroredStrategy when several GPUs are visible. Not part of a run's fingerprint.
    strategy: str = "default"


@dataclass
class RecipeConfig:
    """How training batches and targets are made for every model trained on a fold (emoDARTS and random
    genotypes, baselines): see ``emodarts_tf/evaluation/recipe.py``. Every part is off by default."""

    class_balanced: bool = False  # draw a class uniformly, then an example of it
    time_shift: float = 0.0  # widest shift in time, as a share of the frames (vacated frames = 0)
    mixup: float = 0.0  # Beta(a, a) parameter of mixup; 0 = off
    label_smoothing: float = 0.0
    ema: float = 0.0  # momentum of the exponential moving average of the weights; 0 = off
    # Stochastic weight averaging: the model kept is the mean of the weights at the end of each of the last
    # swa x epochs (their share of the schedule); 0 = off (the best validation epoch is kept).
    swa: float = 0.0
    # After selecting the epoch on the validation speakers, train a fresh model on the training and
    # validation speakers together for that many epochs; it is the model tested and saved.
    refit: bool = False
    # With refit: the model tested and saved is the mean of the probabilities of both trained models (the first
    # training's, without the validation speakers, and the refit), one model.keras holding both networks
    # (evaluation/ensemble.py). Training is unchanged; inference costs both networks. Without refit: no effect.
    ensemble: bool = False
    # Speed perturbation (Ko et al., 2015): factors f of copies of each training utterance played f times
    # faster (pitch and formants x f, as another speaker); every epoch each training example is drawn from
    # the original or one of its copies, uniformly. Empty: off.
    speed_perturb: list = field(default_factory=list)


@dataclass
class BaselineConfig:
    """Keras Tuner baselines over the same MFCCs."""

    family: str = "cnn_lstm"  # cnn | lstm | cnn_lstm | cnn_lstm_att
    tuner: str = "random"  # hyperband | bayesian | random
    trials: int = 10
    epochs: int = 50
    batch_size: int = 64
    patience: int = 10
    space_file: str = "baselines.yaml"  # search spaces, relative to configs/
    tuning_epochs: Optional[int] = None  # most epochs of one trial (hyperband: max_epochs); None: epochs
    tuning_patience: Optional[int] = None  # early stopping inside a trial, on val UA; None: patience
    hyperband_factor: int = 3
    augment: bool = True  # SpecAugment masking of training batches (when data.spec_augment is enabled)
    jit_compile: bool = False  # XLA; slower on CPUs, opt-in


@dataclass
class RuntimeConfig:
    """TensorFlow's thread pools (``emodarts_tf/utils/threads.py``): null picks them from the machine at start
    (CPU only: one thread per op, inter-op = the usable cores; with a GPU: TensorFlow's defaults), 0 is
    TensorFlow's default, n >= 1 is n threads. Same results up to rounding (which training can amplify); time only."""

    inter_op_threads: Optional[int] = None
    intra_op_threads: Optional[int] = None


@dataclass
class ExperimentConfig:
    seed: int = 0
    data: DataConfig = field(default_factory=DataConfig)
    features: FeatureConfig = field(default_factory=FeatureConfig)
    frames: FramesConfig = field(default_factory=FramesConfig)
    space: SearchSpaceConfig = field(default_factory=SearchSpaceConfig)
    search: SearchConfig = field(default_factory=SearchConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    recipe: RecipeConfig = field(default_factory=RecipeConfig)
    baseline: BaselineConfig = field(default_factory=BaselineConfig)
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)

    def to_dict(self) -> dict:
        return asdict(self)


def _is_dataclass_type(tp: Any) -> bool:
    return isinstance(tp, type) and dataclasses.is_dataclass(tp)


def _build(cls: type, values: dict, where: str):
    """Instantiate dataclass `cls` from `values`, recursing into nested sections; unknown keys are errors."""
    if not isinstance(values, dict):
        raise ValueError(f"{where}: expected a mapping, received {type(values).__name__}: {values!r}")
    hints = typing.get_type_hints(cls)
    known = {f.name: f for f in fields(cls)}
    kwargs = {}
    for key, value in values.items():
        if key not in known:
            raise ValueError(
                f"{where}: unknown key {key!r}; expected one of {sorted(known)}"
            )
        tp = hints[key]
        if _is_dataclass_type(tp):
            kwargs[key] = _build(tp, value or {}, f"{where}.{key}")
        else:
            kwargs[key] = _coerce(value, tp, f"{where}.{key}")
    return cls(**kwargs)


_FLOAT_TEXT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Check a scalar against its annotation; ints are accepted where floats are expected."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin is typing.Union:  # Optional[X]
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(value, inner[0], where)
    if tp is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if tp is float and isinstance(value, str) and _FLOAT_TEXT.fullmatch(value.strip()):
        # PyYAML reads exponents without a dot (1e-4) as text, in files and in --set alike.
        return float(value)
    if tp is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    if tp is bool and isinstance(value, bool):
        return value
    if tp is str and isinstance(value, str):
        return value
    if tp is list or origin is list:
        if isinstance(value, list):
            return value
    raise ValueError(f"{where}: expected {getattr(tp, '__name__', tp)}, received {value!r}")


def _deep_merge(base: dict, update: dict) -> dict:
    out = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def parse_override(text: str) -> dict:
    """Turn ``a.b.c=value`` into ``{"a": {"b": {"c": value}}}`` with a YAML-parsed value."""
    if "=" not in text:
        raise ValueError(f"override {text!r}: expected KEY=VALUE with a dotted key, e.g. search.epochs=3")
    key, raw = text.split("=", 1)
    parts = [p for p in key.strip().split(".") if p]
    if not parts:
        raise ValueError(f"override {text!r}: empty key")
    value = yaml.safe_load(raw) if raw.strip() else None
    nested: dict = {parts[-1]: value}
    for part in reversed(parts[:-1]):
        nested = {part: nested}
    return nested


def parse_variant(text: str) -> tuple[str, list[str]]:
    """A benchmark's ``--variant NAME=key=value[,key=value...]`` (``NAME=`` for the config as it is): the
    name (letters, digits, ``-``, ``_``; it names a run folder) and its ``key=value`` overrides, split at the
    commas outside brackets, so that a list value stays whole (``speed=recipe.speed_perturb=[0.9,1.1]``)."""
    if "=" not in text:
        raise ValueError(f"--variant {text!r}: expected NAME=key=value[,key=value...] (or NAME= for none)")
    name, rest = text.split("=", 1)
    name = name.strip()
    if not name or not all(c.isalnum() or c in "-_" for c in name):
        raise ValueError(f"--variant {text!r}: the name must be letters, digits, '-' or '_'")
    items, depth, start = [], 0, 0
    for i, c in enumerate(rest):
        depth += {"[": 1, "{": 1, "]": -1, "}": -1}.get(c, 0)
        if c == "," and depth == 0:
            items.append(rest[start:i])
            start = i + 1
    items.append(rest[start:])
    overrides = [item.strip() for item in items if item.strip()]
    for item in overrides:
        if "=" not in item:
            raise ValueError(f"--variant {text!r}: {item!r} is not key=value")
    return name, overrides


def resolve_config_path(path: str | Path) -> Path:
    """A config path as given, or a bare name looked up in ``configs/`` (with or without ``.yaml``)."""
    candidate = Path(path)
    if candidate.is_file():
        return candidate
    for name in (str(path), f"{path}.yaml"):
        in_dir = CONFIG_DIR / name
        if in_dir.is_file():
            return in_dir
    raise ValueError(f"config {str(path)!r}: no such file (looked in the working directory and {CONFIG_DIR})")


def load_yaml_dict(path: str | Path) -> dict:
    resolved = resolve_config_path(path)
    try:
        loaded = yaml.safe_load(resolved.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise ValueError(f"config {resolved}: not valid YAML ({exc})") from exc
    if not isinstance(loaded, dict):
        raise ValueError(f"config {resolved}: expected a mapping at the top level")
    # `extends: other.yaml` layers this file on top of another config.
    parent = loaded.pop("extends", None)
    if parent is not None:
        loaded = _deep_merge(load_yaml_dict(parent), loaded)
    return loaded


def config_from_dict(values: dict, where: str = "config") -> ExperimentConfig:
    return _build(ExperimentConfig, values, where)


def load_config(
    path: str | Path | None = None,
    overrides: list[str] | None = None,
    updates: dict | None = None,
) -> ExperimentConfig:
    """Load ``path`` (or the defaults), then apply ``updates`` (a nested dict) and dotted ``overrides``."""
    values = load_yaml_dict(path) if path is not None else {}
    where = str(path) if path is not None else "config"
    if updates:
        values = _deep_merge(values, updates)
    for text in overrides or []:
        values = _deep_merge(values, parse_override(text))
    return config_from_dict(values, where)


def save_config(config: ExperimentConfig, path: str | Path) -> None:
    from emodarts_tf.utils.io import atomic_write_text

    atomic_write_text(path, yaml.safe_dump(config.to_dict(), sort_keys=False))
