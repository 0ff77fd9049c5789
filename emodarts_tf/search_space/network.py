"""The emoDARTS networks: the searchable backbone and the fixed (discrete) network of a genotype.

Both follow the same plan, NHWC with H = MFCC coefficients and W = frames:

    MFCC (B, n_mfcc, frames, 1) -> stem Conv3x3 + BN (stem_multiplier * C channels)
    -> cnn_cells DARTS cells (reduction cells at ``reduction_indices(cnn_cells)``, channels doubling;
       a single CNN cell is a normal cell; a reduction halves frequency and time, or frequency only
       when ``space.reduce_time`` is False)
    -> a real sequence over time (B, T = W', F): the mean over frequency (F = C'), or each frame's frequency
       rows and channels flattened (F = H' * C'; ``space.frequency_pooling``)
    -> Dense to ``seq_hidden`` (None: C') -> seq_cells SeqNN cells over T
    -> TimePooling over time (mean, or mean and standard deviation: ``space.pooling``) -> dropout
    -> Dense classifier (float32 logits, also under mixed precision).
"""
from __future__ import annotations

import dataclasses

import keras
from keras import ops

from emodarts_tf.config import SearchSpaceConfig
from emodarts_tf.search_space.cnn_cell import FixedCNNCell, SearchCNNCell
from emodarts_tf.search_space.genotype import CELL_KINDS, Genotype, derive_genotype
from emodarts_tf.search_space.mixed_op import MixedOp
from emodarts_tf.search_space.operations import batch_norm, reduced_dim
from emodarts_tf.search_space.primitives import num_edges, reduction_indices, resolve_ops
from emodarts_tf.search_space.seq_bank import share_functions
from emodarts_tf.search_space.seq_cell import FixedSeqCell, SearchSeqCell
from emodarts_tf.search_space.validation import check_bool, check_choice, check_int, check_rate

_register = keras.saving.register_keras_serializable(package="emodarts_tf")


def as_space(space) -> SearchSpaceConfig:
    """A SearchSpaceConfig from itself or from its dict (as ``get_config`` stores it)."""
    if isinstance(space, SearchSpaceConfig):
        return space
    if isinstance(space, dict):
        known = {f.name for f in dataclasses.fields(SearchSpaceConfig)}
        unknown = sorted(set(space) - known)
        if unknown:
            raise ValueError(f"space: expected keys from {sorted(known)}, received unknown key(s) {unknown}")
        return SearchSpaceConfig(**space)
    raise ValueError(f"space: expected a SearchSpaceConfig or a dict, received {type(space).__name__}")


def apply_train_overrides(space: SearchSpaceConfig, train) -> SearchSpaceConfig:
    """The space of the retrained network: ``train.init_channels / cnn_cells / seq_cells / seq_hidden / dropout``
    where set."""
    updates = {key: getattr(train, key) for key in ("init_channels", "cnn_cells", "seq_cells", "seq_hidden", "dropout")
               if getattr(train, key, None) is not None}
    return dataclasses.replace(as_space(space), **updates)


# How EmotionNAS's information supplement starts (``space.supplement_init``, ``InformationSupplement(init=...)``).
SUPPLEMENT_INITS = ("random", "identity")


def check_supplement_init(init, argument: str = "space.supplement_init") -> str:
    """How the information supplement starts: one of ``SUPPLEMENT_INITS``."""
    return check_choice(init, SUPPLEMENT_INITS, argument)


def check_space(space: SearchSpaceConfig) -> None:
    """Raise ValueError naming the ``space.*`` size, rate, pooling mode or supplement start that is out of
    range."""
    for key, minimum in (("init_channels", 1), ("cnn_cells", 1), ("cnn_nodes", 1), ("stem_multiplier", 1),
                         ("seq_cells", 0), ("seq_nodes", 1)):
        check_int(getattr(space, key), f"space.{key}", minimum)
    check_int(space.seq_hidden, "space.seq_hidden", optional=True)
    check_rate(space.dropout, "space.dropout")
    reduction_stride(space)
    check_choice(space.pooling, TimePooling.MODES, "space.pooling")
    check_choice(space.frequency_pooling, FrequencyPooling.MODES, "space.frequency_pooling")
    check_supplement_init(space.supplement_init)


def check_partial_channels_space(space: SearchSpaceConfig, partial_channels,
                                 argument: str = "partial_channels") -> int:
    """PC-DARTS's K for the CNN cells of ``space``: an integer >= 1 that divides every CNN cell's channels and, when
    ``skip_connect`` is a candidate, leaves a reduction cell's edges the 2 channels of a factorized reduce."""
    k = check_int(partial_channels, argument)
    plan = cnn_plan(space)
    uneven = sorted({channels for channels, _, _ in plan if channels % k})
    if uneven:
        raise ValueError(f"{argument}: expected a divisor of every CNN cell's channels (space.init_channels "
                         f"{space.init_channels} gives cells of {uneven}), received {partial_channels!r}")
    if "skip_connect" in resolve_ops(space.cnn_ops, "cnn"):
        thin = sorted({channels for channels, reduction, _ in plan if reduction and channels // k < 2})
        if thin:
            raise ValueError(f"{argument}: expected at least 2 channels per reduction edge for skip_connect's "
                             f"factorized reduce (space.init_channels {space.init_channels} gives reduction cells of "
                             f"{thin} channels), received {partial_channels!r}")
    return k


def check_image_shape(input_shape, argument: str = "input_shape") -> tuple:
    """``(n_mfcc, frames, channels)`` of one example (sizes positive ints or None, channels an int) as a
    tuple; raises ValueError naming ``argument``."""
    shape = tuple(input_shape) if isinstance(input_shape, (list, tuple)) else None
    if shape is None or len(shape) != 3 or any(
        d is not None and (isinstance(d, bool) or not isinstance(d, int) or d < 1) for d in shape
    ) or shape[2] is None:
        raise ValueError(f"{argument}: expected (n_mfcc, frames, channels), received {input_shape!r}")
    return shape


def reduction_stride(space: SearchSpaceConfig):
    """The reduction cells' stride: 2 (halve frequency and time, the paper's) or ``(2, 1)`` when
    ``space.reduce_time`` is False (halve frequency only, so the SeqNN cells read every frame)."""
    if not isinstance(space.reduce_time, bool):
        raise ValueError(f"space.reduce_time: expected true or false, received {space.reduce_time!r}")
    return 2 if space.reduce_time else (2, 1)


def cnn_plan(space: SearchSpaceConfig):
    """``[(channels, reduction, reduction_prev), ...]`` for each CNN cell."""
    reductions = reduction_indices(space.cnn_cells)
    plan, channels, reduction_prev = [], space.init_channels, False
    for i in range(space.cnn_cells):
        reduction = i in reductions
        if reduction:
            channels *= 2
        plan.append((channels, reduction, reduction_prev))
        reduction_prev = reduction
    return plan


# ---------------------------------------------------------------------------------------------------- streams
# The parts of the networks that the single-stream network (SearchBackbone, build_fixed_network) and the
# two-stream one (two_stream.py) share: the CNN stream (stem and DARTS cells) and the SeqNN cells, searchable
# and fixed. Layer names are fixed (``stem_conv``, ``cell_<i>``, ``seq_cell_<i>``, ...): saved models and configs
# refer to layers by name.


def cnn_out_channels(space: SearchSpaceConfig) -> int:
    """Channels of the last searchable CNN cell's output (its channels times ``cnn_nodes``)."""
    return cnn_plan(space)[-1][0] * space.cnn_nodes


def make_stem(space: SearchSpaceConfig) -> tuple:
    """``(stem_conv, stem_bn)``: Conv3x3 to ``stem_multiplier * init_channels`` channels, then affine BN."""
    conv = keras.layers.Conv2D(space.stem_multiplier * space.init_channels, 3, padding="same", use_bias=False,
                               name="stem_conv")
    return conv, batch_norm(True, name="stem_bn")


def make_search_cnn_cells(space: SearchSpaceConfig, cnn_ops: tuple, recompute: bool, drop_path: float = 0.0,
                          seed: int = 0, partial_channels: int = 1) -> list:
    """The searchable CNN cells ``cnn_cell_<i>`` of ``cnn_plan(space)``; ``drop_path``: their edges' rate, their
    masks seeded from ``seed`` (cell ``i``'s edge ``e``: ``1000 seed + 100 i + e``); ``partial_channels``: their
    edges' K of PC-DARTS (1: every channel through every candidate)."""
    return [SearchCNNCell(space.cnn_nodes, channels, reduction, reduction_prev, cnn_ops, recompute=recompute,
                          reduction_stride=reduction_stride(space), drop_path_rate=drop_path,
                          drop_path_seed=1000 * seed + 100 * i, partial_channels=partial_channels,
                          name=f"cnn_cell_{i}")
            for i, (channels, reduction, reduction_prev) in enumerate(cnn_plan(space))]


def make_search_seq_cells(space: SearchSpaceConfig, units: int, seq_ops: tuple, grouped: bool,
                          recompute: bool) -> list:
    """The ``space.seq_cells`` searchable SeqNN cells ``seq_cell_<i>`` of width ``units``; grouped banks of equal
    structure in different cells call one traced function (far less step graph)."""
    cells = [SearchSeqCell(space.seq_nodes, units, seq_ops, grouped=grouped, recompute=recompute,
                           name=f"seq_cell_{i}")
             for i in range(space.seq_cells)]
    share_functions([bank for cell in cells for bank in cell.banks])
    return cells


def search_cell_kinds(cnn_cells: list, seq_cells: list) -> tuple:
    """The cell kinds that searchable cells have, in ``CELL_KINDS`` order (the mixing weights they read)."""
    present = {"reduce" if cell.reduction else "normal" for cell in cnn_cells}
    if seq_cells:
        present.add("seq")
    return tuple(kind for kind in CELL_KINDS if kind in present)


def check_mixing_weights(weights, kinds: tuple) -> None:
    """Raise ValueError unless ``weights`` is a dict with (at least) the keys ``kinds``."""
    if not isinstance(weights, dict):
        raise ValueError(f"weights: expected a dict with keys {CELL_KINDS}, received {type(weights).__name__}")
    missing = sorted(set(kinds) - set(weights))
    if missing:
        raise ValueError(f"weights: expected keys {sorted(kinds)}, received {sorted(weights)} (missing {missing})")


def build_search_cnn_stream(stem_conv, stem_bn, cells: list, shape: tuple) -> tuple:
    """Build the stem and the CNN cells for images of ``shape`` (with the batch axis); returns the shape of the
    last cell's output."""
    stem_conv.build(shape)
    stem = stem_conv.compute_output_shape(shape)
    stem_bn.build(stem)
    s0 = s1 = stem
    for cell in cells:
        cell.build([s0, s1])
        s0, s1 = s1, cell.compute_output_shape([s0, s1])
    return s1


def call_search_cnn_stream(stem_conv, stem_bn, cells: list, x, weights: dict, training=None):
    """The stem and the searchable CNN cells on images ``x`` (each cell reads its kind's mixing weights)."""
    s = stem_bn(stem_conv(x), training=training)
    s0 = s1 = s
    for cell in cells:
        s0, s1 = s1, cell([s0, s1], weights["reduce" if cell.reduction else "normal"], training=training)
    return s1


def build_seq_cells(cells: list, shape: tuple) -> None:
    """Build SeqNN cells (searchable or fixed) on sequences of ``shape`` ``(B, T, units)``."""
    for cell in cells:
        cell.build([shape, shape])


def call_search_seq_cells(cells: list, seq, weights, training=None):
    """The searchable SeqNN cells over ``seq``: the first reads it twice, each later one the two before it."""
    s0 = s1 = seq
    for cell in cells:
        s0, s1 = s1, cell([s0, s1], weights, training=training)
    return s1


def fixed_cell_kinds(space: SearchSpaceConfig, cnn: bool, seq: bool) -> tuple:
    """The genotype cells a fixed network of ``space`` builds: those of its CNN cells (``cnn``) and ``seq`` when
    it has SeqNN cells (``seq``), in ``CELL_KINDS`` order."""
    kinds = set()
    if cnn:
        kinds |= {"reduce" if reduction else "normal" for _, reduction, _ in cnn_plan(space)}
    if seq and space.seq_cells:
        kinds.add("seq")
    return tuple(kind for kind in CELL_KINDS if kind in kinds)


def require_cells(genotype: Genotype, kinds: tuple) -> None:
    """Raise ValueError naming the cells of ``kinds`` that ``genotype`` lacks (a two-stream genotype holds only
    the cells its streams use)."""
    lacking = [kind for kind in kinds if genotype.cell(kind) is None]
    if lacking:
        streams = "" if genotype.streams is None else f" (its streams: {genotype.stream_cells})"
        raise ValueError(f"genotype: expected the cell(s) {list(kinds)} this network builds, received a genotype "
                         f"without {lacking}{streams}")


def fixed_cnn_stream(genotype: Genotype, space: SearchSpaceConfig, inputs, num_classes: int,
                     drop_path: float = 0.0, aux: bool = False) -> tuple:
    """The stem and the fixed CNN cells of ``genotype`` on the functional input ``inputs``.

    Returns ``(s1, channels_out, aux_logits)``: the last cell's output, its channels, and the auxiliary head's
    logits (after the last reduction cell, or the last cell without one) when ``aux``, else None.
    """
    stem_conv, stem_bn = make_stem(space)
    x = stem_bn(stem_conv(inputs))
    reductions = reduction_indices(space.cnn_cells)
    aux_index = reductions[-1] if reductions else space.cnn_cells - 1
    aux_logits = None
    s0 = s1 = x
    channels_out = None
    for i, (channels, reduction, reduction_prev) in enumerate(cnn_plan(space)):
        kind = "reduce" if reduction else "normal"
        try:
            cell = FixedCNNCell(genotype.cell(kind), genotype.concat(kind), channels, reduction, reduction_prev,
                                drop_path_rate=float(drop_path), reduction_stride=reduction_stride(space),
                                name=f"cnn_cell_{i}")
        except ValueError as exc:
            raise ValueError(f"genotype.{kind}: {exc}") from exc
        s0, s1 = s1, cell([s0, s1])
        channels_out = channels * len(cell.concat)
        if aux and i == aux_index:
            aux_logits = AuxiliaryHead(num_classes, name="aux_head")(s1)
    return s1, channels_out, aux_logits


def fixed_seq_cells(genotype: Genotype, space: SearchSpaceConfig, seq, units: int):
    """The ``space.seq_cells`` fixed SeqNN cells ``seq_cell_<i>`` of ``genotype`` over the functional ``seq``."""
    s0 = s1 = seq
    for i in range(space.seq_cells):
        try:
            cell = FixedSeqCell(genotype.seq, genotype.seq_concat, units, name=f"seq_cell_{i}")
        except ValueError as exc:
            raise ValueError(f"genotype.seq: {exc}") from exc
        s0, s1 = s1, cell([s0, s1])
    return s1


@_register
class TimePooling(keras.layers.Layer):
    """Pools a sequence over time into one vector per example: ``(B, T, F) -> (B, F)`` or ``(B, 2F)``.

    ``"mean"``: the mean over time. ``"mean_std"``: the mean and the standard deviation of each feature,
    concatenated (statistics pooling, Snyder et al., "X-vectors", ICASSP 2018), so that the classifier
    also sees how much a feature varies over the utterance. The variance is computed in float32 (also
    under mixed precision) with ``epsilon`` added before the square root, which keeps the gradient finite
    for a constant feature.

    Args:
        mode: ``"mean"`` or ``"mean_std"``.
        epsilon: added to the variance.

    Call arguments:
        x: a 3-D tensor ``(B, T, F)``.
    """

    MODES = ("mean", "mean_std")

    def __init__(self, mode: str = "mean", epsilon: float = 1e-5, **kwargs):
        super().__init__(**kwargs)
        if mode not in self.MODES:
            raise ValueError(f"TimePooling: mode expected one of {self.MODES}, received {mode!r}")
        if not isinstance(epsilon, (int, float)) or isinstance(epsilon, bool) or epsilon <= 0:
            raise ValueError(f"TimePooling: epsilon expected a positive number, received {epsilon!r}")
        self.mode = mode
        self.epsilon = float(epsilon)

    def call(self, x, training=None):
        if self.mode == "mean":
            return ops.mean(x, axis=1)
        x32 = ops.cast(x, "float32")
        mean = ops.mean(x32, axis=1)
        var = ops.mean(ops.square(x32 - ops.expand_dims(mean, 1)), axis=1)
        stats = ops.concatenate([mean, ops.sqrt(var + self.epsilon)], axis=-1)
        return ops.cast(stats, x.dtype)

    def compute_output_shape(self, input_shape):
        if len(input_shape) != 3:
            raise ValueError(f"TimePooling: expected a 3-D input (batch, time, features), received {input_shape}")
        features = input_shape[2]
        if self.mode == "mean_std" and features is not None:
            features *= 2
        return (input_shape[0], features)

    def get_config(self):
        return {**super().get_config(), "mode": self.mode, "epsilon": self.epsilon}


@_register
class FrequencyPooling(keras.layers.Layer):
    """Turns a CNN map into a sequence over its time axis W: ``(B, H, W, C) -> (B, W, C)`` by pooling over
    frequency, or ``(B, W, H * C)`` by flattening each frame's frequency rows and channels.

    Shared by the emoDARTS networks (``space.frequency_pooling``) and the hand-designed baselines (mean or max).

    Args:
        mode: ``"avg"`` (mean over frequency), ``"max"``, or ``"flatten"`` (every frequency row kept, as the
            convolutional-recurrent SER models feed their recurrent layers; needs a static H).

    Call arguments:
        x: a 4-D tensor ``(B, H, W, C)``.
    """

    MODES = ("avg", "max", "flatten")

    def __init__(self, mode: str = "avg", **kwargs):
        super().__init__(**kwargs)
        if mode not in self.MODES:
            raise ValueError(f"FrequencyPooling: mode expected one of {self.MODES}, received {mode!r}")
        self.mode = mode

    def call(self, x, training=None):
        if self.mode == "flatten":
            freq, channels = x.shape[1], x.shape[3]
            if freq is None or channels is None:
                raise ValueError(f"FrequencyPooling: mode 'flatten' needs static frequency and channel sizes, "
                                 f"received shape {tuple(x.shape)}")
            x = ops.transpose(x, (0, 2, 1, 3))
            return ops.reshape(x, (ops.shape(x)[0], ops.shape(x)[1], freq * channels))
        return ops.max(x, axis=1) if self.mode == "max" else ops.mean(x, axis=1)

    def compute_output_shape(self, input_shape):
        if len(input_shape) != 4:
            raise ValueError(f"FrequencyPooling: expected a 4-D input (batch, freq, time, channels), received {input_shape}")
        if self.mode == "flatten":
            freq, channels = input_shape[1], input_shape[3]
            return (input_shape[0], input_shape[2], None if freq is None or channels is None else freq * channels)
        return (input_shape[0], input_shape[2], input_shape[3])

    def get_config(self):
        return {**super().get_config(), "mode": self.mode}


@_register
class AuxiliaryHead(keras.layers.Layer):
    """DARTS-style auxiliary classifier on a CNN feature map, for any spatial size.

    ReLU -> 5x5 average pool at stride 3 ("same") -> Conv1x1(hidden) -> BN -> ReLU -> global average
    pool -> Dense(num_classes) (float32 logits).

    Args:
        num_classes: output logits.
        hidden: channels of the 1x1 convolution.

    Call arguments:
        x: a 4-D tensor ``(B, H, W, C)``.
        training: BN mode.
    """

    def __init__(self, num_classes: int, hidden: int = 128, **kwargs):
        super().__init__(**kwargs)
        self.num_classes = check_int(num_classes, "num_classes")
        self.hidden = check_int(hidden, "hidden")
        self.pool = keras.layers.AveragePooling2D(5, strides=3, padding="same", name="pool")
        self.conv = keras.layers.Conv2D(hidden, 1, use_bias=False, name="conv")
        self.norm = batch_norm(True, name="bn")
        self.classifier = keras.layers.Dense(num_classes, dtype="float32", name="classifier")

    def build(self, input_shape):
        b, h, w, c = input_shape
        pooled = (b, reduced_dim(h, 3), reduced_dim(w, 3), c)
        self.pool.build(input_shape)
        self.conv.build(pooled)
        self.norm.build(pooled[:3] + (self.hidden,))
        self.classifier.build((b, self.hidden))
        self.built = True

    def call(self, x, training=None):
        y = self.conv(self.pool(ops.relu(x)))
        y = ops.relu(self.norm(y, training=training))
        return self.classifier(ops.mean(y, axis=(1, 2)))

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.num_classes)

    def get_config(self):
        return {**super().get_config(), "num_classes": self.num_classes, "hidden": self.hidden}


def set_search_settings(layer, space, num_classes, recompute, seq_grouped, recompute_seq, drop_path=0.0,
                        seed=0, partial_channels=1) -> None:
    """The settings every searchable backbone checks and keeps: ``space`` (checked), ``num_classes``, the
    candidate ops (``cnn_ops``, ``seq_ops``), the memory switches (``recompute``, ``seq_grouped``,
    ``recompute_seq``, which needs ``seq_grouped``), the CNN edges' drop-path rate (``drop_path``), the seed
    of its masks (``seed``) and their partial channel connections (``partial_channels``, checked against every
    CNN cell's channels)."""
    layer.recompute = check_bool(recompute, "recompute")
    layer.drop_path = check_rate(drop_path, "drop_path")
    layer.seed = check_int(seed, "seed", minimum=0)
    layer.seq_grouped = check_bool(seq_grouped, "seq_grouped")
    layer.recompute_seq = check_bool(recompute_seq, "recompute_seq") and layer.seq_grouped
    layer.space = as_space(space)
    check_space(layer.space)
    layer.num_classes = check_int(num_classes, "num_classes")
    layer.partial_channels = check_partial_channels_space(layer.space, partial_channels)
    layer.cnn_ops = resolve_ops(layer.space.cnn_ops, "cnn")
    layer.seq_ops = resolve_ops(layer.space.seq_ops, "seq")


@_register
class SearchBackbone(keras.layers.Layer):
    """The searchable emoDARTS network (without its alphas): MFCC -> logits for given mixing weights.

    The search model owns the alphas (shapes from :meth:`alpha_shapes`), softmaxes them and passes the
    weights in. Every size comes from ``space``, ``input_shape`` and ``num_classes``.

    Args:
        space: a ``SearchSpaceConfig`` (or its dict): channels, cells, nodes, candidate ops, ...
        input_shape: ``(n_mfcc, frames, channels)`` of one example, e.g. ``(128, 128, 1)``.
        num_classes: output logits.
        recompute: gradient checkpointing of the CNN cells' mixed ops (``SearchCNNCell(recompute=True)``):
            much less memory for the saved activations, about one extra CNN forward per backward.
        seq_grouped: run the recurrent candidates of all SeqNN edges that read the same state in one
            time loop (``SearchSeqCell(grouped=True)``, the default: far less graph memory and tracing), and
            the banks of equal structure in different cells call one traced function
            (:func:`~emodarts_tf.search_space.seq_bank.share_functions`); False: one Keras layer per
            candidate (cuDNN kernels on a GPU).
        recompute_seq: gradient checkpointing of the grouped SeqNN banks (``SearchSeqCell(recompute=True)``):
            the activations of one bank's time loops at a time instead of all, one extra SeqNN forward per
            backward. Grouped cells only (ignored with ``seq_grouped=False``).
        drop_path: drop-path of the CNN edges' candidates in training (``MixedOp(drop_path_rate=...)``; the
            identity is never dropped): the rate the cells are built with, which
            :func:`set_search_drop_path_rate` changes between epochs; 0 disables it.
        seed: seeds the drop-path masks (:func:`make_search_cnn_cells`); the initial weights do not depend on it.
        partial_channels: partial channel connections of the CNN edges (PC-DARTS's K, ``MixedOp(partial_channels=K)``):
            each edge's candidates see ``1 / K`` of its channels; 1 (the default): all of them.

    Call arguments:
        x: MFCCs ``(B, n_mfcc, frames, channels)``.
        weights: ``{"normal": (num_edges(cnn_nodes), len(cnn_ops)), "reduce": (same),
            "seq": (num_edges(seq_nodes), len(seq_ops))}`` softmaxed mixing weights. A kind without
            cells (not in :attr:`cell_kinds`) is not read but may be passed.
        training: BN and dropout mode.

    Example:
        >>> space = SearchSpaceConfig(init_channels=4, cnn_cells=3, cnn_nodes=2, seq_cells=1, seq_nodes=2)
        >>> net = SearchBackbone(space, (16, 16, 1), num_classes=4)
        >>> w = {k: keras.ops.softmax(keras.ops.zeros(s)) for k, s in net.alpha_shapes().items()}
        >>> net(keras.ops.ones((2, 16, 16, 1)), w).shape
        TensorShape([2, 4])
    """

    def __init__(self, space, input_shape, num_classes: int, recompute: bool = False, seq_grouped: bool = True,
                 recompute_seq: bool = False, drop_path: float = 0.0, seed: int = 0, partial_channels: int = 1,
                 **kwargs):
        super().__init__(**kwargs)
        set_search_settings(self, space, num_classes, recompute, seq_grouped, recompute_seq, drop_path, seed,
                            partial_channels)
        self.mfcc_shape = check_image_shape(input_shape)
        space = self.space
        self.stem_conv, self.stem_bn = make_stem(space)
        self.cnn_cells = make_search_cnn_cells(space, self.cnn_ops, recompute, self.drop_path, self.seed,
                                               self.partial_channels)
        self.cnn_channels = cnn_out_channels(space)
        self.seq_units = space.seq_hidden or self.cnn_channels
        self.frequency_pool = FrequencyPooling(space.frequency_pooling, name="frequency_pool")
        self.seq_projection = keras.layers.Dense(self.seq_units, name="seq_projection")
        self.seq_cells = make_search_seq_cells(space, self.seq_units, self.seq_ops, seq_grouped, self.recompute_seq)
        self.time_pool = TimePooling(space.pooling, name="time_pool")
        self.dropout = keras.layers.Dropout(space.dropout, name="dropout")
        self.classifier = keras.layers.Dense(self.num_classes, dtype="float32", name="classifier")

    def alpha_shapes(self) -> dict:
        """``{"normal": (edges, cnn ops), "reduce": (edges, cnn ops), "seq": (edges, seq ops)}``."""
        cnn = (num_edges(self.space.cnn_nodes), len(self.cnn_ops))
        return {"normal": cnn, "reduce": cnn, "seq": (num_edges(self.space.seq_nodes), len(self.seq_ops))}

    @property
    def reduction_cells(self) -> tuple:
        return reduction_indices(self.space.cnn_cells)

    @property
    def cell_kinds(self) -> tuple:
        """The cell kinds this network has cells of, in ``CELL_KINDS`` order: the mixing weights it reads.

        ``("normal", "reduce", "seq")`` from 3 CNN cells and 1 SeqNN cell on; 1 CNN cell has no ``reduce``
        (:func:`~emodarts_tf.search_space.primitives.reduction_indices`), 2 CNN cells no ``normal`` (both
        are reduction cells), ``seq_cells = 0`` no ``seq``.
        """
        return search_cell_kinds(self.cnn_cells, self.seq_cells)

    def derive_genotype(self, alphas: dict, max_skip: int | None = None, meta: dict | None = None,
                        edges: dict | None = None) -> Genotype:
        """The genotype of raw (un-softmaxed) alpha arrays, with this backbone's ops and node counts
        (:func:`~emodarts_tf.search_space.genotype.derive_genotype`).

        A genotype always has the three cells (its format and ``build_fixed_network`` need them), so a cell
        kind this network has no cell of (see :attr:`cell_kinds`) is derived too, from alphas no loss
        reached (their only gradient is the alpha weight decay): that cell is arbitrary, not searched. It
        plays no part in a retrained network of the same space; one retrained with more cells
        (``train.cnn_cells``, ``train.seq_cells``) would use it. ``edges``: ``{kind: (num_edges,)}`` edge weights of
        a search with edge normalisation (``SearchModel.edge_weights()``), which rank each node's edges.
        """
        alphas = {k: keras.ops.convert_to_numpy(v) for k, v in alphas.items()}
        return derive_genotype(alphas, self.cnn_ops, self.seq_ops, self.space.cnn_nodes, self.space.seq_nodes,
                               max_skip=max_skip, meta=meta, edges=edges)

    def build(self, input_shape):
        shape = tuple(input_shape)
        if len(shape) != 4:
            raise ValueError(f"{self.name}: expected inputs (B, n_mfcc, frames, channels), received shape {shape}")
        s1 = build_search_cnn_stream(self.stem_conv, self.stem_bn, self.cnn_cells, shape)
        seq = self.frequency_pool.compute_output_shape(s1)
        self.seq_projection.build(seq)
        seq = (seq[0], seq[1], self.seq_units)
        build_seq_cells(self.seq_cells, seq)
        self.classifier.build(self.time_pool.compute_output_shape(seq))
        self.built = True

    def call(self, x, weights, training=None):
        check_mixing_weights(weights, self.cell_kinds)
        s1 = call_search_cnn_stream(self.stem_conv, self.stem_bn, self.cnn_cells, x, weights, training=training)
        seq = self.seq_projection(self.frequency_pool(s1))
        s1 = call_search_seq_cells(self.seq_cells, seq, weights.get("seq"), training=training)
        pooled = self.time_pool(s1)
        return self.classifier(self.dropout(pooled, training=training))

    def compute_output_shape(self, x_shape, weights_shape=None):
        return (x_shape[0], self.num_classes)

    def get_config(self):
        return {**super().get_config(), "space": dataclasses.asdict(self.space),
                "input_shape": list(self.mfcc_shape), "num_classes": self.num_classes, "recompute": self.recompute,
                "seq_grouped": self.seq_grouped, "recompute_seq": self.recompute_seq, "drop_path": self.drop_path,
                "seed": self.seed, "partial_channels": self.partial_channels}


def build_fixed_network(
    genotype: Genotype,
    space: SearchSpaceConfig,
    input_shape,
    num_classes: int,
    drop_path: float = 0.0,
    aux: bool = False,
    name: str = "emodarts",
) -> keras.Model:
    """The discrete network of ``genotype`` as a Functional ``keras.Model`` (input ``"mfcc"``).

    Channels, cell counts, stem multiplier, SeqNN width and dropout come from ``space`` (apply a
    ``TrainConfig``'s overrides with :func:`apply_train_overrides`); node counts and ops from the
    genotype. BN is affine; drop-path (rate ``drop_path``, see :func:`set_drop_path_rate`) acts in
    training only.

    Args:
        genotype: the architecture (its cells are validated; ``seq`` ops must be SeqNN ops, ...).
        space: sizes of the network.
        input_shape: ``(n_mfcc, frames, channels)``; ``frames`` may be None (any length).
        num_classes: output logits.
        drop_path: maximum drop-path rate of the CNN cells (0 disables it).
        aux: add the auxiliary head after the last reduction cell (the one at 2/3; the last CNN cell
            when there is no reduction cell).
        name: the model's name.

    Returns:
        A model ``mfcc -> logits`` (float32), or ``mfcc -> {"logits", "aux_logits"}`` when ``aux``.
    """
    if not isinstance(genotype, Genotype):
        raise ValueError(f"genotype: expected a Genotype, received {type(genotype).__name__}")
    genotype.validate("genotype")
    space = as_space(space)
    check_space(space)
    input_shape = check_image_shape(input_shape)
    num_classes = check_int(num_classes, "num_classes")
    drop_path = check_rate(drop_path, "drop_path")
    if input_shape[0] is None:
        raise ValueError(f"input_shape: expected a fixed n_mfcc (frequency) size, received {input_shape!r}")

    require_cells(genotype, fixed_cell_kinds(space, cnn=True, seq=True))

    inputs = keras.Input(shape=input_shape, name="mfcc")
    s1, channels_out, aux_logits = fixed_cnn_stream(genotype, space, inputs, num_classes, drop_path, aux)
    units = space.seq_hidden or channels_out
    seq = FrequencyPooling(space.frequency_pooling, name="frequency_pool")(s1)
    seq = keras.layers.Dense(units, name="seq_projection")(seq)
    s1 = fixed_seq_cells(genotype, space, seq, units)
    pooled = TimePooling(space.pooling, name="time_pool")(s1)
    pooled = keras.layers.Dropout(space.dropout, name="dropout")(pooled)
    logits = keras.layers.Dense(num_classes, dtype="float32", name="logits")(pooled)
    outputs = {"logits": logits, "aux_logits": aux_logits} if aux else logits
    return keras.Model(inputs, outputs, name=name)


def _set_rates(model: keras.layers.Layer, rate: float, kind: type, what: str) -> int:
    """Assign ``rate`` to the ``drop_path_variable`` of every ``kind`` layer in ``model`` that has one."""
    rate = check_rate(rate, "rate")
    layers = [layer for layer in model._flatten_layers(include_self=True, recursive=True)
              if isinstance(layer, kind) and layer.drop_path_variable is not None]
    if rate > 0 and not layers:
        raise ValueError(f"model: expected {what} built with drop_path > 0, received none")
    for layer in layers:
        layer.drop_path_variable.assign(float(rate))
    return len(layers)


def set_search_drop_path_rate(model: keras.layers.Layer, rate: float) -> int:
    """Set the current drop-path rate of every searchable edge in ``model`` built with drop-path
    (``SearchBackbone(drop_path=...)``; ``callbacks.SearchDropPath`` raises it over the search). Returns the
    number of edges updated."""
    return _set_rates(model, rate, MixedOp, "searchable CNN edges")


def set_drop_path_rate(model: keras.layers.Layer, rate: float) -> int:
    """Set the current drop-path rate of every FixedCNNCell in ``model`` built with drop-path.

    DARTS raises it linearly over the epochs (``drop_path * epoch / epochs``); call this from a
    callback's ``on_epoch_begin``. Returns the number of cells updated.
    """
    return _set_rates(model, rate, FixedCNNCell, "FixedCNNCells")
