"""Corpus loaders against miniature trees with the real layouts, and EmoDB on the real corpus."""
from __future__ import annotations

import csv
from collections import Counter
from pathlib import Path

import pytest

from emodarts_tf.config import DataConfig
from emodarts_tf.data.corpora import load_corpus
from emodarts_tf.data.protocols import make_folds


def _data(corpus, root, **fields) -> DataConfig:
    data = DataConfig(corpus=corpus, root=str(root) if root is not None else None)
    for key, value in fields.items():
        setattr(data, key, value)
    return data


def _by_name(records) -> dict:
    return {Path(r.path).stem: r for r in records}


# ------------------------------------------------------------------------------------------- IEMOCAP
def test_iemocap_records_labels_speakers(iemocap_root):
    corpus = load_corpus(_data("iemocap", iemocap_root, protocol="loso", selection="all"))
    recs = _by_name(corpus.records)
    # 5 sessions x 10 utterances: exc, xxx and fru are not in the 4 classes -> 7 kept per session.
    assert len(corpus.records) == 35
    assert corpus.classes == ["ang", "hap", "neu", "sad"]
    r = recs["Ses01F_impro01_M000"]
    assert (r.label, r.speaker, r.session, r.gender) == ("ang", "Ses01_M", "01", "M")
    # Speaker from the last field, not from the dialog letter.
    assert recs["Ses03M_impro02_F000"].speaker == "Ses03_F"
    # The per-rater sub-folder file (which says `sad`) is not read.
    assert recs["Ses01F_impro01_F000"].label == "hap"
    assert {r.speaker for r in corpus.records} == {f"Ses0{n}_{g}" for n in range(1, 6) for g in "MF"}
    assert corpus.dropped == {"label exc": 5, "label fru": 5, "label xxx": 5}
    # The labelled utterance without audio is reported.
    assert any("Ses01F_impro01_M099" in p.problem for p in corpus.problems)


def test_iemocap_selection_and_merge_exc(iemocap_root):
    improvised = load_corpus(_data("iemocap", iemocap_root, protocol="loso", selection="improvised"))
    assert all("_impro" in r.path for r in improvised.records)
    assert len(improvised.records) == 30
    scripted = load_corpus(_data("iemocap", iemocap_root, protocol="loso", selection="scripted"))
    assert {Path(r.path).stem[7:] for r in scripted.records} == {"script01_1_F000"}
    merged = load_corpus(_data("iemocap", iemocap_root, protocol="loso", selection="improvised", merge_exc=True))
    assert _by_name(merged.records)["Ses02M_impro02_M000"].label == "hap"
    assert len(merged.records) == 35


def test_iemocap_emodarts_forces_paper_selection(iemocap_root):
    corpus = load_corpus(_data("iemocap", iemocap_root, selection="all", merge_exc=True, classes=["ang", "hap"]))
    assert corpus.protocol == "emodarts"  # the default for IEMOCAP
    assert corpus.selection == "improvised"
    assert sorted(corpus.classes) == ["ang", "hap", "neu", "sad"]
    assert all("_impro" in r.path for r in corpus.records)
    assert "exc" not in {r.label for r in corpus.records} and len(corpus.records) == 30
    folds = make_folds(corpus.records, corpus.protocol, "iemocap")
    assert [f.test_speakers for f in folds] == [
        ["Ses01_M", "Ses02_F"], ["Ses02_M", "Ses03_F"], ["Ses03_M", "Ses04_F"], ["Ses04_M", "Ses05_F"],
        ["Ses01_F", "Ses05_M"],
    ]  # fmt: skip
    assert [len(f.test) for f in folds] == [6, 6, 6, 6, 6]
    assert all(len(f.train) == 24 for f in folds)


def test_iemocap_sessions_protocol(iemocap_root):
    corpus = load_corpus(_data("iemocap", iemocap_root, protocol="loso-session"))
    folds = make_folds(corpus.records, "loso-session", "iemocap")
    assert [f.test_speakers for f in folds] == [[f"Ses0{n}_F", f"Ses0{n}_M"] for n in range(1, 6)]


# ---------------------------------------------------------------------------------------- MSP-IMPROV
def test_msp_improv_consensus(msp_improv_root):
    corpus = load_corpus(_data("msp-improv", msp_improv_root))
    assert corpus.protocol == "loso-session"
    # 12 speakers x 7 utterances; O and X (no agreement) are dropped.
    assert len(corpus.records) == 60
    assert corpus.dropped == {"label oth": 12, "label xxx": 12}
    r = _by_name(corpus.records)["MSP-IMPROV-S07S-F05-P-FM05"]
    assert (r.label, r.speaker, r.session, r.gender) == ("neu", "F05", "05", "F")  # consensus N, target S
    folds = make_folds(corpus.records, corpus.protocol, "msp-improv")
    assert len(folds) == 6
    assert folds[4].test_speakers == ["F05", "M05"]


def test_msp_improv_target_labels(msp_improv_root):
    corpus = load_corpus(_data("msp-improv", msp_improv_root, msp_improv_labels="target"))
    assert len(corpus.records) == 84
    assert _by_name(corpus.records)["MSP-IMPROV-S07S-F05-P-FM05"].label == "sad"
    assert Counter(r.label for r in corpus.records) == {"ang": 24, "hap": 24, "sad": 24, "neu": 12}


# --------------------------------------------------------------------------------------- MSP-Podcast
@pytest.mark.parametrize("labels_name", ["labels_consensus.csv", "labels_concensus.csv"])
def test_msp_podcast_official_split(msp_podcast_root, labels_name):
    corpus = load_corpus(_data("msp-podcast", msp_podcast_root(labels_name)))
    assert corpus.protocol == "official"
    recs = _by_name(corpus.records)
    assert "MSP-PODCAST_0002_0001" not in recs and "MSP-PODCAST_0004_0003" not in recs  # U and X
    r = recs["MSP-PODCAST_0003_0002"]
    assert (r.label, r.speaker, r.split, r.gender) == ("sad", "201", "Development", "M")
    assert recs["MSP-PODCAST_0002_0002"].speaker == "Unknown-Train"
    assert recs["MSP-PODCAST_0004_0004"].speaker == "Unknown-Test1"
    (fold,) = make_folds(corpus.records, "official", "msp-podcast")
    stems = lambda paths: sorted(Path(p).stem for p in paths)  # noqa: E731
    assert stems(fold.test) == ["MSP-PODCAST_0004_0001", "MSP-PODCAST_0004_0002", "MSP-PODCAST_0004_0004"]
    assert "MSP-PODCAST_0003_0001" in stems(fold.train)  # Development stays in the training part ...
    assert "MSP-PODCAST_0005_0001" not in stems(fold.train + fold.test)  # ... Test2 is in neither


# ---------------------------------------------------------------------------------------------- CSV
def test_csv_manifest_relative_paths_and_errors(csv_corpus, tmp_path):
    manifest = csv_corpus(n_speakers=2, per_class=1)
    corpus = load_corpus(_data("csv", manifest))
    assert corpus.classes == ["ang", "hap", "neu", "sad"]  # every label of the manifest, sorted
    assert all(Path(r.path).is_file() and Path(r.path).is_absolute() for r in corpus.records)
    bad = tmp_path / "bad.csv"
    bad.write_text("file,label,speaker\na.wav,ang,s1\n")
    with pytest.raises(ValueError, match=r"bad\.csv: missing column\(s\) \['path'\]"):
        load_corpus(_data("csv", bad))
    with pytest.raises(ValueError, match="is a folder; corpus 'csv' reads a CSV manifest file"):
        load_corpus(_data("csv", tmp_path))


def test_csv_rows_with_extra_cells_are_reported_with_their_line(csv_corpus):
    """A row with more cells than the header (an unquoted comma) and a row with an empty cell are skipped and
    named by their line in the file, counted across a blank line and a quoted cell that spans two lines; the
    other rows load, a trailing comma (an empty cell beyond the header) included."""
    source = csv_corpus(n_speakers=2, per_class=1)
    with source.open(newline="") as handle:
        wavs = [row["path"] for row in csv.DictReader(handle)]
    manifest = source.parent / "hand.csv"

    def write(speaker_cell):
        lines = ["path,label,speaker", "", f"{wavs[0]},ang,{speaker_cell},", f"{wavs[1]},hap,s1,extra,cells",
                 ",neu,s1", *(f"{w},sad,s2" for w in wavs[2:])]
        manifest.write_text("\n".join(lines) + "\n")
        return load_corpus(_data("csv", manifest))

    corpus = write('"s1"')
    assert {p.path: p.problem for p in corpus.problems} == {
        f"{manifest}:4": "2 cell(s) more than the header's 3 columns (an unquoted comma in a path or name?)",
        f"{manifest}:5": "empty path, label or speaker",
    }
    assert sorted(Path(r.path).name for r in corpus.records) == sorted(Path(w).name for w in [wavs[0], *wavs[2:]])
    later = write('"s1\nsecond line"')  # one record over lines 3-4: the bad rows are on lines 5 and 6
    assert sorted(p.path for p in later.problems) == [f"{manifest}:5", f"{manifest}:6"]


def test_unknown_label_is_reported_not_fatal(tmp_path, msp_podcast_root):
    root = msp_podcast_root()
    path = root / "Labels" / "labels_consensus.csv"
    rows = list(csv.reader(path.open()))
    rows[1][1] = "Q"
    with path.open("w", newline="") as handle:
        csv.writer(handle).writerows(rows)
    corpus = load_corpus(_data("msp-podcast", root))
    (problem,) = [p for p in corpus.problems if "unknown label" in p.problem]
    assert problem.path.endswith("MSP-PODCAST_0001_0001.wav") and "'Q'" in problem.problem


# -------------------------------------------------------------------------------------- bad roots
@pytest.mark.parametrize("corpus", ["iemocap", "msp-improv", "msp-podcast", "emodb", "csv"])
def test_wrong_root_names_the_path(tmp_path, corpus):
    missing = tmp_path / "nowhere"
    with pytest.raises(ValueError, match="nowhere"):
        load_corpus(_data(corpus, missing))
    empty = tmp_path / "empty"
    empty.mkdir()
    if corpus != "csv":
        with pytest.raises(ValueError, match="empty"):
            load_corpus(_data(corpus, empty))


def test_missing_label_files_are_a_hard_error(iemocap_root, msp_improv_root, msp_podcast_root):
    import shutil

    for n in range(1, 6):
        shutil.rmtree(iemocap_root / f"Session{n}" / "dialog")
    with pytest.raises(ValueError, match="no IEMOCAP label files"):
        load_corpus(_data("iemocap", iemocap_root))
    (msp_improv_root / "Evaluation.txt").unlink()
    with pytest.raises(ValueError, match="Evaluation.txt"):
        load_corpus(_data("msp-improv", msp_improv_root))
    root = msp_podcast_root()
    (root / "Labels" / "labels_consensus.csv").unlink()
    with pytest.raises(ValueError, match="labels_consensus.csv"):
        load_corpus(_data("msp-podcast", root))


def test_unknown_corpus_protocol_and_classes(emodb_root):
    with pytest.raises(ValueError, match="unknown corpus 'timit'"):
        load_corpus(_data("timit", emodb_root))
    with pytest.raises(ValueError, match="'emodarts' does not apply to corpus 'emodb'"):
        load_corpus(_data("emodb", emodb_root, protocol="emodarts"))
    with pytest.raises(ValueError, match=r"\['fru'\] not in corpus 'emodb'"):
        load_corpus(_data("emodb", emodb_root, classes=["ang", "fru"]))


# --------------------------------------------------------------------------------------- real EmoDB
def test_emodb_real_corpus(emodb_root):
    full = load_corpus(_data("emodb", emodb_root, classes=["all"]))
    assert len(full.records) == 535 and not full.problems
    assert full.classes == ["ang", "bor", "neu", "hap", "fea", "sad", "dis"]
    assert Counter(r.label for r in full.records) == {
        "ang": 127, "bor": 81, "neu": 79, "hap": 71, "fea": 69, "sad": 62, "dis": 46
    }  # fmt: skip
    four = load_corpus(_data("emodb", emodb_root))
    assert len(four.records) == 339 and four.classes == ["ang", "hap", "neu", "sad"]
    assert len({r.speaker for r in four.records}) == 10
    assert {r.speaker: r.gender for r in four.records}["08"] == "F"
    folds = make_folds(four.records, four.protocol, "emodb")
    assert four.protocol == "emodb5" and len(folds) == 5
    assert [f.test_speakers for f in folds] == [["03", "08"], ["09", "10"], ["11", "13"], ["12", "14"], ["15", "16"]]
    assert sum(len(f.test) for f in folds) == 339
    assert len(make_folds(four.records, "loso", "emodb")) == 10


def test_csv_unknown_speakers_are_grouped_per_split_under_official(tmp_path, caplog):
    import logging

    manifest = tmp_path / "podcast.csv"
    rows = [("a.wav", "ang", "Unknown", "Train"), ("b.wav", "hap", "unknown", "Train"), ("c.wav", "neu", "Unknown", "Test1"),
            ("d.wav", "sad", "spk7", "Train"), ("e.wav", "sad", "spk8", "Test1"), ("f.wav", "ang", "Unknown", "Development")]  # fmt: skip
    manifest.write_text("path,label,speaker,split\n" + "".join(",".join(r) + "\n" for r in rows))
    with caplog.at_level(logging.WARNING, logger="emodarts_tf.data.corpora"):
        records = load_corpus(DataConfig(corpus="csv", root=str(manifest), protocol="official")).records
    speaker = {Path(r.path).name: r.speaker for r in records}
    assert speaker == {"a.wav": "Unknown-Train", "b.wav": "Unknown-Train", "c.wav": "Unknown-Test1", "d.wav": "spk7",
                       "e.wav": "spk8", "f.wav": "Unknown-Development"}  # fmt: skip
    assert any("4 row(s) of speaker 'Unknown' grouped per split" in m and "Unknown-Train: 2" in m for m in caplog.messages)
    # The official fold keeps the unknown speakers' training utterances: one group named Unknown in Train and
    # Test1 would sit on both sides, and its training rows would be dropped.
    fold = make_folds(records, "official", "csv")[0]
    assert sorted(Path(p).name for p in fold.train) == ["a.wav", "b.wav", "d.wav", "f.wav"]
    assert sorted(Path(p).name for p in fold.test) == ["c.wav", "e.wav"]
    # Other protocols keep the manifest's speakers (unknown speakers of two splits may be the same people).
    loso = load_corpus(DataConfig(corpus="csv", root=str(manifest), protocol="loso")).records
    assert sorted({r.speaker for r in loso}) == ["Unknown", "spk7", "spk8", "unknown"]
