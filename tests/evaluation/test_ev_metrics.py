"""UA, WA and macro F1 against confusion matrices worked out by hand; cross-fold summaries."""
from __future__ import annotations

import numpy as np
import pytest

from emodarts_tf.evaluation.metrics import (
    classification_metrics,
    confusion_matrix,
    macro_f1,
    unweighted_accuracy,
    weighted_accuracy,
)
from emodarts_tf.evaluation.summary import markdown_table, summarise


def test_three_class_example_by_hand():
    y_true = [0, 0, 0, 1, 1, 2]
    y_pred = [0, 1, 0, 1, 2, 2]
    cm = confusion_matrix(y_true, y_pred, 3)
    assert cm.tolist() == [[2, 1, 0], [0, 1, 1], [0, 0, 1]]
    # recalls 2/3, 1/2, 1/1
    assert unweighted_accuracy(cm) == pytest.approx((2 / 3 + 1 / 2 + 1) / 3)
    assert weighted_accuracy(cm) == pytest.approx(4 / 6)
    # F1: class 0 P=1 R=2/3 -> 0.8; class 1 P=1/2 R=1/2 -> 0.5; class 2 P=1/2 R=1 -> 2/3
    assert macro_f1(cm) == pytest.approx((0.8 + 0.5 + 2 / 3) / 3)
    m = classification_metrics(y_true, y_pred, 3)
    assert m["n"] == 6 and m["confusion_matrix"] == cm.tolist()
    assert (m["ua"], m["wa"]) == (pytest.approx(0.7222222), pytest.approx(0.6666667))


def test_imbalanced_set_ua_differs_from_wa():
    # 8 of class 0 all right, 2 of class 1 all wrong: WA 0.8 but UA 0.5.
    y_true = [0] * 8 + [1] * 2
    y_pred = [0] * 10
    m = classification_metrics(y_true, y_pred, 2)
    assert m["wa"] == pytest.approx(0.8)
    assert m["ua"] == pytest.approx(0.5)
    assert m["f1"] == pytest.approx((2 * 8 / (8 + 10) + 0.0) / 2)


def test_absent_classes():
    # 4 classes; class 3 never occurs and is never predicted: left out of UA and F1.
    # Class 2 is predicted once but never occurs: out of UA (no support), in F1 (a false positive, F1 0).
    y_true = [0, 0, 1, 1]
    y_pred = [0, 2, 1, 1]
    cm = confusion_matrix(y_true, y_pred, 4)
    assert unweighted_accuracy(cm) == pytest.approx((1 / 2 + 1) / 2)
    f1_0 = 2 * 1 / (2 + 1)  # TP 1, support 2, predicted 1
    f1_1 = 1.0
    assert macro_f1(cm) == pytest.approx((f1_0 + f1_1 + 0.0) / 3)


def test_whole_set_ua_is_not_the_mean_of_batch_uas():
    y_true = np.array([0, 0, 0, 1, 0, 1, 1, 1])
    y_pred = np.array([0, 0, 1, 1, 0, 0, 0, 1])
    whole = classification_metrics(y_true, y_pred, 2)["ua"]
    batches = [classification_metrics(y_true[i : i + 4], y_pred[i : i + 4], 2)["ua"] for i in (0, 4)]
    assert whole == pytest.approx((3 / 4 + 2 / 4) / 2)
    assert np.mean(batches) != pytest.approx(whole)


@pytest.mark.parametrize(
    "y_true, y_pred, message",
    [([0, 1], [0], "shapes differ"), ([0, 3], [0, 1], "class ids must lie in 0..2"), ([], [], "empty")],
)
def test_bad_inputs(y_true, y_pred, message):
    with pytest.raises(ValueError, match=message):
        classification_metrics(y_true, y_pred, 3)


def test_summary_mean_std_per_fold():
    per_fold = {1: {"ua": 0.5, "wa": 0.6, "f1": 0.4}, 2: {"ua": 0.7, "wa": 0.8, "f1": 0.6}}
    s = summarise(per_fold, kind="emodarts", classes=["a", "b"], params=10, flops=20, compute_s={"train": 1.0})
    assert s["ua"] == {"mean": pytest.approx(0.6), "std": pytest.approx(0.1), "per_fold": {"1": 0.5, "2": 0.7}}
    assert s["wa"]["mean"] == pytest.approx(0.7) and s["f1"]["std"] == pytest.approx(0.1)
    table = markdown_table(s)
    assert "| 1 | 0.5000 | 0.6000 | 0.4000 |" in table
    assert "0.6000 ± 0.1000" in table
    assert "first_model" not in s["extra"] and "refit_alone" not in s["extra"]


def test_summary_reports_the_first_model_and_the_refit_alone_beside_the_pair():
    def fold(ua, first, alone=None):
        refit = {"epochs": 30, "selection_test": {"ua": first, "wa": first, "f1": first}}
        if alone is not None:
            refit["refit_test"] = {"ua": alone, "wa": alone, "f1": alone}
        return {"ua": ua, "wa": ua, "f1": ua, "refit": refit}

    s = summarise({1: fold(0.7, 0.6, 0.5), 2: fold(0.9, 0.8, 0.9)}, kind="emodarts", classes=["a", "b"])
    assert s["extra"]["first_model"]["ua"] == {"mean": pytest.approx(0.7), "std": pytest.approx(0.1),
                                               "per_fold": {"1": 0.6, "2": 0.8}}  # fmt: skip
    assert s["extra"]["refit_alone"]["wa"]["mean"] == pytest.approx(0.7)
    # a model that not every fold scored is left out (a run resumed over folds trained before the change)
    s = summarise({1: fold(0.7, 0.6), 2: {"ua": 0.9, "wa": 0.9, "f1": 0.9}}, kind="emodarts", classes=["a", "b"])
    assert "first_model" not in s["extra"] and "refit_alone" not in s["extra"]
