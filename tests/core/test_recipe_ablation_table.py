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
