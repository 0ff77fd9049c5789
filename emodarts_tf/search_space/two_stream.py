"""The EmotionNAS two-stream search space: two feature streams of one utterance, each with its own searched cells,
and an information supplement module between them (Sun, Lian, Liu et al., "EmotionNAS: Two-stream Neural
Architecture Search for Speech Emotion Recognition", arXiv 2203.13617; built here from its abstract, with the
parts of the emoDARTS networks in ``network.py``).

    image stream, input "spectrogram" (or "mfcc"): (B, H, W, C), H = frequency, W = time frames
        -> stem Conv3x3 + BN -> cnn_cells searched DARTS cells (normal and reduction cells, as SearchBackbone)
        -> mean over frequency: a sequence a (B, Ta, Ca)
    frames stream, input "frames": a frame-level embedding sequence (B, Tb, D) (openSMILE LLDs, wav2vec, ...)
        -> Dense to d -> seq_cells searched SeqNN cells over its own time axis: b (B, Tb, d)
    retrained network, optionally: a classifier per stream (``stream_heads``) and modality dropout
        (``StreamDropout``: one whole stream zeroed per training example with probability ``stream_dropout``)
    fusion (``space.fusion``):
        "supplement": InformationSupplement: both streams to width d, each attends over the other's time
            steps and adds what it reads through a learned gate; each time-pooled, concatenated
        "concat": each stream time-pooled (``space.pooling``), concatenated
        "spectrogram" / "frames": that stream alone, time-pooled (its input alone is needed)
    -> dropout (``space.dropout``) -> Dense classifier (float32 logits, also under mixed precision).
        "late" (retrained networks only, ``train.fusion``): no fused classifier; each stream time-pooled, dropout,
            its own Dense classifier, and the logits are the log of the mean of the two streams' class
            probabilities (``LateFusion``). Each stream's classifier is trained on its own loss.

``d`` is ``space.seq_hidden``, else the image stream's channels ``Ca`` (else, without an image stream, ``D``).
The image stream's cells read the ``normal`` and ``reduce`` mixing weights, the frames stream's the ``seq``
weights; a stream a fusion leaves out is not built and has no alphas. Its genotype is a two-stream one
(``genotype.py``, format v2) that names its streams, built by :func:`build_fixed_two_stream`.
"""
from __future__ import annotations

import dataclasses
import logging
import math

import keras
from keras import ops

from emodarts_tf.search_space.genotype import (
    CNN_STREAMS,
    FRAMES_STREAM,
    FUSIONS,
    SEARCH_FUSIONS,
    STREAM_METHODS,
    Genotype,
    derive_genotype,
    fusion_roles,
)
from emodarts_tf.search_space.network import (
    FrequencyPooling,
    TimePooling,
    as_space,
    build_search_cnn_stream,
    build_seq_cells,
    call_search_cnn_stream,
    call_search_seq_cells,
    check_image_shape,
    check_mixing_weights,
    check_space,
    check_supplement_init,
    cnn_out_channels,
    fixed_cell_kinds,
    fixed_cnn_stream,
    fixed_seq_cells,
    make_search_cnn_cells,
    make_search_seq_cells,
    make_stem,
    require_cells,
    search_cell_kinds,
    set_search_settings,
)
from emodarts_tf.search_space.primitives import num_edges, reduction_indices
from emodarts_tf.search_space.validation import check_bool, check_int, check_num_heads, check_pair, check_rate

log = logging.getLogger(__name__)

_register = keras.saving.register_keras_serializable(package="emodarts_tf")

INPUT_NAMES = (*CNN_STREAMS, FRAMES_STREAM)


def check_fusion(fusion, search: bool = False) -> str:
    """``space.fusion``: one of ``FUSIONS`` (``SEARCH_FUSIONS`` for a supernet, ``search=True``)."""
    if fusion not in FUSIONS:
        raise ValueError(f"space.fusion: expected one of {FUSIONS}, received {fusion!r}")
    if search and fusion not in SEARCH_FUSIONS:
        raise ValueError(f"space.fusion: {fusion!r} is a fusion of the retrained network (train.fusion), not of the "
                         f"search; expected one of {SEARCH_FUSIONS}")
    return fusion


def check_frames_shape(input_shape, argument: str = "input_shapes['frames']") -> tuple:
    """``(frames, features)`` of one example (frames a positive int or None, features a positive int)."""
    shape = tuple(input_shape) if isinstance(input_shape, (list, tuple)) else None
    if (shape is None or len(shape) != 2 or any(isinstance(d, bool) for d in shape)
            or not (shape[0] is None or (isinstance(shape[0], int) and shape[0] >= 1))
            or not (isinstance(shape[1], int) and shape[1] >= 1)):
        raise ValueError(f"{argument}: expected (frames, features) with features a positive int, "
                         f"received {input_shape!r}")
    return shape


def check_input_shapes(input_shapes, fusion: str) -> dict:
    """The shapes of the inputs ``fusion`` reads, ``{name: shape}`` (the image stream first).

    Args:
        input_shapes: ``{"spectrogram" | "mfcc": (H, W, C), "frames": (T, D)}`` of one example; an input the
            fusion does not read may be given and is left out.
        fusion: one of ``FUSIONS``.

    Raises:
        ValueError naming an unknown input name, both image names, a missing input or a bad shape.
    """
    if not isinstance(input_shapes, dict) or not input_shapes:
        raise ValueError(f"input_shapes: expected a dict {{input name: shape}} with names from {INPUT_NAMES}, "
                         f"received {input_shapes!r}")
    unknown = [name for name in input_shapes if name not in INPUT_NAMES]
    if unknown:
        raise ValueError(f"input_shapes: unknown input name(s) {unknown}; expected names from {INPUT_NAMES}")
    images = [name for name in CNN_STREAMS if name in input_shapes]
    if len(images) > 1:
        raise ValueError(f"input_shapes: expected one image input ('spectrogram' or 'mfcc'), received {images}")
    shapes = {}
    for role in fusion_roles(fusion):
        if role == "cnn":
            if not images:
                raise ValueError(f"input_shapes: fusion {fusion!r} expected a 'spectrogram' or 'mfcc' input, "
                                 f"received {sorted(input_shapes)}")
            shapes[images[0]] = check_image_shape(input_shapes[images[0]], f"input_shapes[{images[0]!r}]")
        else:
            if FRAMES_STREAM not in input_shapes:
                raise ValueError(f"input_shapes: fusion {fusion!r} expected a 'frames' input, "
                                 f"received {sorted(input_shapes)}")
            shapes[FRAMES_STREAM] = check_frames_shape(input_shapes[FRAMES_STREAM])
    ignored = sorted(set(input_shapes) - set(shapes))
    if ignored:
        log.debug("fusion %r: input(s) %s not read", fusion, ignored)
    return shapes


def stream_units(space, image_channels: int | None, frames_features: int | None) -> int:
    """``d``, the width of the frames stream and of the supplement: ``space.seq_hidden``, else the image stream's
    channels, else the frames' features."""
    return space.seq_hidden or image_channels or frames_features


def stream_description(fusion: str, image_input: str | None, frames: bool) -> dict:
    """The ``streams`` of a two-stream genotype (``genotype.check_streams``): which cells each input uses."""
    streams = {}
    if image_input is not None:
        streams[image_input] = ["normal", "reduce"]
    if frames:
        streams[FRAMES_STREAM] = ["seq"]
    return {"method": STREAM_METHODS[0], "fusion": fusion, "streams": streams}


@_register
class InformationSupplement(keras.layers.Layer):
    """The information supplement module: each of two sequences adds what it reads in the other, through a gate.

    Both inputs are projected to ``units`` (``a = a W_a + c_a``, ``b = b W_b + c_b``). Each then attends over
    the other's time steps (scaled dot-product cross-attention with ``num_heads`` heads: ``ctx_a =
    MHA(query=a, key=b, value=b)``, its own query, key, value and output projections per direction) and adds
    the result through a sigmoid gate computed from its own state and the context it read::

        g_a = sigmoid([a, ctx_a] G_a + e_a),   a' = a + g_a * ctx_a   (and b' alike, reading a)

    so a stream takes from the other only what its gate lets in; the two time axes may differ in length.
    With ``init="identity"`` each direction also has a learned scalar ``s_a`` (``s_b``), zero at the start::

        a' = a + tanh(s_a) * g_a * ctx_a

    so the module starts as the identity (Flamingo's gated cross-attention, Alayrac et al. 2022) and learns how
    much of the other stream to add. The attention softmax is computed in float32 at least (also under mixed
    precision).

    Args:
        units: the common width ``d`` of both outputs; a multiple of ``num_heads``.
        num_heads: attention heads per direction (each of ``units // num_heads`` features).
        init: ``"random"`` (no scale) or ``"identity"`` (the zero-started scale above).

    Call arguments:
        inputs: ``[a, b]``, sequences ``(B, Ta, Ca)`` and ``(B, Tb, Cb)``.
        training: unused (no dropout); accepted for the layer protocol.

    Returns:
        ``[a', b']`` of shapes ``(B, Ta, units)`` and ``(B, Tb, units)``.

    Example:
        >>> layer = InformationSupplement(8, num_heads=2)
        >>> a, b = layer([keras.ops.ones((2, 5, 6)), keras.ops.ones((2, 9, 4))])
        >>> tuple(a.shape), tuple(b.shape)
        ((2, 5, 8), (2, 9, 8))
    """

    # (query of the reading stream, key and value of the read one, output projection, gate) per direction
    DIRECTIONS = {"a": ("query_a", "key_b", "value_b", "context_a", "gate_a"),
                  "b": ("query_b", "key_a", "value_a", "context_b", "gate_b")}

    def __init__(self, units: int, num_heads: int = 1, init: str = "random", **kwargs):
        super().__init__(**kwargs)
        self.units = check_int(units, "units")
        self.num_heads = check_num_heads(num_heads, self.units)
        self.init = check_supplement_init(init, "init")
        self.head_dim = self.units // self.num_heads
        self.project_a = keras.layers.Dense(self.units, name="project_a")
        self.project_b = keras.layers.Dense(self.units, name="project_b")
        for names in self.DIRECTIONS.values():
            for name in names:
                setattr(self, name, keras.layers.Dense(self.units, name=name))

    def build(self, input_shape):
        a_shape, b_shape = (tuple(s) for s in check_pair(input_shape, self.name))
        if len(a_shape) != 3 or len(b_shape) != 3:
            raise ValueError(f"{self.name}: expected two sequences (B, T, features), received shapes "
                             f"{a_shape}, {b_shape}")
        self.project_a.build(a_shape)
        self.project_b.build(b_shape)
        for own, other in (("a", b_shape), ("b", a_shape)):
            query, key, value, context, gate = (getattr(self, n) for n in self.DIRECTIONS[own])
            own_shape = (a_shape if own == "a" else b_shape)[:2] + (self.units,)
            query.build(own_shape)
            key.build(other[:2] + (self.units,))
            value.build(other[:2] + (self.units,))
            context.build(own_shape)
            gate.build(own_shape[:2] + (2 * self.units,))
        self.scales = None
        if self.init == "identity":
            self.scales = {d: self.add_weight(name=f"scale_{d}", shape=(), initializer="zeros")
                           for d in self.DIRECTIONS}  # fmt: skip
        self.built = True

    def _attend(self, x, other, direction: str):
        """The context ``x`` reads in ``other``, and the gate that lets it in."""
        query, key, value, context, gate = (getattr(self, n) for n in self.DIRECTIONS[direction])
        q, k, v = query(x), key(other), value(other)
        softmax_dtype = keras.backend.result_type(q.dtype, "float32")
        heads = []
        for h in range(self.num_heads):
            part = slice(h * self.head_dim, (h + 1) * self.head_dim)
            scores = ops.einsum("bqd,bkd->bqk", q[..., part], k[..., part]) / math.sqrt(self.head_dim)
            attention = ops.cast(ops.softmax(ops.cast(scores, softmax_dtype), axis=-1), v.dtype)
            heads.append(ops.einsum("bqk,bkd->bqd", attention, v[..., part]))
        ctx = context(heads[0] if len(heads) == 1 else ops.concatenate(heads, axis=-1))
        g = ops.sigmoid(gate(ops.concatenate([x, ctx], axis=-1)))
        if self.scales is not None:
            g = ops.tanh(ops.cast(self.scales[direction], g.dtype)) * g
        return x + g * ctx

    def call(self, inputs, training=None):
        a, b = check_pair(inputs, self.name)
        a, b = self.project_a(a), self.project_b(b)
        return [self._attend(a, b, "a"), self._attend(b, a, "b")]

    def compute_output_shape(self, input_shape):
        a_shape, b_shape = input_shape
        return [(a_shape[0], a_shape[1], self.units), (b_shape[0], b_shape[1], self.units)]

    def get_config(self):
        return {**super().get_config(), "units": self.units, "num_heads": self.num_heads, "init": self.init}


def _fuse(a, b, supplement, image_pool, frames_pool, concat, training=None):
    """The pooled features the classifier reads: the supplement (if any), then each stream present time-pooled
    and concatenated (image stream first). Shared by the supernet and the fixed network."""
    if supplement is not None:
        a, b = supplement([a, b], training=training)
    pooled = [pool(s) for pool, s in ((image_pool, a), (frames_pool, b)) if s is not None]
    return concat(pooled) if len(pooled) > 1 else pooled[0]


def logits_dtype(compute_dtype: str) -> str:
    """The classifier's dtype: float32 logits (also under mixed precision), float64 when the network computes in
    float64 (the second-order gradient checks)."""
    return "float64" if compute_dtype == "float64" else "float32"


def _concatenate():
    return keras.layers.Concatenate(axis=-1, name="pooled_concat")


@_register
class StreamDropout(keras.layers.Layer):
    """Modality dropout of a two-stream network (ModDrop: Neverova, Wolf, Taylor and Nebout, "ModDrop: adaptive
    multi-modal gesture recognition", IEEE TPAMI 2016): in training, each example loses one whole stream with
    probability ``rate`` (the image stream or the frames stream, each with ``rate / 2``; never both), so that the
    fused classifier and the information supplement learn to work from either stream and cannot lean on the one
    that fits the training speakers first. In inference it is the identity, and the kept streams are not rescaled:
    a dropped stream reads as zero input, not as a stream of larger scale.

    Args:
        rate: probability in ``[0, 1)`` that an example loses one of its two streams.
        seed: seed of the draws (``None``: from Keras' global seed, as ``keras.layers.Dropout``).

    Call arguments:
        inputs: ``[a, b]``, the two streams' sequences ``(B, Ta, ...)`` and ``(B, Tb, ...)`` (same batch).
        training: drops only when true.
    """

    def __init__(self, rate: float, seed=None, **kwargs):
        super().__init__(**kwargs)
        self.rate = check_rate(rate, "stream_dropout")
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def call(self, inputs, training=None):
        a, b = inputs
        if not training or self.rate == 0.0:
            return [a, b]
        u = keras.random.uniform((ops.shape(a)[0],), seed=self.seed_generator)

        def keep(mask, like):
            mask = ops.cast(ops.logical_not(mask), like.dtype)
            return ops.reshape(mask, (-1,) + (1,) * (len(like.shape) - 1))

        half = self.rate / 2.0
        keep_a = keep(u < half, a)
        keep_b = keep(ops.logical_and(u >= half, u < self.rate), b)
        return [a * keep_a, b * keep_b]

    def compute_output_shape(self, input_shape):
        return [tuple(input_shape[0]), tuple(input_shape[1])]

    def get_config(self):
        return {**super().get_config(), "rate": self.rate, "seed": self.seed}


@_register
class LateFusion(keras.layers.Layer):
    """Late (decision-level) fusion of classifiers: the log of the mean of their class probabilities,
    ``log(mean_i softmax(z_i))`` (the sum rule of Kittler, Hatef, Duin and Matas, "On combining classifiers",
    IEEE TPAMI 1998), computed as ``logsumexp_i(log_softmax(z_i)) - log(n)``. Its softmax is the mean of the
    classifiers' probabilities, so it reads as logits; its argmax is the sum rule's decision. It fuses the
    per-stream classifiers of a two-stream network and the networks of a ``recipe.ensemble`` pair
    (``evaluation.ensemble``); both build it with ``dtype="float32"``, so that under mixed precision the
    logarithms are not taken in float16.

    Call arguments:
        inputs: a list of logits ``(B, classes)``, one per stream or network.
        training: unused (the same in training and inference).
    """

    def call(self, inputs, training=None):
        if not isinstance(inputs, (list, tuple)) or len(inputs) < 2:
            count = len(inputs) if isinstance(inputs, (list, tuple)) else type(inputs).__name__
            raise ValueError(f"LateFusion: expected a list of the logits of two or more classifiers, received {count}")
        log_probs = ops.stack([ops.log_softmax(z, axis=-1) for z in inputs], axis=0)
        return ops.logsumexp(log_probs, axis=0) - math.log(len(inputs))

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[0])


@_register
class TwoStreamSearchBackbone(keras.layers.Layer):
    """The searchable EmotionNAS network (without its alphas): ``{image, frames}`` -> logits for given mixing
    weights, with ``SearchBackbone``'s protocol, so that ``SearchModel`` drives it unchanged.

    Args:
        space: a ``SearchSpaceConfig`` (or its dict): channels, cells, nodes, candidate ops, ``fusion``,
            ``pooling``, ``dropout``, ``seq_hidden`` (the width ``d``, see the module docstring).
        input_shapes: ``{"spectrogram" | "mfcc": (H, W, C), "frames": (T, D)}`` of one example; the fusion's
            inputs (:func:`check_input_shapes`).
        num_classes: output logits.
        recompute: gradient checkpointing of the CNN cells' mixed ops (as ``SearchBackbone``).
        seq_grouped: grouped SeqNN banks, shared traced functions (as ``SearchBackbone``).
        recompute_seq: gradient checkpointing of the grouped SeqNN banks (as ``SearchBackbone``).
        supplement_heads: attention heads of the information supplement (a divisor of ``d``).
        drop_path: drop-path of the CNN edges' candidates in training (as ``SearchBackbone``); needs an image
            stream.
        seed: seeds the drop-path masks (as ``SearchBackbone``).
        partial_channels: partial channel connections of the CNN edges (PC-DARTS's K, as ``SearchBackbone``); 1:
            none.

    Call arguments:
        x: ``{"spectrogram" | "mfcc": (B, H, W, C), "frames": (B, T, D)}`` (inputs the fusion does not read may
            be present).
        weights: ``{"normal", "reduce", "seq"}`` softmaxed mixing weights, shapes from :meth:`alpha_shapes`; a
            kind without cells (not in :attr:`cell_kinds`) is not read.
        training: BN and dropout mode.

    Example:
        >>> space = SearchSpaceConfig(init_channels=2, cnn_cells=3, cnn_nodes=2, seq_cells=1, seq_nodes=2)
        >>> net = TwoStreamSearchBackbone(space, {"spectrogram": (8, 12, 1), "frames": (10, 6)}, num_classes=4)
        >>> w = {k: keras.ops.softmax(keras.ops.zeros(s)) for k, s in net.alpha_shapes().items()}
        >>> net({"spectrogram": keras.ops.ones((2, 8, 12, 1)), "frames": keras.ops.ones((2, 10, 6))}, w).shape
        TensorShape([2, 4])
    """

    def __init__(self, space, input_shapes, num_classes: int, recompute: bool = False, seq_grouped: bool = True,
                 recompute_seq: bool = False, supplement_heads: int = 1, drop_path: float = 0.0, seed: int = 0,
                 partial_channels: int = 1, **kwargs):
        super().__init__(**kwargs)
        set_search_settings(self, space, num_classes, recompute, seq_grouped, recompute_seq, drop_path, seed,
                            partial_channels)
        self.fusion = check_fusion(self.space.fusion, search=True)
        self.input_shapes = check_input_shapes(input_shapes, self.fusion)
        self.supplement_heads = check_int(supplement_heads, "supplement_heads")
        space = self.space
        self.image_input = next((name for name in CNN_STREAMS if name in self.input_shapes), None)
        self.has_frames = FRAMES_STREAM in self.input_shapes
        self.cnn_channels = cnn_out_channels(space) if self.image_input else None
        frames_features = self.input_shapes[FRAMES_STREAM][1] if self.has_frames else None
        self.units = stream_units(space, self.cnn_channels, frames_features)
        if self.fusion == "supplement":
            check_num_heads(self.supplement_heads, self.units)
        # The image stream (CNN cells), then the frames stream (SeqNN cells), then the fusion and the head.
        self.stem_conv = self.stem_bn = self.frequency_pool = None
        self.cnn_cells = []
        if self.image_input:
            self.stem_conv, self.stem_bn = make_stem(space)
            self.cnn_cells = make_search_cnn_cells(space, self.cnn_ops, recompute, self.drop_path, self.seed,
                                                   self.partial_channels)
            self.frequency_pool = FrequencyPooling(space.frequency_pooling, name="frequency_pool")
        elif self.drop_path > 0:
            raise ValueError(f"drop_path: expected 0 without an image stream (fusion {self.fusion!r} has no CNN "
                             f"cells to drop paths in), received {self.drop_path!r}")
        elif self.partial_channels > 1:
            raise ValueError(f"partial_channels: expected 1 without an image stream (fusion {self.fusion!r} has no "
                             f"CNN cells), received {self.partial_channels!r}")
        self.frames_projection = None
        self.seq_cells = []
        if self.has_frames:
            self.frames_projection = keras.layers.Dense(self.units, name="frames_projection")
            self.seq_cells = make_search_seq_cells(space, self.units, self.seq_ops, seq_grouped, self.recompute_seq)
        self.supplement = (InformationSupplement(self.units, self.supplement_heads, self.space.supplement_init,
                                                 name="supplement")
                           if self.fusion == "supplement" else None)
        self.image_pool = TimePooling(space.pooling, name="image_time_pool") if self.image_input else None
        self.frames_pool = TimePooling(space.pooling, name="frames_time_pool") if self.has_frames else None
        self.concat = _concatenate() if self.image_input and self.has_frames else None
        self.dropout = keras.layers.Dropout(space.dropout, name="dropout")
        self.classifier = keras.layers.Dense(self.num_classes, dtype=logits_dtype(self.compute_dtype),
                                             name="classifier")

    # ------------------------------------------------------------------ the search protocol
    def alpha_shapes(self) -> dict:
        """``{"normal": (edges, cnn ops), "reduce": (same)}`` with an image stream, ``{"seq": (edges, seq ops)}``
        with a frames stream."""
        shapes = {}
        if self.image_input:
            cnn = (num_edges(self.space.cnn_nodes), len(self.cnn_ops))
            shapes.update(normal=cnn, reduce=cnn)
        if self.has_frames:
            shapes["seq"] = (num_edges(self.space.seq_nodes), len(self.seq_ops))
        return shapes

    @property
    def reduction_cells(self) -> tuple:
        return reduction_indices(self.space.cnn_cells) if self.image_input else ()

    @property
    def cell_kinds(self) -> tuple:
        """The cell kinds this network has cells of (``SearchBackbone.cell_kinds``): the mixing weights it reads."""
        return search_cell_kinds(self.cnn_cells, self.seq_cells)

    @property
    def streams(self) -> dict:
        """The streams description of this network's genotypes (``genotype.check_streams``)."""
        return stream_description(self.fusion, self.image_input, self.has_frames)

    def derive_genotype(self, alphas: dict, max_skip: int | None = None, meta: dict | None = None,
                        edges: dict | None = None) -> Genotype:
        """The two-stream genotype (format v2) of raw alpha arrays: the cells of the kinds in
        :meth:`alpha_shapes` (as ``SearchBackbone.derive_genotype``, a kind without cells is derived too) and
        :attr:`streams`."""
        alphas = {k: keras.ops.convert_to_numpy(v) for k, v in alphas.items()}
        return derive_genotype(alphas, self.cnn_ops, self.seq_ops, self.space.cnn_nodes, self.space.seq_nodes,
                               max_skip=max_skip, meta=meta, streams=self.streams, edges=edges)

    # ------------------------------------------------------------------ building and calling
    def _check_named(self, received, what: str, kind: str):
        """``received`` is a dict holding every input of :attr:`input_shapes` (others may be present)."""
        if not isinstance(received, dict):
            raise ValueError(f"{what}: expected {kind} {{name: ...}} with the names {list(self.input_shapes)}, "
                             f"received {type(received).__name__} {received!r:.200}")
        missing = [name for name in self.input_shapes if name not in received]
        if missing:
            raise ValueError(f"{what}: expected {kind} {list(self.input_shapes)}, received {sorted(received)} "
                             f"(missing {missing})")

    def _shapes(self, input_shape) -> dict:
        self._check_named(input_shape, self.name, "input shapes")
        shapes = {name: tuple(input_shape[name]) for name in self.input_shapes}
        for name, shape in shapes.items():
            expected = self.input_shapes[name]
            if len(shape) != len(expected) + 1 or shape[-1] != expected[-1]:
                raise ValueError(f"{self.name}: input {name!r} expected shape (batch, *{expected}), received {shape}")
        return shapes

    def build(self, input_shape):
        shapes = self._shapes(input_shape)
        a = b = None
        if self.image_input:
            s1 = build_search_cnn_stream(self.stem_conv, self.stem_bn, self.cnn_cells, shapes[self.image_input])
            a = self.frequency_pool.compute_output_shape(s1)
        if self.has_frames:
            frames = shapes[FRAMES_STREAM]
            self.frames_projection.build(frames)
            b = (frames[0], frames[1], self.units)
            build_seq_cells(self.seq_cells, b)
        if self.supplement is not None:
            self.supplement.build([a, b])
            a, b = self.supplement.compute_output_shape([a, b])
        widths = [pool.compute_output_shape(s)[1] for pool, s in ((self.image_pool, a), (self.frames_pool, b))
                  if s is not None]
        batch = next(iter(shapes.values()))[0]
        self.classifier.build((batch, sum(widths)))
        self.built = True

    def call(self, x, weights, training=None):
        self._check_named(x, "x", "inputs")
        check_mixing_weights(weights, self.cell_kinds)
        a = b = None
        if self.image_input:
            s1 = call_search_cnn_stream(self.stem_conv, self.stem_bn, self.cnn_cells, x[self.image_input], weights,
                                        training=training)
            a = self.frequency_pool(s1)
        if self.has_frames:
            b = self.frames_projection(x[FRAMES_STREAM])
            b = call_search_seq_cells(self.seq_cells, b, weights.get("seq"), training=training)
        pooled = _fuse(a, b, self.supplement, self.image_pool, self.frames_pool, self.concat, training=training)
        return self.classifier(self.dropout(pooled, training=training))

    def compute_output_shape(self, x_shape, weights_shape=None):
        return (next(iter(x_shape.values()))[0], self.num_classes)

    def get_config(self):
        return {**super().get_config(), "space": dataclasses.asdict(self.space),
                "input_shapes": {name: list(shape) for name, shape in self.input_shapes.items()},
                "num_classes": self.num_classes, "recompute": self.recompute, "seq_grouped": self.seq_grouped,
                "recompute_seq": self.recompute_seq, "supplement_heads": self.supplement_heads,
                "drop_path": self.drop_path, "seed": self.seed, "partial_channels": self.partial_channels}


def build_fixed_two_stream(
    genotype: Genotype,
    space,
    input_shapes: dict,
    num_classes: int,
    drop_path: float = 0.0,
    aux: bool = False,
    supplement_heads: int = 1,
    stream_heads: bool = False,
    stream_dropout: float = 0.0,
    name: str = "emotionnas",
) -> keras.Model:
    """The discrete EmotionNAS network of ``genotype`` as a Functional ``keras.Model`` with named inputs.

    The same plan as :class:`TwoStreamSearchBackbone` (the module docstring), with the genotype's fixed cells
    (``FixedCNNCell``, ``FixedSeqCell``, as ``build_fixed_network``): affine BN, drop-path in the CNN cells
    (``set_drop_path_rate``), sizes and ``fusion`` from ``space`` (apply a ``TrainConfig``'s overrides with
    ``apply_train_overrides``).

    Args:
        genotype: a two-stream genotype (its ``fusion`` and stream names must be ``space.fusion`` and the input
            names), or a single-stream one (all three cells).
        space: sizes of the network and its fusion.
        input_shapes: ``{"spectrogram" | "mfcc": (H, W, C), "frames": (T, D)}``; H and D fixed, the time axes may
            be None (any length). Inputs the fusion does not read are left out of the model.
        num_classes: output logits.
        drop_path: maximum drop-path rate of the CNN cells (0 disables it).
        aux: add the auxiliary head on the image stream (after its last reduction cell), as
            ``build_fixed_network``.
        supplement_heads: attention heads of the information supplement.
        stream_heads: give each of the two streams a classifier of its own on its time-pooled sequence before
            the fusion (:func:`stream_head_name`: ``aux_spectrogram`` or ``aux_mfcc``, and ``aux_frames``), so
            that a training loss can ask each stream to classify alone as well (deep supervision of each
            stream, the multi-task form of Wang et al.'s gradient blending, CVPR 2020). Needs both streams.
        stream_dropout: in training, the probability that an example loses one whole stream before the fusion
            (:class:`StreamDropout`; the stream heads read the streams before it). Needs both streams; 0 leaves
            it out.
        name: the model's name.

    With ``space.fusion == "late"`` each stream's classifier is built as with ``stream_heads`` (then False) and
    ``logits`` is their :class:`LateFusion`; ``stream_dropout`` must be 0.

    Returns:
        A model ``{input name: tensor} -> logits`` (float32; the inputs are read by name, other entries of the
        dict ignored), or, with ``aux``, ``stream_heads`` or the late fusion,
        ``-> {"logits", "aux_logits" (aux), "aux_<input>" (stream_heads, late fusion)}``.
    """
    if not isinstance(genotype, Genotype):
        raise ValueError(f"genotype: expected a Genotype, received {type(genotype).__name__}")
    genotype.validate("genotype")
    space = as_space(space)
    check_space(space)
    fusion = check_fusion(space.fusion)
    shapes = check_input_shapes(input_shapes, fusion)
    num_classes = check_int(num_classes, "num_classes")
    drop_path = check_rate(drop_path, "drop_path")
    aux = check_bool(aux, "aux")
    supplement_heads = check_int(supplement_heads, "supplement_heads")
    stream_heads = check_bool(stream_heads, "stream_heads")
    stream_dropout = check_rate(stream_dropout, "stream_dropout")
    image_input = next((n for n in CNN_STREAMS if n in shapes), None)
    has_frames = FRAMES_STREAM in shapes
    if stream_heads and not (image_input and has_frames):
        raise ValueError(f"stream_heads: expected False with one stream (fusion {fusion!r}), received True")
    if stream_dropout and not (image_input and has_frames):
        raise ValueError(f"stream_dropout: expected 0 with one stream (fusion {fusion!r}), received {stream_dropout}")
    if fusion == "late" and stream_heads:
        raise ValueError("stream_heads: expected False with fusion 'late', whose streams have their own classifiers")
    if fusion == "late" and stream_dropout:
        raise ValueError(f"stream_dropout: expected 0 with fusion 'late' (it would zero a stream's only classifier "
                         f"input), received {stream_dropout}")
    if image_input and shapes[image_input][0] is None:
        raise ValueError(f"input_shapes[{image_input!r}]: expected a fixed frequency size, "
                         f"received {shapes[image_input]!r}")
    if aux and not image_input:
        raise ValueError(f"aux: expected False without an image stream (fusion {fusion!r}), received True")
    if genotype.streams is not None:
        if genotype.fusion != fusion:
            raise ValueError(f"genotype: searched with fusion {genotype.fusion!r}, but space.fusion is {fusion!r}")
        if set(genotype.stream_cells) != set(shapes):
            raise ValueError(f"genotype: expected the inputs of its streams {list(genotype.stream_cells)}, "
                             f"received input_shapes for {list(shapes)}")
    require_cells(genotype, fixed_cell_kinds(space, cnn=bool(image_input), seq=has_frames))

    inputs = {n: keras.Input(shape=shape, name=n) for n, shape in shapes.items()}
    a = b = aux_logits = None
    channels = None
    if image_input:
        s1, channels, aux_logits = fixed_cnn_stream(genotype, space, inputs[image_input], num_classes, drop_path,
                                                    aux)
        a = FrequencyPooling(space.frequency_pooling, name="frequency_pool")(s1)
    units = stream_units(space, channels, shapes[FRAMES_STREAM][1] if has_frames else None)
    if has_frames:
        b = keras.layers.Dense(units, name="frames_projection")(inputs[FRAMES_STREAM])
        b = fixed_seq_cells(genotype, space, b, units)
    heads = {}
    if stream_heads or fusion == "late":
        for input_name, stream, pool_name in ((image_input, a, "image"), (FRAMES_STREAM, b, "frames")):
            own = TimePooling(space.pooling, name=f"{pool_name}_head_pool")(stream)
            own = keras.layers.Dropout(space.dropout, name=f"{pool_name}_head_dropout")(own)
            heads[stream_head_name(input_name)] = keras.layers.Dense(
                num_classes, dtype=logits_dtype(keras.config.dtype_policy().compute_dtype),
                name=stream_head_name(input_name))(own)
    if fusion == "late":
        own_logits = [heads[stream_head_name(image_input)], heads[stream_head_name(FRAMES_STREAM)]]
        logits = LateFusion(name="logits", dtype="float32")(own_logits)
        outputs = {"logits": logits, **({"aux_logits": aux_logits} if aux else {}), **heads}
        return keras.Model(inputs_by_name(inputs), outputs, name=name)
    if stream_dropout:
        a, b = StreamDropout(stream_dropout, name="stream_dropout")([a, b])
    supplement = None
    if fusion == "supplement":
        check_num_heads(supplement_heads, units)
        supplement = InformationSupplement(units, supplement_heads, space.supplement_init, name="supplement")
    pooled = _fuse(a, b, supplement,
                   TimePooling(space.pooling, name="image_time_pool") if image_input else None,
                   TimePooling(space.pooling, name="frames_time_pool") if has_frames else None,
                   _concatenate() if image_input and has_frames else None)
    pooled = keras.layers.Dropout(space.dropout, name="dropout")(pooled)
    logits = keras.layers.Dense(num_classes, dtype=logits_dtype(keras.config.dtype_policy().compute_dtype),
                                name="logits")(pooled)
    outputs = logits
    if aux or heads:
        outputs = {"logits": logits, **({"aux_logits": aux_logits} if aux else {}), **heads}
    return keras.Model(inputs_by_name(inputs), outputs, name=name)


def inputs_by_name(inputs: dict) -> list:
    """The model's inputs as a list sorted by name. Keras reads a list-built model's inputs from a dict by name,
    ignoring other entries; a dict-built model takes a dict's entries in key order, so a one-stream network
    (``spectrogram`` only) fed the fold's ``{"frames", "spectrogram"}`` batches would read ``frames``."""
    return [inputs[name] for name in sorted(inputs)]


def stream_head_name(input_name: str) -> str:
    """The output of the classifier of one stream alone (``build_fixed_two_stream(stream_heads=True)``):
    ``aux_<input name>``."""
    return f"aux_{input_name}"
