"""Worker functions of tests/core/test_index_lock.py, importable by spawned processes (no TensorFlow).

Each worker plays one host finishing one fold into a shared run folder: it writes the fold's per-fold files
(the last one atomically, as the search and the retraining do) and rebuilds the run's index, in rounds
started together by a barrier so that the rebuilds collide.
"""
from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

# A valid genotype of the demo space (one node per cell).
GENOTYPE = {
    "normal": [[["skip_connect", 0], ["max_pool_3x3", 1]]],
    "reduce": [[["max_pool_3x3", 0], ["skip_connect", 1]]],
    "seq": [[["rnn_1", 0], ["skip_connect", 1]]],
}


def write_finished_search(fold_dir: Path, fold: int, epochs: int = 2, done: int | None = None) -> dict:
    """The files a search of ``fold`` leaves in ``fold_dir``; ``done < epochs`` leaves an unfinished one."""
    from emodarts_tf.utils.io import write_json

    done = epochs if done is None else done
    genotype = {**GENOTYPE, "meta": {"fold": fold, "epochs": epochs, "epoch": done, "pid": os.getpid()}}
    write_json(fold_dir / "genotype.json", genotype)
    write_json(fold_dir / "genotype_best.json", genotype)
    write_json(fold_dir / "search.json", {"fold": fold, "epochs": epochs, "epochs_done": done,
                                          "genotype_file": "genotype_best.json", "seconds": 1.5})
    return genotype


def search_worker(out: str, fold: int, rounds: int, barrier) -> None:
    """Round ``r``: fold ``fold`` of ``out/r<r>`` finishes and rebuilds ``genotypes.json``."""
    from emodarts_tf.search.genotype_index import rebuild_genotype_index

    for r in range(rounds):
        run = Path(out) / f"r{r}"
        barrier.wait()
        write_finished_search(run / f"fold{fold}", fold)
        rebuild_genotype_index(run)


class StandinFold:
    def __init__(self, index: int):
        self.index = index


class StandinPrepared:
    """What ``commands.train._summarise`` reads of a prepared corpus."""

    def __init__(self, n_folds: int):
        self.folds = [StandinFold(k) for k in range(1, n_folds + 1)]
        self.classes = ["ang", "hap", "neu", "sad"]
        self.corpus, self.protocol, self.synthetic = "demo", "loso", True


def write_finished_fold(fold_dir: Path, fold: int) -> None:
    """A retrained fold: model_info.json, then (last, marking it finished) metrics.json."""
    from emodarts_tf.utils.io import write_json

    write_json(fold_dir / "model_info.json", {"genotype_source": f"search/fold{fold}/genotype_best.json",
                                              "complexity": {"params": 1000 + fold, "flops": 5000}})
    write_json(fold_dir / "metrics.json", {"ua": fold / 10, "wa": fold / 10, "f1": fold / 10, "n": 10,
                                           "seconds": 2.0, "best_epoch": 1, "epochs_run": 1})


def train_worker(out: str, fold: int, n_folds: int, rounds: int, barrier) -> None:
    """Round ``r``: fold ``fold`` of ``out/r<r>`` finishes and ``cli/train.py``'s summary is rebuilt."""
    from emodarts_tf.commands.train import _summarise
    from emodarts_tf.config import load_config

    config = load_config("demo")
    prepared = StandinPrepared(n_folds)
    for r in range(rounds):
        run = Path(out) / f"r{r}"
        barrier.wait()
        write_finished_fold(run / f"fold{fold}", fold)
        _summarise(run, prepared, {}, config)


def hold_lock_then_die(directory: str) -> None:
    """Take the index lock of ``directory``, say so on stdout, and die by SIGKILL while holding it."""
    from emodarts_tf.utils.index_lock import index_lock

    with index_lock(directory):
        print("locked", flush=True)
        time.sleep(0.2)
        os.kill(os.getpid(), signal.SIGKILL)


if __name__ == "__main__":
    hold_lock_then_die(sys.argv[1])
