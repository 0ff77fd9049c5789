"""Which genotype trains which fold, and the refusal of genotypes whose search saw the test speakers."""
from __future__ import annotations

import json
import logging

import pytest

from emodarts_tf.data.records import Fold
from emodarts_tf.evaluation.genotype_source import GenotypeLeakError, genotypes_for_folds
from eval_helpers import TINY_GENOTYPE

# emodb5-like folds over six speakers.
FOLDS = [
    Fold(index=1, name="f1", train_speakers=["10", "09", "11", "13"], test_speakers=["03", "08"]),
    Fold(index=2, name="f2", train_speakers=["03", "08", "11", "13"], test_speakers=["10", "09"]),
    Fold(index=3, name="f3", train_speakers=["03", "08", "10", "09"], test_speakers=["11", "13"]),
]


def _genotype(meta: dict | None = None, op: str = "sep_conv_3x3") -> dict:
    g = json.loads(json.dumps(TINY_GENOTYPE))
    g["normal"][0][1][0] = op
    g["meta"] = meta or {}
    return g


def _search_meta(fold: Fold, **extra) -> dict:
    train = [s for s in fold.train_speakers if s not in ("09",)]
    return {"corpus": "emodb", "protocol": "emodb5", "fold": fold.index, "train_speakers": train,
            "val_speakers": ["09"] if "09" in fold.train_speakers else [], "test_speakers": fold.test_speakers, **extra}


def _write(path, data):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))
    return path


def test_search_directory_gives_each_fold_its_own_best_genotype(tmp_path):
    for fold in FOLDS:
        _write(tmp_path / f"fold{fold.index}" / "genotype.json", _genotype(_search_meta(fold), op="skip_connect"))
        _write(tmp_path / f"fold{fold.index}" / "genotype_best.json", _genotype(_search_meta(fold), op="dil_conv_3x3"))
    _write(tmp_path / "fold2" / "search.json", {"seconds": 120.5})
    chosen = genotypes_for_folds(tmp_path, FOLDS, "emodb", "emodb5")
    assert sorted(chosen) == [1, 2, 3]
    for k, choice in chosen.items():
        assert choice.source.endswith(f"fold{k}/genotype_best.json")
        assert choice.genotype.meta["fold"] == k
        assert choice.genotype.normal[0][1][0] == "dil_conv_3x3"
    assert chosen[2].search_seconds == 120.5 and chosen[1].search_seconds is None
    final = genotypes_for_folds(tmp_path, FOLDS, "emodb", "emodb5", choice="final")
    assert final[1].genotype.normal[0][1][0] == "skip_connect"


def test_genotypes_json_of_a_fold_all_search(tmp_path):
    table = {str(f.index): _genotype(_search_meta(f)) for f in FOLDS[:2]}
    _write(tmp_path / "genotypes.json", table)
    chosen = genotypes_for_folds(tmp_path, FOLDS[:2], "emodb", "emodb5")
    assert chosen[2].source.endswith("genotypes.json[2]")
    with pytest.raises(ValueError, match=r"no genotype for fold 3 \(it has folds \[1, 2\]\)"):
        genotypes_for_folds(tmp_path, FOLDS, "emodb", "emodb5")


def test_genotype_of_another_fold_is_refused_with_the_reason(tmp_path):
    path = _write(tmp_path / "g.json", _genotype(_search_meta(FOLDS[1])))  # searched on fold 2
    chosen = genotypes_for_folds(path, [FOLDS[1]], "emodb", "emodb5")  # fold 2 itself: fine
    assert chosen[2].note is None
    with pytest.raises(GenotypeLeakError) as info:
        genotypes_for_folds(path, FOLDS, "emodb", "emodb5")
    message = str(info.value)
    # Fold 1's test speakers 03 and 08 were in fold 2's search data.
    assert "refusing to train fold 1" in message and "['03', '08']" in message
    assert "--allow-leak" in message


def test_fold_number_alone_shows_the_leak(tmp_path):
    meta = {"corpus": "emodb", "protocol": "emodb5", "fold": 3}  # no speaker lists
    path = _write(tmp_path / "g.json", _genotype(meta))
    with pytest.raises(GenotypeLeakError, match="searched on fold 3 of emodb/emodb5"):
        genotypes_for_folds(path, [FOLDS[0]], "emodb", "emodb5")


def test_allow_leak_accepts_with_a_warning(tmp_path, caplog):
    path = _write(tmp_path / "g.json", _genotype(_search_meta(FOLDS[1])))
    with caplog.at_level(logging.WARNING):
        chosen = genotypes_for_folds(path, FOLDS, "emodb", "emodb5", allow_leak=True)
    assert chosen[1].note.startswith("LEAK ALLOWED")
    assert "LEAK ALLOWED" in caplog.text


def test_hand_written_genotype_is_accepted_with_a_warning(tmp_path, caplog):
    path = _write(tmp_path / "paper.json", _genotype({"source": "emoDARTS paper, Fig. 5"}))
    with caplog.at_level(logging.WARNING):
        chosen = genotypes_for_folds(path, FOLDS, "emodb", "emodb5")
    assert sorted(chosen) == [1, 2, 3]
    assert "no search meta" in chosen[1].note and "no search meta" in caplog.text


def test_genotype_from_another_corpus_is_accepted(tmp_path):
    meta = {"corpus": "iemocap", "protocol": "emodarts", "fold": 2, "train_speakers": ["03", "Ses01_F"]}
    path = _write(tmp_path / "g.json", _genotype(meta))
    chosen = genotypes_for_folds(path, FOLDS, "emodb", "emodb5")
    assert all(c.note is None for c in chosen.values())


def test_missing_and_unusable_sources(tmp_path):
    with pytest.raises(ValueError, match="no such file or directory"):
        genotypes_for_folds(tmp_path / "nope.json", FOLDS, "emodb", "emodb5")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="neither a genotype file nor a search output directory"):
        genotypes_for_folds(tmp_path / "empty", FOLDS, "emodb", "emodb5")
    _write(tmp_path / "partial" / "fold1" / "genotype.json", _genotype(_search_meta(FOLDS[0])))
    with pytest.raises(ValueError, match=r"no genotype for fold 2 \(it has folds \[1\]\)"):
        genotypes_for_folds(tmp_path / "partial", FOLDS, "emodb", "emodb5")


def test_two_stream_specs_are_recognised_in_every_form(tmp_path):
    """train prepares the frame-level stream exactly when the genotypes it is given are two-stream: a file,
    a genotypes.json index or a search folder; a one-stream or unreadable spec is not."""
    from emodarts_tf.evaluation.genotype_source import spec_is_two_stream

    two = {**_genotype(_search_meta(FOLDS[0])), "format": "emodarts-tf/genotype/v2",
           "streams": {"method": "emotionnas", "fusion": "supplement",
                       "streams": {"spectrogram": ["normal", "reduce"], "frames": ["seq"]}}}
    one = _genotype(_search_meta(FOLDS[0]))
    assert spec_is_two_stream(_write(tmp_path / "two.json", two))
    assert not spec_is_two_stream(_write(tmp_path / "one.json", one))
    assert spec_is_two_stream(_write(tmp_path / "index" / "genotypes.json", {"1": two}).parent)
    assert not spec_is_two_stream(_write(tmp_path / "index1" / "genotypes.json", {"1": one}).parent)
    _write(tmp_path / "search" / "fold2" / "genotype_best.json", two)
    assert spec_is_two_stream(tmp_path / "search")
    assert not spec_is_two_stream(tmp_path / "missing") and not spec_is_two_stream(_write(tmp_path / "bad.json", []))
    (tmp_path / "broken.json").write_text("{not json")
    assert not spec_is_two_stream(tmp_path / "broken.json")
