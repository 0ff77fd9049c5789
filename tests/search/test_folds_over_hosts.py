"""Folds over machines, end to end: two ``cli/search.py --fold k`` processes (as two hosts would run them)
search folds 1 and 2 of the demo corpus into one shared ``--out`` at the same time; ``genotypes.json`` then
holds both folds, and a consumer of the index alone (``cli/train.py --genotype``) finds both.
The concurrent index writes themselves are hammered in ``tests/core/test_index_lock.py``."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest
from search_helpers import MICRO

from emodarts_tf.search_space.genotype import Genotype


@pytest.mark.slow
def test_two_processes_search_two_folds_into_one_out(tmp_path, demo_cache, demo_prepared, project_root):
    from emodarts_tf.evaluation.genotype_source import genotypes_for_folds

    out = tmp_path / "shared-search"
    # The micro space cut to one CNN cell without convolutions: two TensorFlow processes share the CPUs.
    fast = [*MICRO, "space.cnn_cells=1", "space.cnn_ops=[none,skip_connect,max_pool_3x3]"]
    sets = [a for item in ["search.warmup_epochs=0", "search.steps_per_epoch=1", *fast] for a in ("--set", item)]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "CUDA_VISIBLE_DEVICES": ""}
    procs = [
        subprocess.Popen([sys.executable, str(project_root / "cli" / "search.py"), "--data", "demo", "--cache",
                          str(demo_cache), "--out", str(out), "--fold", str(k), "--epochs", "1", *sets],
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=project_root)
        for k in (1, 2)
    ]  # fmt: skip
    logs = [p.communicate(timeout=300)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], "\n".join(logs)[-3000:]

    index = json.loads((out / "genotypes.json").read_text(encoding="utf-8"))
    assert sorted(index) == ["1", "2"]
    for k in (1, 2):
        assert index[str(k)] == Genotype.load(out / f"fold{k}" / "genotype_best.json").to_dict()
        assert index[str(k)]["meta"]["fold"] == k
    assert not (out / ".index.lock").exists()

    # A consumer that has only the index (the fold folders left on the hosts) sees both folds.
    only_index = tmp_path / "index-only"
    only_index.mkdir()
    shutil.copy(out / "genotypes.json", only_index / "genotypes.json")
    folds = [demo_prepared.fold(k) for k in (1, 2)]
    chosen = genotypes_for_folds(only_index, folds, "demo", demo_prepared.protocol)
    assert sorted(chosen) == [1, 2]
    assert chosen[2].source.endswith("genotypes.json[2]")
    assert chosen[1].genotype.to_dict() == index["1"]
