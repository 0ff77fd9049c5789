"""Random genotypes: exactly the genotypes the DARTS derivation can produce for the config's space, drawn
uniformly (checked against enumerations and against ``derive_genotype`` itself), seeded, buildable; the
``random:N`` spec; the leak check accepts them silently."""
from __future__ import annotations

import itertools
import logging
from collections import Counter

import numpy as np
import pytest

from emodarts_tf.config import SearchSpaceConfig, load_config
from emodarts_tf.data.records import Fold
from emodarts_tf.evaluation.genotype_source import GenotypeLeakError, check_genotype_for_fold
from emodarts_tf.search_space.genotype import CELL_KINDS, Genotype, derive_genotype
from emodarts_tf.search_space.primitives import CNN_PRIMITIVES, SEQ_SCOPES, resolve_ops
from emodarts_tf.search_space.random_genotype import (
    parse_random_spec,
    sample_cell,
    sample_genotype,
    sample_genotypes,
)

SPACES = {
    "paper": SearchSpaceConfig(),
    "demo": load_config("demo").space,
    "lstm_att": SearchSpaceConfig(cnn_nodes=3, seq_nodes=5, seq_ops="lstm_att",
                                  cnn_ops=["none", "skip_connect", "max_pool_3x3", "sep_conv_3x3"]),  # fmt: skip
    "rnn": SearchSpaceConfig(cnn_nodes=1, seq_nodes=2, seq_ops="rnn"),
}


def _ops(space, kind):
    return resolve_ops(space.seq_ops if kind == "seq" else space.cnn_ops, "seq" if kind == "seq" else "cnn")


def _nodes(space, kind):
    return space.seq_nodes if kind == "seq" else space.cnn_nodes


def _skips(cell):
    return sum(op == "skip_connect" for node in cell for op, _ in node)


@pytest.mark.parametrize("name", sorted(SPACES))
def test_every_sample_is_a_derivable_genotype_of_its_space(name):
    space = SPACES[name]
    for genotype in sample_genotypes(space, 60, seed=11, max_skip=2):
        genotype.validate()
        assert Genotype.from_dict(genotype.to_dict()).to_dict() == genotype.to_dict()  # JSON round trip
        alphas = {}
        for kind in CELL_KINDS:
            ops, nodes, cell = _ops(space, kind), _nodes(space, kind), genotype.cell(kind)
            assert len(cell) == nodes and genotype.concat(kind) == list(range(2, 2 + nodes))
            rows = []
            for n, node in enumerate(cell):
                inputs = [idx for _, idx in node]
                assert len(node) == 2 and inputs == sorted(set(inputs)), node  # 2 distinct inputs, in order
                assert all(0 <= idx < n + 2 for idx in inputs)
                assert all(op in ops and op != "none" for op, _ in node)
                # Alphas under which the DARTS rule picks exactly this node: the chosen edges' ops strong.
                chosen = dict((idx, op) for op, idx in node)
                for j in range(n + 2):
                    row = np.zeros(len(ops))
                    if j in chosen:
                        row[ops.index(chosen[j])] = 10.0
                    rows.append(row)
            alphas[kind] = np.stack(rows)
        derived = derive_genotype(alphas, _ops(space, "normal"), _ops(space, "seq"), space.cnn_nodes,
                                  space.seq_nodes, max_skip=2)  # fmt: skip
        for kind in CELL_KINDS:
            assert [[list(e) for e in node] for node in derived.cell(kind)] == \
                [[list(e) for e in node] for node in genotype.cell(kind)]  # fmt: skip


def test_skip_cap_on_normal_and_seq_cells_only_as_the_derivation():
    # skip_connect is one of 2 CNN ops and of 2 SeqNN ops: uncapped, cells would often hold 3..8 skips.
    space = SearchSpaceConfig(cnn_nodes=4, seq_nodes=4, cnn_ops=["none", "skip_connect", "max_pool_3x3"],
                              seq_ops=["none", "skip_connect", "rnn_1"])  # fmt: skip
    for cap in (0, 1, 2):
        genotypes = sample_genotypes(space, 300, seed=cap, max_skip=cap)
        assert max(_skips(g.normal) for g in genotypes) <= cap
        assert max(_skips(g.seq) for g in genotypes) <= cap
        assert max(_skips(g.reduce) for g in genotypes) > cap  # reduction cells are uncapped, as derived
    uncapped = sample_genotypes(space, 300, seed=5, max_skip=None)
    assert max(_skips(g.normal) for g in uncapped) > 2 and max(_skips(g.seq) for g in uncapped) > 2


def test_capped_cells_are_uniform_over_the_allowed_cells():
    """Independent reference: enumerate every op assignment and every input choice of a 2-node cell over
    3 ops, keep those with at most 1 skip, and compare with the frequencies of 6000 draws."""
    ops = ("skip_connect", "max_pool_3x3", "sep_conv_3x3")
    allowed = []
    for edge_ops in itertools.product(ops, repeat=4):
        if sum(op == "skip_connect" for op in edge_ops) > 1:
            continue
        for p0 in itertools.combinations(range(2), 2):  # node 0 reads 2 of inputs 0, 1
            for p1 in itertools.combinations(range(3), 2):  # node 1 reads 2 of 0, 1, 2
                inputs = p0 + p1
                allowed.append(tuple((edge_ops[e], inputs[e]) for e in range(4)))
    assert len(allowed) == (2**4 + 4 * 2**3) * 3  # 48 op assignments x 3 input pairs of node 1
    rng = np.random.default_rng(0)
    draws = 6000
    counts = Counter()
    for _ in range(draws):
        cell = sample_cell(2, ("none",) + ops, rng, max_skip=1)
        counts[tuple(edge for node in cell for edge in node)] += 1
    assert set(counts) <= set(allowed)
    expected = draws / len(allowed)
    chi2 = sum((counts[c] - expected) ** 2 / expected for c in allowed)
    # 143 degrees of freedom: mean 143, sd ~17; 230 is beyond the 99.99th percentile.
    assert chi2 < 230, chi2
    skips = Counter(sum(op == "skip_connect" for node in cell for op, _ in node)
                    for cell in (sample_cell(2, ops, rng, max_skip=1) for _ in range(3000)))  # fmt: skip
    assert skips[0] / 3000 == pytest.approx(16 / 48, abs=0.03) and skips[1] / 3000 == pytest.approx(32 / 48, abs=0.03)


def test_every_op_and_every_input_is_drawn():
    space = SPACES["paper"]
    genotypes = sample_genotypes(space, 200, seed=3, max_skip=2)
    for kind in CELL_KINDS:
        ops = {op for g in genotypes for node in g.cell(kind) for op, _ in node}
        assert ops == set(_ops(space, kind)) - {"none"}, kind
        inputs = {(n, idx) for g in genotypes for n, node in enumerate(g.cell(kind)) for _, idx in node}
        assert inputs == {(n, j) for n in range(_nodes(space, kind)) for j in range(n + 2)}, kind
    scoped = sample_genotypes(SearchSpaceConfig(seq_ops="lstm"), 100, seed=1, max_skip=2)
    assert {op for g in scoped for node in g.seq for op, _ in node} == set(SEQ_SCOPES["lstm"]) - {"none"}


def test_deterministic_per_seed_and_different_across_seeds():
    space = SPACES["demo"]
    first = [g.to_dict() for g in sample_genotypes(space, 5, seed=7, max_skip=2)]
    assert first == [g.to_dict() for g in sample_genotypes(space, 5, seed=7, max_skip=2)]
    assert first[:3] == [g.to_dict() for g in sample_genotypes(space, 3, seed=7, max_skip=2)]  # N extends
    other = [g.to_dict() for g in sample_genotypes(space, 5, seed=8, max_skip=2)]
    assert all(a != b for a, b in zip(first, other))
    assert len({str({k: v for k, v in g.items() if k != "meta"}) for g in first}) == 5  # distinct within a seed
    a = sample_genotype(space, np.random.default_rng(4), max_skip=2)
    assert a.to_dict() == sample_genotype(space, np.random.default_rng(4), max_skip=2).to_dict()
    assert first[1]["meta"] == {
        "source": "random", "seed": 7, "index": 2,
        "space": {"cnn_nodes": 2, "seq_nodes": 2, "cnn_ops": list(CNN_PRIMITIVES),
                  "seq_ops": ["none", "skip_connect", "lstm_1", "lstm_2", "rnn_1", "lstm_att_1"], "max_skip": 2},
    }  # fmt: skip


def test_impossible_spaces_and_bad_arguments_are_named():
    with pytest.raises(ValueError, match="no candidate op besides 'none'"):
        sample_genotypes(SearchSpaceConfig(cnn_ops=["none"]), 1, seed=0)
    only_skip = SearchSpaceConfig(seq_nodes=2, seq_ops=["none", "skip_connect"])
    with pytest.raises(ValueError, match=r"seq: max_skip=2 allows no cell of 2 node\(s\)"):
        sample_genotypes(only_skip, 1, seed=0, max_skip=2)
    assert _skips(sample_genotypes(only_skip, 1, seed=0, max_skip=None)[0].seq) == 4
    with pytest.raises(ValueError, match="unknown op"):
        sample_genotypes(SearchSpaceConfig(seq_ops=["lstm_9"]), 1, seed=0)
    with pytest.raises(ValueError, match="n: expected an integer >= 1, received 0"):
        sample_genotypes(SPACES["demo"], 0, seed=0)
    with pytest.raises(ValueError, match="seed: expected an integer >= 0"):
        sample_genotypes(SPACES["demo"], 1, seed=-1)
    with pytest.raises(ValueError, match="max_skip"):
        sample_genotypes(SPACES["demo"], 1, seed=0, max_skip=-1)


@pytest.mark.parametrize("bad, shown", [("random:0", "received 0"), ("random:x", "received 'x'"),
                                        ("random:", "received ''"), ("random:-2", "received -2"),
                                        ("random:1.5", "received '1.5'")])  # fmt: skip
def test_random_spec_is_validated(bad, shown):
    with pytest.raises(ValueError, match=f"--genotype '{bad}'.*{shown}"):
        parse_random_spec(bad)


def test_random_spec_parses():
    assert parse_random_spec("random:3") == 3 and parse_random_spec(" random:12 ") == 12
    assert parse_random_spec("runs/search") is None and parse_random_spec("genotype.json") is None


def test_samples_build_and_run_forward():
    import keras

    from emodarts_tf.search_space.network import build_fixed_network

    space = SearchSpaceConfig(init_channels=2, cnn_cells=3, cnn_nodes=2, stem_multiplier=1, seq_cells=1,
                              seq_nodes=2, seq_hidden=4)  # fmt: skip
    x = np.random.default_rng(0).standard_normal((2, 12, 10, 1)).astype("float32")
    for genotype in sample_genotypes(space, 2, seed=21, max_skip=2):
        model = build_fixed_network(genotype, space, (12, 10, 1), 4)
        y = keras.ops.convert_to_numpy(model(x, training=False))
        assert y.shape == (2, 4) and np.isfinite(y).all()


def test_leak_check_accepts_random_genotypes_silently(caplog):
    fold = Fold(index=1, name="f1", train_speakers=["a", "b"], test_speakers=["c"])
    genotype = sample_genotypes(SPACES["demo"], 1, seed=0)[0]
    with caplog.at_level(logging.WARNING):
        assert check_genotype_for_fold(genotype, fold, "demo", "loso", "random1/genotype.json") is None
    assert caplog.text == ""
    hand_written = Genotype.from_dict({k: v for k, v in genotype.to_dict().items() if k != "meta"})
    with caplog.at_level(logging.WARNING):
        assert "no search meta" in check_genotype_for_fold(hand_written, fold, "demo", "loso", "typed.json")
    # "random" with search meta that shows a leak is still checked like any searched genotype.
    leaky = Genotype.from_dict({**genotype.to_dict(), "meta": {"source": "random", "fold": 2, "train_speakers": ["c"]}})
    with pytest.raises(GenotypeLeakError, match="refusing to train fold 1"):
        check_genotype_for_fold(leaky, fold, "demo", "loso", "leaky.json")


def test_genotypes_from_spec_draws_or_loads(tmp_path):
    from emodarts_tf.search_space.random_genotype import genotypes_from_spec, sample_genotypes

    space = load_config("cpu").space
    drawn = genotypes_from_spec("random:3", space, seed=4, max_skip=2)
    assert [g.to_dict() for g in drawn] == [g.to_dict() for g in sample_genotypes(space, 3, 4, 2)]
    drawn[1].save(tmp_path / "g.json")
    loaded = genotypes_from_spec(str(tmp_path / "g.json"), space, seed=0)
    assert len(loaded) == 1 and loaded[0].normal == drawn[1].normal and loaded[0].seq == drawn[1].seq
    with pytest.raises(ValueError, match="random:N needs an integer"):
        genotypes_from_spec("random:x", space, seed=0)
