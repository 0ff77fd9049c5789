"""Fixtures of the export tests: a tiny emoDARTS network retrained on real EmoDB speech (16 kHz features)
and exported with ``cli/export.py``."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from export_helpers import FEATURES_16K, TINY_GENOTYPE, config, write_emodb_manifest


@dataclass
class Exported:
    model_dir: Path
    version_dir: Path
    config: object
    prepared: object
    fold_data: object


@pytest.fixture(scope="session")
def export_manifest(tmp_path_factory, emodb_root):
    return write_emodb_manifest(tmp_path_factory.mktemp("exp-data") / "mini.csv", emodb_root, per_class=3)


@pytest.fixture(scope="session")
def export_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("exp-cache")


@pytest.fixture(scope="session")
def exported(tmp_path_factory, export_manifest, export_cache) -> Exported:
    import keras

    from emodarts_tf.commands.export import main as export_main
    from emodarts_tf.data.pipeline import make_fold_data
    from emodarts_tf.data.prepare import prepare
    from emodarts_tf.evaluation.trainer import train_genotype_fold
    from emodarts_tf.search_space.genotype import Genotype

    # 48 utterances, 8 epochs: enough for the model to tell some classes apart (its predictions differ).
    cfg = config(export_manifest, export_cache, FEATURES_16K, ["train.epochs=8", "train.lr=0.05", "train.patience=8"])
    prepared = prepare(cfg, progress=False)
    fold_data = make_fold_data(prepared, 1, cfg)
    root = tmp_path_factory.mktemp("exported")
    keras.utils.set_random_seed(0)
    train_genotype_fold(Genotype.from_dict(TINY_GENOTYPE), cfg, fold_data, root / "fold1", corpus="csv", protocol="loso")
    serving = root / "serving" / "emodarts"
    assert export_main(["--model", str(root / "fold1"), "--out", str(serving), "--version", "3"]) == 0
    return Exported(root / "fold1", serving / "3", cfg, prepared, fold_data)


@pytest.fixture(scope="session")
def loaded(exported):
    import tensorflow as tf

    return tf.saved_model.load(str(exported.version_dir))
