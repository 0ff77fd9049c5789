"""``cli/evaluate.py``: the model's own test fold, a CSV corpus it never saw (labels by name), unknown
classes refused or left out, and a run directory passed by mistake."""
from __future__ import annotations

import csv
import json
import logging

import pytest

from emodarts_tf.commands.evaluate import main
from emodarts_tf.evaluation.metrics import classification_metrics
from eval_helpers import write_emodb_manifest


def _sets(cache):
    return ["--set", f"data.cache_dir={cache}", "--set", "data.workers=1"]


def test_own_test_fold_reproduces_the_training_report(standin_run, mini_manifest, mini_cache, tmp_path):
    fold_dir, metrics = standin_run
    out = tmp_path / "report"
    assert main(["--model", str(fold_dir), "--data", "csv", "--root", str(mini_manifest), "--out", str(out),
                 *_sets(mini_cache)]) == 0  # fmt: skip
    report = json.loads((out / "metrics.json").read_text())
    assert report["split"] == "test" and report["fold"] == 1
    for key in ("ua", "wa", "f1"):
        assert report[key] == pytest.approx(metrics[key]), key
    assert (report["n"], report["confusion_matrix"]) == (metrics["n"], metrics["confusion_matrix"])
    assert report["notes"] == []  # the test speaker is not one the model trained on
    for name in ("metrics.md", "confusion_matrix.png", "predictions.csv"):
        assert (out / name).is_file()


def test_unseen_csv_corpus_maps_labels_by_name(standin_run, emodb_root, mini_cache, tmp_path, caplog):
    fold_dir, _ = standin_run
    # Other speakers, labels spelled by the model's names but only three of its classes, in another order:
    # the corpus's own class ids differ from the model's.
    manifest = write_emodb_manifest(tmp_path / "other.csv", emodb_root, speakers=("11", "12"), per_class=2,
                                    letters="TWN")  # fmt: skip
    out = tmp_path / "other"
    with caplog.at_level(logging.WARNING):
        assert main(["--model", str(fold_dir), "--data", "csv", "--root", str(manifest), "--out", str(out),
                     *_sets(mini_cache)]) == 0  # fmt: skip
    report = json.loads((out / "metrics.json").read_text())
    assert report["split"] == "all" and report["n"] == 12
    assert report["classes"] == ["ang", "hap", "neu", "sad"]
    rows = list(csv.DictReader((out / "predictions.csv").open()))
    index = {c: i for i, c in enumerate(report["classes"])}
    again = classification_metrics([index[r["label"]] for r in rows], [index[r["predicted"]] for r in rows], 4)
    assert again["confusion_matrix"] == report["confusion_matrix"]
    assert sum(report["confusion_matrix"][index["hap"]]) == 0  # no happy utterance in this corpus


def test_unknown_class_is_an_error_or_left_out(standin_run, emodb_root, mini_cache, tmp_path, caplog):
    fold_dir, _ = standin_run
    labels = {"W": "ang", "F": "hap", "T": "sad", "N": "neu", "A": "fear"}
    manifest = write_emodb_manifest(tmp_path / "fear.csv", emodb_root, speakers=("11",), per_class=1,
                                    letters="WFTNA", labels=labels)  # fmt: skip
    args = ["--model", str(fold_dir), "--data", "csv", "--root", str(manifest), *_sets(mini_cache)]
    with caplog.at_level(logging.ERROR):
        assert main([*args, "--out", str(tmp_path / "a")]) == 2
    assert "class(es) the model does not know: 'fear' (1 utterance)" in caplog.text
    assert "--ignore-unknown" in caplog.text
    assert main([*args, "--out", str(tmp_path / "b"), "--ignore-unknown"]) == 0
    report = json.loads((tmp_path / "b" / "metrics.json").read_text())
    assert report["ignored"] == {"fear": 1} and report["n"] == 4
    assert "fear" in (tmp_path / "b" / "metrics.md").read_text()


def test_seen_speakers_are_flagged(standin_run, mini_manifest, mini_cache, tmp_path):
    fold_dir, _ = standin_run
    out = tmp_path / "all"
    assert main(["--model", str(fold_dir), "--data", "csv", "--root", str(mini_manifest), "--split", "all",
                 "--out", str(out), *_sets(mini_cache)]) == 0  # fmt: skip
    report = json.loads((out / "metrics.json").read_text())
    assert report["n"] == 32
    assert "not speaker-independent" in report["notes"][0]


def test_run_directory_instead_of_a_model(standin_run, mini_manifest, mini_cache, caplog):
    fold_dir, _ = standin_run
    with caplog.at_level(logging.ERROR):
        code = main(["--model", str(fold_dir.parent), "--data", "csv", "--root", str(mini_manifest), *_sets(mini_cache)])
    assert code == 2
    assert "a run directory with one model per fold (fold1)" in caplog.text
