"""benchmarks/refit_ablation.py's arms: parsing and the paired table (nothing is trained)."""
from __future__ import annotations

import json

import pytest


@pytest.fixture(scope="module")
def nested(load_benchmark):
    return load_benchmark("refit_ablation")


def test_arms_keep_their_order_and_overrides(nested):
    arms = nested.parse_arms(["select=", "swa=recipe.swa=0.5,train.epochs=20"])
    assert list(arms.items()) == [("select", []), ("swa", ["recipe.swa=0.5", "train.epochs=20"])]


@pytest.mark.parametrize(
    "texts, message",
    [
        (["a=", "a=recipe.swa=0.5"], "arm 'a' is given twice"),
        (["a=features.n_mfcc=20"], "features.n_mfcc changes the prepared corpus"),
        (["a=frames.source=npy"], "frames.source changes the prepared corpus"),
        (["nameless"], "--arm 'nameless': expected NAME=key=value"),
    ],
)
def test_bad_arms_are_named(nested, texts, message):
    with pytest.raises(SystemExit, match=message):
        nested.parse_arms(texts)


def test_arm_table_pairs_every_arm_with_the_first(nested):
    arms = {"select": [], "swa": ["recipe.swa=0.5"], "refit": ["recipe.refit=true"]}
    scores = {"select": [0.5, 0.7, 0.6], "swa": [0.6, 0.7, 0.5], "refit": [0.4, 0.6, 0.5]}
    lines = nested.arm_table(arms, scores, {"select": 10, "swa": 12, "refit": 30})
    assert lines[2] == "| select | (config) | 0.6000 ± 0.0816 | 10 |"
    assert lines[3] == "| swa | recipe.swa=0.5 | 0.6000 ± 0.0816 | 12 |"
    # swa - select: +0.1, 0, -0.1; refit - select: -0.1 each
    assert lines[6] == "swa - select: mean +0.0000, swa better in 1 of 3 pairs, worse in 1"
    assert lines[7] == "refit - select: mean -0.1000, refit better in 0 of 3 pairs, worse in 3"


def _write_predictions(path, rows, classes=("ang", "sad")):
    lines = ["path,label,predicted," + ",".join(f"p_{c}" for c in classes)]
    for name, label, probs in rows:
        lines.append(f"{name},{label},{classes[probs.index(max(probs))]}," + ",".join(str(p) for p in probs))
    path.write_text("\n".join(lines) + "\n")


def test_averaged_ua_takes_the_argmax_of_the_mean_probabilities(nested, tmp_path):
    assert nested.averaged_ua(tmp_path) is None  # no first model's predictions: an arm without the refit
    # p_ang of the first model and of the refit; labels ang, ang, sad, sad. Alone the first model gets b and d
    # right (UA 0.5), the refit only a (0.25), the mean (0.6, 0.6, 0.7, 0.45) a, b and d (0.75).
    first = [0.4, 0.8, 0.6, 0.3]
    refit = [0.8, 0.4, 0.8, 0.6]
    labels = ["ang", "ang", "sad", "sad"]
    names = ["a.wav", "b.wav", "c.wav", "d.wav"]
    _write_predictions(tmp_path / "predictions_selection.csv", [(n, y, [p, 1 - p]) for n, y, p in zip(names, labels, first)])
    _write_predictions(tmp_path / "predictions.csv", [(n, y, [p, 1 - p]) for n, y, p in zip(names, labels, refit)])
    assert nested.averaged_ua(tmp_path) == pytest.approx(0.75)
    # an arm that already serves the average (recipe.ensemble) gets no second average
    (tmp_path / "metrics.json").write_text('{"ua": 0.75, "refit": {"epochs": 30, "ensemble": true}}')
    assert nested.averaged_ua(tmp_path) is None
    (tmp_path / "metrics.json").unlink()
    _write_predictions(tmp_path / "predictions.csv", [("x.wav", "ang", [0.8, 0.2])])
    with pytest.raises(ValueError, match="list different utterances"):
        nested.averaged_ua(tmp_path)


def test_derived_scores_name_each_model_an_arm_trained(nested, tmp_path):
    assert nested.derived_scores({"ua": 0.6, "refit": None}, tmp_path) == {}  # one model, served
    # the refit served alone: the first model, and the pair from the saved predictions (0.75, as above)
    _write_predictions(tmp_path / "predictions_selection.csv",
                       [(n, y, [p, 1 - p]) for n, y, p in zip("abcd", ["ang", "ang", "sad", "sad"], [0.4, 0.8, 0.6, 0.3])])
    _write_predictions(tmp_path / "predictions.csv",
                       [(n, y, [p, 1 - p]) for n, y, p in zip("abcd", ["ang", "ang", "sad", "sad"], [0.8, 0.4, 0.8, 0.6])])
    alone = {"ua": 0.25, "refit": {"ensemble": False, "selection_test": {"ua": 0.5}}}
    assert nested.derived_scores(alone, tmp_path) == {":first": 0.5, "+avg": pytest.approx(0.75)}
    # the pair served (recipe.ensemble): its members alone, no second average
    pair = {"ua": 0.75, "refit": {"ensemble": True, "selection_test": {"ua": 0.5}, "refit_test": {"ua": 0.25}}}
    (tmp_path / "metrics.json").write_text(json.dumps(pair))
    assert nested.derived_scores(pair, tmp_path) == {":first": 0.5, ":refit": 0.25}
    assert set(nested.DERIVED_ROWS) == {"+avg", ":first", ":refit"}
