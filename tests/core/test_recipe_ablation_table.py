"""benchmarks/recipe_ablation.py --table: paired differences on hand-made fold results (nothing is trained)."""
from __future__ import annotations

import json

import pytest


@pytest.fixture(scope="module")
def ablation(load_benchmark):
    return load_benchmark("recipe_ablation")


def _fold(root, variant, fold, selected, history):
    d = root / variant / "g1" / f"fold{fold}"
    d.mkdir(parents=True)
    (d / "metrics.json").write_text(json.dumps({"ua": 0.99, "val": {"ua": selected}}))  # "ua": test, never read
    (d / "history.json").write_text(json.dumps([{"val_ua": v} for v in history]))


def test_paired_table_compares_on_common_folds_only(ablation, tmp_path):
    a, b = tmp_path / "s0", tmp_path / "s1"
    _fold(a, "base", 1, 0.70, [0.5] * 5 + [0.6] * 5)
    _fold(a, "x", 1, 0.80, [0.7] * 5)
    _fold(b, "base", 1, 0.60, [0.6] * 5)
    _fold(b, "x", 1, 0.50, [0.4] * 5)
    _fold(b, "x", 2, 0.90, [0.9] * 5)  # no base run of this fold: counted in x's mean, not in the difference
    (b / "x" / "g1" / "fold3").mkdir()  # unfinished: ignored
    rows = {line.split(" | ")[0].strip("| "): line for line in ablation.paired_table([a, b])[2:]}
    assert rows["base"].startswith("| base | 2 | 0.6500 ± 0.0500 | 0.6000 ± 0.0000 | +0.0000 / +0.0000 | 0 / 0 |")
    # x: selected (0.8, 0.5, 0.9) mean 0.7333; paired with base: +0.10 and -0.10 -> 0; last 5: +0.1, -0.2 -> -0.05
    assert "| x | 3 | 0.7333 ±" in rows["x"] and "| +0.0000 / -0.0500 | 1 / 1 |" in rows["x"]
    with pytest.raises(SystemExit, match="no finished folds of the variant 'base'"):
        ablation.paired_table([tmp_path / "s0" / "x"])


def test_variants_cannot_change_the_shared_prepared_corpus(ablation):
    assert ablation.parse_variant("wide=train.init_channels=16,train.seq_hidden=64") == \
        ("wide", ["train.init_channels=16", "train.seq_hidden=64"])
    assert ablation.parse_variant("base=") == ("base", [])
    assert ablation.parse_variant("speed=recipe.speed_perturb=[0.9,1.1],recipe.swa=0.5") == \
        ("speed", ["recipe.speed_perturb=[0.9,1.1]", "recipe.swa=0.5"])
    assert ablation.parse_variant("spk=data.normalize=speaker") == ("spk", ["data.normalize=speaker"])
    for bad in ("tp2=features.time_pool=2", "all=train.epochs=3,data.classes=[all]"):
        with pytest.raises(SystemExit, match="changes the prepared corpus"):
            ablation.parse_variant(bad)


def test_a_search_directory_gives_each_fold_its_own_searched_genotype(ablation, tmp_path):
    import dataclasses
    from types import SimpleNamespace

    import numpy as np

    from emodarts_tf.config import SearchSpaceConfig, load_config
    from emodarts_tf.data.records import Fold
    from emodarts_tf.evaluation.genotype_source import GenotypeLeakError
    from emodarts_tf.search_space.random_genotype import sample_genotype

    space = SearchSpaceConfig(cnn_cells=3, cnn_nodes=2, seq_cells=1, seq_nodes=2)
    folds = [Fold(index=k, name=f"f{k}", train_speakers=["a", "b", "c"][:k] + ["x"], test_speakers=[f"t{k}"])
             for k in (1, 2)]
    searched = {}
    for fold in folds:
        genotype = dataclasses.replace(sample_genotype(space, np.random.default_rng(fold.index)),
                                       meta={"fold": fold.index, "corpus": "c", "protocol": "p",
                                             "train_speakers": fold.train_speakers})
        (tmp_path / "search" / f"fold{fold.index}").mkdir(parents=True)
        genotype.save(tmp_path / "search" / f"fold{fold.index}" / "genotype.json")
        searched[fold.index] = genotype
    assert searched[1].normal != searched[2].normal or searched[1].seq != searched[2].seq
    prepared = SimpleNamespace(folds=folds, corpus="c", protocol="p")
    config = load_config("cpu")
    sets = ablation.fold_genotypes(str(tmp_path / "search"), prepared, [1, 2], config, 0)
    assert len(sets) == 1 and {k: g.to_dict()["normal"] for k, g in sets[0].items()} == \
        {k: g.to_dict()["normal"] for k, g in searched.items()}
    # a fold whose test speaker the search saw is refused, as by cli/train.py
    leaky = dataclasses.replace(searched[1], meta={**searched[1].meta, "train_speakers": ["t2"], "fold": 2})
    leaky.save(tmp_path / "search" / "fold2" / "genotype.json")
    with pytest.raises(GenotypeLeakError):
        ablation.fold_genotypes(str(tmp_path / "search"), prepared, [1, 2], config, 0)
    # random:N: each genotype on every fold
    drawn = ablation.fold_genotypes("random:2", prepared, [1, 2], config, 0)
    assert len(drawn) == 2 and all(d[1] is d[2] for d in drawn) and drawn[0][1] is not drawn[1][1]
