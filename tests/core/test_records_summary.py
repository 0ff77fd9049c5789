"""records.csv / folds.json round trips, and cross-fold summaries against numpy."""
import json

import numpy as np
import pytest

from emodarts_tf.data.records import Fold, Record, read_folds, read_records, write_folds, write_records
from emodarts_tf.evaluation.summary import load_summary, markdown_table, summarise, write_summary


def test_records_and_folds_round_trip(tmp_path):
    recs = [Record("/a/x,1.wav", "ang", "03", "s1", ""), Record("/a/y.wav", "neu", "08", "", "Train")]
    write_records(tmp_path / "records.csv", recs)
    assert read_records(tmp_path / "records.csv") == recs
    folds = [Fold(1, "03+08", ["10"], ["03", "08"], ["/a/z.wav"], ["/a/x,1.wav", "/a/y.wav"])]
    write_folds(tmp_path / "folds.json", folds)
    assert read_folds(tmp_path / "folds.json") == folds
    raw = json.loads((tmp_path / "folds.json").read_text())
    assert raw[0]["test"]["speakers"] == ["03", "08"]


def test_records_missing_column_is_named(tmp_path):
    (tmp_path / "r.csv").write_text("path,label\nx.wav,ang\n")
    with pytest.raises(ValueError, match="speaker"):
        read_records(tmp_path / "r.csv")


def test_summary_matches_numpy(tmp_path):
    per_fold = {1: {"ua": 0.5, "wa": 0.6, "f1": 0.4}, 2: {"ua": 0.7, "wa": 0.65, "f1": 0.6}, 3: {"ua": 0.9, "wa": 0.7, "f1": 0.8}}
    s = summarise(per_fold, "emodarts", ["ang", "hap"], params=10, compute_s={"train": 3.0})
    assert s["ua"]["mean"] == pytest.approx(np.mean([0.5, 0.7, 0.9]))
    assert s["ua"]["std"] == pytest.approx(np.std([0.5, 0.7, 0.9]))
    assert s["wa"]["per_fold"] == {"1": 0.6, "2": 0.65, "3": 0.7}
    write_summary(tmp_path, s, title="t")
    assert load_summary(tmp_path) == s
    table = markdown_table(s)
    assert "| 2 | 0.7000 | 0.6500 | 0.6000 |" in table
    assert "0.7000 ± 0.1633" in table


def test_summary_rejects_missing_metric():
    with pytest.raises(ValueError, match="'f1'"):
        summarise({1: {"ua": 1.0, "wa": 1.0}}, "x", [])
