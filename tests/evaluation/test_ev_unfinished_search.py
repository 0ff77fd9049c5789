"""Genotypes of a search that never finished (killed after an epoch) are refused, with the fold folder and
the epochs it ran, unless ``--allow-unfinished`` is given; then the fold's model_info.json and the run
summary record it."""
from __future__ import annotations

import json
import logging

import pytest

from emodarts_tf.data.records import Fold
from emodarts_tf.evaluation.genotype_source import UnfinishedSearchError, genotypes_for_folds
from eval_helpers import TINY_GENOTYPE, tiny_overrides

FOLD = Fold(index=1, name="loso-03", train_speakers=["08", "09", "10"], test_speakers=["03"])


def _meta(epoch: int, selected: str, epochs: int = 3) -> dict:
    return {"source": "emodarts-tf search", "corpus": "csv", "protocol": "loso", "fold": 1,
            "train_speakers": ["08", "09"], "val_speakers": ["10"], "test_speakers": ["03"],
            "epochs": epochs, "epoch": epoch, "selected": selected, "val_ua": 0.3}  # fmt: skip


def _write(path, data):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))
    return path


def _killed_search(out, epochs_run: int = 1, epochs: int = 3):
    """What a search killed after ``epochs_run`` of ``epochs`` epochs leaves: genotypes, checkpoints, no search.json."""
    fold_dir = out / "fold1"
    for e in range(1, epochs_run + 1):
        _write(fold_dir / "genotypes" / f"epoch_{e:03d}.json", dict(TINY_GENOTYPE, meta=_meta(e, "final", epochs)))
    _write(fold_dir / "genotype.json", dict(TINY_GENOTYPE, meta=_meta(epochs_run, "final", epochs)))
    _write(fold_dir / "genotype_best.json", dict(TINY_GENOTYPE, meta=_meta(1, "best", epochs)))
    _write(fold_dir / "alpha_history.json", [{"epoch": e} for e in range(1, epochs_run + 1)])
    (fold_dir / "checkpoints").mkdir()
    return fold_dir


@pytest.mark.parametrize("choice", ["best", "final"])
def test_killed_search_is_refused_with_the_fold_dir_and_epochs(tmp_path, choice):
    fold_dir = _killed_search(tmp_path / "search")
    with pytest.raises(UnfinishedSearchError) as info:
        genotypes_for_folds(tmp_path / "search", [FOLD], "csv", "loso", choice=choice)
    message = str(info.value)
    assert "refusing to train fold 1" in message and str(fold_dir) in message
    assert "ran 1 of 3 epochs" in message and "no search.json" in message and "--allow-unfinished" in message


def test_search_json_with_fewer_epochs_done_is_refused_and_a_finished_one_passes(tmp_path):
    fold_dir = _killed_search(tmp_path / "search", epochs_run=2)
    _write(fold_dir / "search.json", {"epochs": 3, "epochs_done": 2, "seconds": 5.0})
    with pytest.raises(UnfinishedSearchError, match=r"ran 2 of 3 epochs \(search.json records fewer"):
        genotypes_for_folds(tmp_path / "search", [FOLD], "csv", "loso")
    # Finished: the best genotype of epoch 1 of 3 is a legitimate choice.
    _write(fold_dir / "search.json", {"epochs": 3, "epochs_done": 3, "seconds": 5.0})
    chosen = genotypes_for_folds(tmp_path / "search", [FOLD], "csv", "loso")
    assert chosen[1].unfinished is None and chosen[1].note is None and chosen[1].genotype.meta["epoch"] == 1


def test_a_copied_genotype_file_is_judged_by_its_meta(tmp_path):
    final = _write(tmp_path / "copies" / "final.json", dict(TINY_GENOTYPE, meta=_meta(1, "final")))
    with pytest.raises(UnfinishedSearchError, match=r"fold 1: .*final.json .*ran 1 of 3 epochs"):
        genotypes_for_folds(final, [FOLD], "csv", "loso")
    # A best genotype's epoch is where validation UA peaked, not how far the search ran.
    best = _write(tmp_path / "copies" / "best.json", dict(TINY_GENOTYPE, meta=_meta(1, "best")))
    assert genotypes_for_folds(best, [FOLD], "csv", "loso")[1].unfinished is None
    done = _write(tmp_path / "copies" / "done.json", dict(TINY_GENOTYPE, meta=_meta(3, "final")))
    assert genotypes_for_folds(done, [FOLD], "csv", "loso")[1].unfinished is None


def test_allow_unfinished_warns_and_records(tmp_path, caplog):
    fold_dir = _killed_search(tmp_path / "search")
    with caplog.at_level(logging.WARNING):
        chosen = genotypes_for_folds(tmp_path / "search", [FOLD], "csv", "loso", allow_unfinished=True)
    assert chosen[1].unfinished == {"unfinished_search": True, "search_epochs_done": 1, "search_epochs": 3,
                                    "search_dir": str(fold_dir)}  # fmt: skip
    assert "UNFINISHED SEARCH ALLOWED" in caplog.text and "ran 1 of 3 epochs" in chosen[1].note


def _args(manifest, cache, genotype, out, *extra):
    sets = [a for o in tiny_overrides(manifest, cache) if not o.startswith(("data.root", "train.epochs"))
            for a in ("--set", o)]  # fmt: skip
    return ["--data", "csv", "--root", str(manifest), "--genotype", str(genotype), "--out", str(out),
            "--folds", "1", "--epochs", "1", *sets, *extra]  # fmt: skip


def test_train_cli_refuses_then_records_an_allowed_unfinished_search(tmp_path, mini_manifest, mini_cache,
                                                                     mini_prepared, caplog):
    from emodarts_tf.commands.train import main

    search = tmp_path / "search"
    fold_dir = _killed_search(search)
    out = tmp_path / "run"
    with caplog.at_level(logging.ERROR):
        assert main(_args(mini_manifest, mini_cache, search, out)) == 2
    assert "refusing to train fold 1" in caplog.text and f"{fold_dir} ran 1 of 3 epochs" in caplog.text
    assert not (out / "fold1" / "metrics.json").exists()

    assert main(_args(mini_manifest, mini_cache, search, out, "--allow-unfinished")) == 0
    info = json.loads((out / "fold1" / "model_info.json").read_text())
    assert info["unfinished_search"] is True and (info["search_epochs_done"], info["search_epochs"]) == (1, 3)
    summary = json.loads((out / "summary.json").read_text())
    entry = summary["extra"]["per_fold"]["1"]
    assert entry["unfinished_search"] is True and (entry["search_epochs_done"], entry["search_epochs"]) == (1, 3)
    assert summary["extra"]["unfinished_search_folds"] == [1] and "ran 1 of 3 epochs" in entry["note"]
