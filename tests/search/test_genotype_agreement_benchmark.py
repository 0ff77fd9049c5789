"""benchmarks/genotype_agreement.py on hand-made search folders: the searched agreement equals the hand
counts, and the random chance level equals the expected agreement of uniform draws, computed by hand."""
from __future__ import annotations

import json

import pytest

from emodarts_tf.config import load_config, save_config
from emodarts_tf.search.diagnostics import genotype_agreement
from emodarts_tf.search_space.genotype import Genotype

SPACE = ["space.cnn_nodes=2", "space.seq_nodes=1", "space.cnn_ops=[none,skip_connect,max_pool_3x3,sep_conv_3x3]",
         "space.seq_ops=[none,skip_connect,lstm_1,rnn_1]", "search.max_skip=2"]  # fmt: skip


@pytest.fixture(scope="module")
def bench(load_benchmark):
    return load_benchmark("genotype_agreement")


def _genotype(normal, reduce, seq):
    return Genotype(normal, [2, 3], reduce, [2, 3], seq, [2])


# Per seed and fold, hand-made genotypes of the space above (2 CNN nodes, 1 SeqNN node).
SEP, SKIP, MAX = "sep_conv_3x3", "skip_connect", "max_pool_3x3"
GENOTYPES = {
    0: {1: _genotype([[(SEP, 0), (SKIP, 1)], [(SEP, 0), (MAX, 2)]], [[(MAX, 0), (MAX, 1)], [(MAX, 1), (SKIP, 2)]],
                     [[("lstm_1", 0), ("rnn_1", 1)]]),
        2: _genotype([[(SEP, 0), (SEP, 1)], [(SEP, 1), (SEP, 2)]], [[(MAX, 0), (MAX, 1)], [(MAX, 0), (MAX, 1)]],
                     [[("lstm_1", 0), ("lstm_1", 1)]])},
    1: {1: _genotype([[(SEP, 0), (MAX, 1)], [(MAX, 1), (MAX, 2)]], [[(MAX, 0), (MAX, 1)], [(MAX, 1), (SKIP, 2)]],
                     [[("rnn_1", 0), ("lstm_1", 1)]]),
        2: _genotype([[(SEP, 0), (SEP, 1)], [(SEP, 0), (SEP, 1)]], [[(SKIP, 0), (MAX, 1)], [(MAX, 0), (MAX, 1)]],
                     [[("lstm_1", 0), ("rnn_1", 1)]])},
    2: {1: _genotype([[(SKIP, 0), (SKIP, 1)], [(SEP, 0), (MAX, 2)]], [[(MAX, 0), (SKIP, 1)], [(MAX, 0), (SKIP, 1)]],
                     [[("lstm_1", 0), ("rnn_1", 1)]]),
        2: _genotype([[(SEP, 0), (SEP, 1)], [(SEP, 1), (SEP, 2)]], [[(MAX, 0), (MAX, 1)], [(MAX, 0), (MAX, 1)]],
                     [[("lstm_1", 0), ("lstm_1", 1)]])},
}


def _write_searches(root, overrides=()):
    dirs = []
    for seed, folds in GENOTYPES.items():
        out = root / f"seed{seed}"
        config = load_config("demo", overrides=[*SPACE, *overrides, f"seed={seed}"])
        for k, genotype in folds.items():
            save_config(config, out / f"fold{k}" / "config.yaml")
            genotype.save(out / f"fold{k}" / "genotype_best.json")
            entropy = {kind: {"mean": 1.0, "normalized": 0.99 + 0.001 * seed} for kind in ("normal", "reduce", "seq")}
            (out / f"fold{k}" / "alpha_history.json").write_text(json.dumps([{"epoch": 1, "entropy": entropy}]))
        dirs.append(out)
    return dirs


def test_benchmark_against_hand_counts_and_chance(tmp_path, bench, capsys):
    dirs = _write_searches(tmp_path)
    assert bench.main([*map(str, dirs), "--groups", "400", "--json", str(tmp_path / "out.json")]) == 0
    text = capsys.readouterr().out
    out = json.loads((tmp_path / "out.json").read_text())
    assert out["folds"] == [1, 2]

    # Searched: per fold the mean over the 3 seed pairs, then the mean over the 2 folds.
    # Fold 2, seq cell, by hand: inputs always (0, 1): edge 1; ops (lstm_1, lstm_1) for seeds 0 and 2,
    # (lstm_1, rnn_1) for seed 1: pairs 0-1 1/2, 0-2 1, 1-2 1/2 -> 2/3.
    assert out["per_fold"]["2"]["seq"] == pytest.approx({"edge": 1.0, "edge_op": 2 / 3})
    # Fold 1, normal, edges: seed 0 {00,01,10,12}, seed 1 {00,01,11,12}, seed 2 {00,01,10,12}:
    # pairs 0-1 3/4, 0-2 1, 1-2 3/4 -> 5/6; with ops: 0-1 (0,0,sep) (1,2,max) 2/4, 0-2 (0,1,skip) (1,0,sep)
    # (1,2,max) 3/4, 1-2 (1,2,max) 1/4 -> 1/2.
    assert out["per_fold"]["1"]["normal"] == pytest.approx({"edge": 5 / 6, "edge_op": 1 / 2})
    for row in ("normal", "reduce", "seq"):
        for key in ("edge", "edge_op"):
            expected = [genotype_agreement([GENOTYPES[s][k] for s in GENOTYPES])[row][key] for k in (1, 2)]
            assert out["observed"][row][key] == pytest.approx(sum(expected) / 2)

    # Chance, by hand. A 1-node cell always reads inputs 0 and 1: edge agreement 1. A 2-node cell: node 0
    # reads (0, 1); node 1 two of its 3 inputs, and two random 2-subsets of 3 share 4/3 inputs on average:
    # (2 + 4/3) / 4 = 5/6. Ops: uniform over the 3 non-none ops (the cap of 2 skips in 2 seq edges binds
    # nothing): 1/3 per shared edge -> seq 1/3. Reduction cells (uncapped): per edge P(same input) x 1/3:
    # (2 x 1/3 + 2 x 2/3 x 1/3) / 4 = 5/18.
    random = out["random"]
    assert random["seq"]["edge"]["mean"] == 1.0 and out["p"]["seq"]["edge"] == 1.0
    assert random["normal"]["edge"]["mean"] == pytest.approx(5 / 6, abs=0.015)
    assert random["reduce"]["edge"]["mean"] == pytest.approx(5 / 6, abs=0.015)
    assert random["seq"]["edge_op"]["mean"] == pytest.approx(1 / 3, abs=0.03)
    assert random["reduce"]["edge_op"]["mean"] == pytest.approx(5 / 18, abs=0.02)
    assert 0 < out["p"]["normal"]["edge_op"] <= 1

    assert "| normal | 0." in text and "| mean |" in text and "SYNTHETIC" in text and "seeds 0, 1, 2" in text
    assert "this table:" in text and "| 1 | 0.833 / 0.500 |" in text
    assert "0.9910 / 0.9910 / 0.9910" in text  # the mean final entropy over the seeds


def test_benchmark_refuses_mixed_spaces_and_single_searches(tmp_path, bench, capsys):
    dirs = _write_searches(tmp_path / "a")
    other = _write_searches(tmp_path / "b", overrides=["search.max_skip=1"])
    assert bench.main([str(dirs[0]), str(other[1])]) == 2
    assert "another search space or search.max_skip" in capsys.readouterr().err
    assert bench.main([str(dirs[0])]) == 2
    assert "at least 2 searches" in capsys.readouterr().err
    assert bench.main([str(dirs[0]), str(tmp_path / "missing")]) == 2
