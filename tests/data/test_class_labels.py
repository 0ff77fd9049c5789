"""Class labels of a CSV manifest: spellings are merged (strip, lower-case), and a class spoken by fewer than
``data.min_speakers_per_class`` speakers is dropped, so that every fold trains and scores the same classes."""
from __future__ import annotations

import csv
import json
import logging

from emodarts_tf.data.corpora import load_corpus
from emodarts_tf.data.prepare import prepare


def _manifest(tmp_path, wav_writer):
    """4 speakers x ang/hap/neu x 2 utterances, `ang` spelled three ways (the CSV reader strips cells, so
    " ANG " reads as "ANG"), and `Sur` spoken by spk2 only."""
    root = tmp_path / "labels"
    spelling = {0: "Ang", 1: " ANG ", 2: "ang", 3: "ang"}
    rows, seed = [], 0
    for s in range(4):
        for c, label in enumerate(("ang", "hap", "neu")):
            for u in range(2):
                seed += 1
                rel = f"audio/spk{s}/{label}_{u}.wav"
                wav_writer(root / rel, seed=seed, f0=110.0 + 60.0 * c)
                rows.append([rel, spelling[s] if label == "ang" else label, f"spk{s}"])
    for u in range(3):
        seed += 1
        wav_writer(root / f"audio/spk2/sur_{u}.wav", seed=seed, f0=400.0)
        rows.append([f"audio/spk2/sur_{u}.wav", "Sur", "spk2"])
    with (root / "manifest.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "label", "speaker"])
        writer.writerows(rows)
    return root / "manifest.csv"


def test_spellings_merge_and_a_one_speaker_class_is_dropped(tmp_path, wav_writer, make_config, caplog):
    config = make_config("csv", _manifest(tmp_path, wav_writer))
    out = tmp_path / "out"
    with caplog.at_level(logging.INFO):
        prepared = prepare(config, out_dir=out, progress=False)
    # `Ang`, ` ANG ` and `ang` are one class; `sur` (one speaker) is gone.
    assert prepared.classes == ["ang", "hap", "neu"]
    assert sorted({r.label for r in prepared.records}) == ["ang", "hap", "neu"] and len(prepared.records) == 24
    merged = [m for m in caplog.messages if "merged spellings of class 'ang'" in m]
    assert merged and "'ANG' (2)" in merged[0] and "'Ang' (2)" in merged[0] and "'ang' (4)" in merged[0]
    dropped = [m for m in caplog.messages if "class 'sur' dropped" in m]
    assert dropped and "3 utterance(s) from 1 speaker(s) (spk2)" in dropped[0]
    assert "data.min_speakers_per_class=2" in dropped[0]
    # Counted in prepared.json like the other drops.
    meta = json.loads((out / "prepared.json").read_text())
    assert meta["classes"] == ["ang", "hap", "neu"]
    assert meta["summary"]["dropped"] == {"class sur: fewer than 2 speakers": 3}
    # Every fold trains on every class.
    for fold in prepared.folds:
        assert {prepared.record(p).label for p in fold.train} == set(prepared.classes), fold.name


def test_min_speakers_per_class_one_keeps_every_class_and_classes_are_normalised(tmp_path, wav_writer, make_config):
    manifest = _manifest(tmp_path, wav_writer)
    kept = prepare(make_config("csv", manifest, min_speakers_per_class=1), progress=False)
    assert kept.classes == ["ang", "hap", "neu", "sur"] and not kept.dropped
    # data.classes is spelled like the normalised labels.
    corpus = load_corpus(make_config("csv", manifest, classes=["ANG", " Hap"]).data)
    assert corpus.classes == ["ang", "hap"] and corpus.dropped == {"label neu": 8, "label sur": 3}


def test_bad_min_speakers_per_class_is_named(tmp_path, wav_writer, make_config):
    import pytest

    with pytest.raises(ValueError, match=r"data.min_speakers_per_class: expected an integer >= 1, received 0"):
        prepare(make_config("csv", _manifest(tmp_path, wav_writer), min_speakers_per_class=0), progress=False)
    with pytest.raises(ValueError, match=r"every class has fewer than data.min_speakers_per_class=5 speakers"):
        prepare(make_config("csv", _manifest(tmp_path, wav_writer), min_speakers_per_class=5), progress=False)


def test_a_class_left_without_utterances_is_dropped(caplog):
    """A requested class with no utterance left (every file of it failed extraction) is not kept as an output
    that no fold trains; the others stay in their order."""
    import logging

    from emodarts_tf.data.corpora import drop_rare_classes
    from emodarts_tf.data.records import Record

    records = [Record(f"{c}{s}.wav", c, f"s{s}") for c in ("ang", "sad") for s in range(3)]
    with caplog.at_level(logging.WARNING):
        kept, classes, dropped = drop_rare_classes(records, ["ang", "hap", "sad"], 2, "csv")
    assert classes == ["ang", "sad"] and kept == records and dropped == {}
    assert any("['hap'] dropped: no utterance left" in m for m in caplog.messages)
    rare = records + [Record("neu0.wav", "neu", "s0")]
    kept, classes, dropped = drop_rare_classes(rare, ["ang", "hap", "neu", "sad"], 2, "csv")
    assert classes == ["ang", "sad"] and kept == records and dropped == {"class neu: fewer than 2 speakers": 1}
