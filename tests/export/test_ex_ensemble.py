"""A real emoDARTS network retrained with ``recipe.ensemble`` (the first model and the refit served as one model):
the layer against numpy, the saved pair against its two networks computed one by one, and the SavedModel export."""
from __future__ import annotations

import numpy as np
import pytest

from export_helpers import FEATURES_16K, TINY_GENOTYPE, config

TOLERANCE = 1e-5


def _softmax(z):
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def test_the_pair_fuses_in_float32_under_mixed_precision():
    """The sum rule (``LateFusion``, tested against numpy in tests/search_space) takes logarithms of
    probabilities: under a mixed_float16 policy it still computes in float32."""
    import keras

    from emodarts_tf.evaluation.ensemble import ensemble_model

    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy("mixed_float16")
    try:
        members = []
        for _ in range(2):
            x = keras.Input((4, 3, 1), name="mfcc")
            members.append(keras.Model(x, keras.layers.Dense(5, dtype="float32")(keras.layers.Flatten()(x))))
        pair = ensemble_model(members)
    finally:
        keras.config.set_dtype_policy(previous)
    assert pair.get_layer("logits").compute_dtype == "float32"
    assert [layer.name for layer in pair.layers if isinstance(layer, keras.Model)] == ["ensemble_member1", "ensemble_member2"]


@pytest.fixture(scope="module")
def pair(tmp_path_factory, export_manifest, export_cache):
    import keras

    from emodarts_tf.commands.export import main as export_main
    from emodarts_tf.data.pipeline import make_fold_data
    from emodarts_tf.data.prepare import prepare
    from emodarts_tf.evaluation.trainer import train_genotype_fold
    from emodarts_tf.search_space.genotype import Genotype

    cfg = config(export_manifest, export_cache, FEATURES_16K,
                 ["train.epochs=2", "train.lr=0.05", "recipe.refit=true", "recipe.ensemble=true"])  # fmt: skip
    prepared = prepare(cfg, progress=False)
    fold_data = make_fold_data(prepared, 1, cfg)
    root = tmp_path_factory.mktemp("ensemble")
    keras.utils.set_random_seed(0)
    metrics = train_genotype_fold(Genotype.from_dict(TINY_GENOTYPE), cfg, fold_data, root / "fold1", corpus="csv",
                                  protocol="loso")  # fmt: skip
    assert export_main(["--model", str(root / "fold1"), "--out", str(root / "serving"), "--version", "1"]) == 0
    return root, metrics, prepared, fold_data


def test_the_saved_pair_is_the_mean_of_its_two_networks(pair):
    from emodarts_tf.evaluation.model_dir import load_model_dir

    root, metrics, prepared, fold_data = pair
    assert metrics["refit"]["ensemble"] is True
    trained = load_model_dir(root / "fold1")
    members = [layer for layer in trained.model.layers if layer.name.endswith(("_member1", "_member2"))]
    assert len(members) == 2 and members[0].count_params() == members[1].count_params() > 0
    raw = prepared.features(fold_data.test_paths)[..., None]  # (n, rows, frames, 1), as the model reads it
    x = (raw - trained.mean) / trained.std
    each = [_softmax(np.asarray(member(x, training=False))) for member in members]
    assert np.abs(each[0] - each[1]).max() > 1e-3  # two different networks
    np.testing.assert_allclose(trained.probabilities(raw), (each[0] + each[1]) / 2, atol=TOLERANCE)


def test_the_export_serves_the_pair(pair):
    import tensorflow as tf

    from emodarts_tf.evaluation.model_dir import load_model_dir

    root, _, prepared, fold_data = pair
    trained = load_model_dir(root / "fold1")
    raw = prepared.features(fold_data.test_paths)[..., None].astype("float32")
    loaded = tf.saved_model.load(str(root / "serving" / "1"))
    got = loaded.signatures["serving_default"](mfcc=tf.constant(raw))
    np.testing.assert_allclose(got["probabilities"].numpy(), trained.probabilities(raw), atol=TOLERANCE)
    np.testing.assert_array_equal(got["class_id"].numpy(), trained.probabilities(raw).argmax(axis=1))


def test_two_input_members_keep_their_input_names_and_reload(tmp_path):
    """Members with named inputs (a two-stream model's ``spectrogram`` and ``frames``) and a dict output with an
    auxiliary head: the pair takes the same named inputs, drops the heads, and reloads from ``.keras`` equal."""
    import keras

    from emodarts_tf.evaluation.ensemble import ensemble_model

    def member(seed):
        keras.utils.set_random_seed(seed)
        image, frames = keras.Input((6, 5, 1), name="spectrogram"), keras.Input((7, 3), name="frames")
        joined = keras.layers.Concatenate()([keras.layers.Flatten()(image), keras.layers.GlobalAveragePooling1D()(frames)])
        return keras.Model({"spectrogram": image, "frames": frames},
                           {"logits": keras.layers.Dense(4)(joined), "aux_logits": keras.layers.Dense(4)(joined)},
                           name="two_stream")  # fmt: skip

    members = [member(1), member(2)]
    rng = np.random.default_rng(0)
    x = {"spectrogram": rng.normal(size=(5, 6, 5, 1)).astype("float32"), "frames": rng.normal(size=(5, 7, 3)).astype("float32")}
    expected = np.mean([_softmax(np.asarray(m(x)["logits"])) for m in members], axis=0)
    pair = ensemble_model(members, name="pair")
    assert sorted(t.name.split(":")[0] for t in pair.inputs) == ["frames", "spectrogram"]
    np.testing.assert_allclose(_softmax(np.asarray(pair(x))), expected, atol=TOLERANCE)
    pair.save(tmp_path / "pair.keras")
    again = keras.models.load_model(tmp_path / "pair.keras")
    np.testing.assert_allclose(_softmax(np.asarray(again(x))), expected, atol=TOLERANCE)


def test_members_with_other_inputs_are_refused():
    import keras

    from emodarts_tf.evaluation.ensemble import ensemble_model

    def member(name, shape):
        x = keras.Input(shape, name=name)
        return keras.Model(x, keras.layers.Dense(2)(keras.layers.Flatten()(x)))

    with pytest.raises(ValueError, match="member 2 has inputs"):
        ensemble_model([member("mfcc", (4, 3, 1)), member("mfcc", (4, 5, 1))])
    with pytest.raises(ValueError, match="at least 2 members"):
        ensemble_model([member("mfcc", (4, 3, 1))])
    x = keras.Input((4, 3, 1), name="mfcc")
    three = keras.Model(x, keras.layers.Dense(3)(keras.layers.Flatten()(x)))
    with pytest.raises(ValueError, match=r"member 2 has logits of shape \(3,\), member 1 \(2,\)"):
        ensemble_model([member("mfcc", (4, 3, 1)), three])
