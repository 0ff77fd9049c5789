"""Fixtures of the evaluation tests: a mini EmoDB corpus (32 real utterances, 4 speakers) and its fold 1."""
from __future__ import annotations

import pytest

from eval_helpers import tiny_config, write_emodb_manifest


@pytest.fixture(scope="session")
def mini_manifest(tmp_path_factory, emodb_root):
    return write_emodb_manifest(tmp_path_factory.mktemp("mini") / "mini.csv", emodb_root)


@pytest.fixture(scope="session")
def mini_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="session")
def mini_config(mini_manifest, mini_cache):
    return tiny_config(mini_manifest, mini_cache)


@pytest.fixture(scope="session")
def mini_prepared(mini_config):
    from emodarts_tf.data.prepare import prepare

    return prepare(mini_config, progress=False)


@pytest.fixture(scope="session")
def fold1(mini_prepared, mini_config):
    from emodarts_tf.data.pipeline import make_fold_data

    return make_fold_data(mini_prepared, 1, mini_config)


@pytest.fixture(scope="session")
def standin_run(tmp_path_factory, fold1, mini_config):
    """A stand-in CNN trained 3 epochs on fold 1 with ``fit_fold``: (fold_dir, metrics)."""
    import keras

    from emodarts_tf.evaluation.fitting import fit_fold
    from eval_helpers import standin_builder, standin_info

    fold_dir = tmp_path_factory.mktemp("standin") / "fold1"
    keras.utils.set_random_seed(7)
    metrics = fit_fold(
        standin_builder(fold1.input_shape, len(fold1.classes)),
        fold1,
        fold_dir,
        epochs=3,
        batch_size=8,
        optimizer=keras.optimizers.Adam(1e-2),
        patience=None,
        extra_info=standin_info(mini_config),
    )
    return fold_dir, metrics
