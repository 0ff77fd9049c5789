"""Every fold of every protocol is speaker-independent; validation speakers come from the training part."""
from __future__ import annotations

import pytest

from emodarts_tf.config import DataConfig
from emodarts_tf.data.corpora import load_corpus
from emodarts_tf.data.protocols import make_folds, validation_speakers
from emodarts_tf.data.records import Fold, Record


def _corpora(iemocap_root, msp_improv_root, msp_podcast_root, csv_corpus, emodb_root):
    return {
        "iemocap": iemocap_root,
        "msp-improv": msp_improv_root,
        "msp-podcast": msp_podcast_root(),
        "emodb": emodb_root,
        "csv": csv_corpus(n_speakers=4, per_class=1),
    }


PROTOCOLS = {
    "iemocap": ["emodarts", "loso", "loso-session"],
    "msp-improv": ["loso-session", "loso"],
    "msp-podcast": ["official", "loso"],
    "emodb": ["emodb5", "loso"],
    "csv": ["loso", "loso-session"],
}


def _assert_independent(fold: Fold, records: list, val: list) -> None:
    speaker = {r.path: r.speaker for r in records}
    train = {speaker[p] for p in fold.train}
    test = {speaker[p] for p in fold.test}
    assert not train & test, f"fold {fold.name}: speakers {train & test} in train and test"
    assert set(fold.train_speakers) == train and set(fold.test_speakers) == test
    assert not set(fold.train) & set(fold.test)
    assert val and set(val) <= train, f"fold {fold.name}: validation speakers {val} not from the training part"
    assert not set(val) & test
    assert train - set(val), f"fold {fold.name}: no training speaker left after validation"


def test_no_fold_shares_a_speaker(iemocap_root, msp_improv_root, msp_podcast_root, csv_corpus, emodb_root):
    roots = _corpora(iemocap_root, msp_improv_root, msp_podcast_root, csv_corpus, emodb_root)
    checked = 0
    for corpus, protocols in PROTOCOLS.items():
        for protocol in protocols:
            data = DataConfig(corpus=corpus, root=str(roots[corpus]), protocol=protocol)
            loaded = load_corpus(data)
            folds = make_folds(loaded.records, loaded.protocol, corpus)
            assert folds
            for fold in folds:
                val = validation_speakers(fold, loaded.records, 0.2, seed=3)
                _assert_independent(fold, loaded.records, val)
                checked += 1
    assert checked == 5 + 10 + 5 + 6 + 12 + 1 + 9 + 5 + 10 + 4 + 2


def test_official_validation_is_the_development_split(msp_podcast_root):
    loaded = load_corpus(DataConfig(corpus="msp-podcast", root=str(msp_podcast_root())))
    (fold,) = make_folds(loaded.records, "official", "msp-podcast")
    assert validation_speakers(fold, loaded.records, 0.2, seed=0) == ["200", "201"]


def test_official_drops_training_utterances_of_test_speakers():
    records = [
        Record("a.wav", "ang", "s1", split="Train"),
        Record("b.wav", "hap", "s2", split="Train"),
        Record("c.wav", "neu", "s2", split="Test1"),
        Record("d.wav", "sad", "s3", split="Test1"),
    ]
    (fold,) = make_folds(records, "official", "msp-podcast")
    assert fold.train == ["a.wav"] and fold.test == ["c.wav", "d.wav"]


def test_validation_speakers_gender_balanced_and_seeded(emodb_root):
    loaded = load_corpus(DataConfig(corpus="emodb", root=str(emodb_root)))
    gender = {r.speaker: r.gender for r in loaded.records}
    folds = make_folds(loaded.records, "emodb5", "emodb")
    for fold in folds:
        val = validation_speakers(fold, loaded.records, 0.2, seed=0)
        assert len(val) == 2 and sorted(gender[s] for s in val) == ["F", "M"]  # 8 training speakers -> 2
        assert val == validation_speakers(fold, loaded.records, 0.2, seed=0)
    draws = {tuple(validation_speakers(folds[0], loaded.records, 0.2, seed=s)) for s in range(8)}
    assert len(draws) > 1  # the seed matters
    assert len(validation_speakers(folds[0], loaded.records, 0.0, seed=0)) == 1  # at least one speaker
    assert len(validation_speakers(folds[0], loaded.records, 0.99, seed=0)) == 7  # at least one left


def test_a_protocol_too_large_to_list_is_refused_before_building_it(monkeypatch):
    import emodarts_tf.data.protocols as protocols

    records = [Record(f"s{s}/{u}.wav", "ang" if u % 2 else "sad", f"s{s:03d}", session=str(s // 10))
               for s in range(120) for u in range(10)]  # fmt: skip
    monkeypatch.setattr(protocols, "MAX_FOLD_PATHS", 100 * len(records))
    with pytest.raises(ValueError, match=r"protocol loso on corpus 'csv': 120 folds of 1,200 utterances each would "
                                         r"list 144,000 paths \(more than 120,000\).*loso-session"):
        make_folds(records, "loso", "csv")
    with pytest.raises(ValueError, match=r"120 folds.*use protocol official"):
        protocols.check_protocol_size(records, "loso", "msp-podcast")  # before extraction, in prepare()
    folds = make_folds(records, "loso-session", "csv")  # 12 sessions of 10 speakers
    assert len(folds) == 12 and all(len(f.train) + len(f.test) == len(records) for f in folds)
    monkeypatch.setattr(protocols, "MAX_FOLD_PATHS", 120 * len(records))  # the bound itself is allowed
    assert len(make_folds(records, "loso", "csv")) == 120


def test_protocol_errors():
    records = [Record("a.wav", "ang", "s1"), Record("b.wav", "hap", "s2")]
    with pytest.raises(ValueError, match="unknown protocol 'kfold'"):
        make_folds(records, "kfold", "csv")
    with pytest.raises(ValueError, match=r"2 record\(s\) without a session \(e\.g\. a\.wav\)"):
        make_folds(records, "loso-session", "csv")
    with pytest.raises(ValueError, match="split Train and Test1"):
        make_folds(records, "official", "csv")
    one = Fold(1, "x", ["s1"], ["s2"], ["a.wav"], ["b.wav"])
    with pytest.raises(ValueError, match="1 training speaker"):
        validation_speakers(one, records, 0.2, 0)


def test_official_reports_records_of_other_splits(caplog):
    """Records whose split is none of the accepted spellings are in no part of the fold; they are counted by
    value in a warning, not dropped in silence."""
    import logging

    records = [
        Record("a.wav", "ang", "s1", split="Train"),
        Record("b.wav", "hap", "s2", split="dev"),
        Record("c.wav", "neu", "s3", split="Test2"),
        Record("d.wav", "neu", "s4", split=""),
        Record("e.wav", "sad", "s5", split="TEST"),
        Record("f.wav", "sad", "s6", split="Test2"),
        Record("g.wav", "sad", "s7", split="eval"),
    ]
    with caplog.at_level(logging.INFO):
        (fold,) = make_folds(records, "official", "csv")
    assert fold.train == ["a.wav", "b.wav"] and fold.test == ["e.wav"]
    left = {r.levelno: r.getMessage() for r in caplog.records if "left out" in r.getMessage()}
    # MSP-Podcast's Test2 (and Test3) are meant to be out: an info line; anything else is a warning.
    assert "2 record(s) left out, MSP-Podcast's other test sets: 'Test2': 2" in left[logging.INFO]
    assert "2 record(s) left out, a split in no part of the fold: '': 1, 'eval': 1" in left[logging.WARNING]
    assert "'test1'" in left[logging.WARNING]


def test_loso_session_warns_about_speakers_of_several_sessions(caplog):
    import logging

    records = [
        Record("a.wav", "ang", "s1", session="1"),
        Record("b.wav", "hap", "s1", session="2"),
        Record("c.wav", "neu", "s2", session="2"),
        Record("d.wav", "sad", "s3", session="1"),
    ]
    with caplog.at_level(logging.WARNING):
        folds = make_folds(records, "loso-session", "csv")
    assert [f.test for f in folds] == [["a.wav", "b.wav", "d.wav"], ["a.wav", "b.wav", "c.wav"]]
    (message,) = [m for m in caplog.messages if "several sessions" in m]
    assert "1 speaker(s)" in message and "(s1)" in message


def _draw_without_class_rule(fold, records, val_fraction, seed):
    """The gender round-robin draw of validation speakers, classes not looked at: an independent reference."""
    import random
    from collections import defaultdict

    train = set(fold.train)
    gender_of = {}
    for r in records:
        if r.path in train:
            gender_of.setdefault(r.speaker, r.gender)
    speakers = sorted(gender_of)
    n_val = min(len(speakers) - 1, max(1, int(round(val_fraction * len(speakers)))))
    rng = random.Random(f"{seed}-{fold.index}-{fold.name}")
    by_gender = defaultdict(list)
    for s in speakers:
        by_gender[gender_of[s] or "?"].append(s)
    for group in by_gender.values():
        rng.shuffle(group)
    order = sorted(by_gender, key=lambda g: (-len(by_gender[g]), rng.random()))
    chosen = []
    while len(chosen) < n_val:
        for g in order:
            if by_gender[g] and len(chosen) < n_val:
                chosen.append(by_gender[g].pop())
    return sorted(chosen)


def _corpus(speakers_of_class: dict, n_speakers: int) -> list:
    """Two utterances of every common class per speaker s0.. and the given speakers of the other classes."""
    records = []
    for i in range(n_speakers):
        s = f"s{i}"
        for label in ("ang", "neu"):
            records += [Record(f"{s}-{label}-{k}.wav", label, s, gender="MF"[i % 2]) for k in range(2)]
        for label, who in speakers_of_class.items():
            if s in who:
                records.append(Record(f"{s}-{label}.wav", label, s, gender="MF"[i % 2]))
    return records


def test_validation_never_takes_the_last_training_speakers_of_a_class(caplog):
    """A class spoken by two training speakers keeps one of them in training for every seed, and where no class
    is at stake the draw is the plain gender round-robin."""
    import logging

    records = _corpus({"fea": {"s1", "s2"}}, n_speakers=10)
    folds = make_folds(records, "loso", "csv")
    passed_over = 0
    for fold in folds:
        for seed in range(12):
            caplog.clear()
            with caplog.at_level(logging.WARNING):
                val = validation_speakers(fold, records, 0.2, seed)
            train_classes = {r.label for r in records if r.path in set(fold.train) and r.speaker not in val}
            assert train_classes == {r.label for r in records if r.path in set(fold.train)}
            reference = _draw_without_class_rule(fold, records, 0.2, seed)
            fea_train = {"s1", "s2"} - set(fold.test_speakers)
            if fea_train <= set(reference):  # the plain draw would take fea's last training speakers
                passed_over += 1
                assert len(val) == len(reference) and "last training speaker of a class" in caplog.text
            else:
                assert val == reference and not caplog.text
    assert passed_over > 0  # the rule was exercised


def test_validation_speakers_of_emodb_are_the_plain_draw(emodb_root):
    """No EmoDB class is at stake in any fold, so its validation speakers are the gender round-robin's."""
    loaded = load_corpus(DataConfig(corpus="emodb", root=str(emodb_root)))
    for fold in make_folds(loaded.records, "emodb5", "emodb"):
        for seed in range(4):
            assert validation_speakers(fold, loaded.records, 0.2, seed) == _draw_without_class_rule(
                fold, loaded.records, 0.2, seed)


def test_validation_refuses_when_every_speaker_is_the_last_of_a_class():
    records = [Record("a.wav", "ang", "s1"), Record("b.wav", "hap", "s2"), Record("c.wav", "ang", "s3")]
    fold = Fold(1, "x", ["s1", "s2"], ["s3"], ["a.wav", "b.wav"], ["c.wav"])
    last_of_a_class = r"every training speaker is the last one of some class \(s\d: \['(ang|hap)'\]"
    with pytest.raises(ValueError, match=last_of_a_class):
        validation_speakers(fold, records, 0.5, 0)


def test_official_validation_that_splits_utterances_is_reported(caplog):
    """A split column drawn per utterance puts speakers in training and validation splits: validation takes all of
    such a speaker's utterances (logged); when it takes every training speaker, the error names the split column."""
    import logging

    records = [
        Record("a1.wav", "ang", "s1", split="Train"), Record("a2.wav", "hap", "s1", split="dev"),
        Record("b1.wav", "ang", "s2", split="Train"), Record("b2.wav", "hap", "s2", split="Train"),
        Record("c1.wav", "hap", "s3", split="Test1"),
    ]  # fmt: skip
    (fold,) = make_folds(records, "official", "csv")
    with caplog.at_level(logging.WARNING):
        assert validation_speakers(fold, records, 0.2, 0) == ["s1"]
    assert "1 speaker(s) have records in both a training and a validation split (s1)" in caplog.text
    assert "all 1 of their training-split utterances" in caplog.text
    everyone = records[:2] + [Record("b1.wav", "ang", "s2", split="val"), records[3], records[4]]
    (fold,) = make_folds(everyone, "official", "csv")
    with pytest.raises(ValueError, match="must split speakers, not utterances"):
        validation_speakers(fold, everyone, 0.2, 0)
