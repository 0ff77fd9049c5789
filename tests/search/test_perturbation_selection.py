"""Perturbation-based selection (DARTS-PT): the removal scores against an independent computation of the
supernet's loss, the known answer of a task only one op solves (where the alpha rule picks another), the skip
cap, the model left as it was, and search.select: perturbation end to end through the runner and cli/train's
genotype lookup."""
from __future__ import annotations

import json

import keras
import numpy as np
import pytest
from search_helpers import SOLVER, TinyBackbone, micro_config, ring_data, search_dataset

from emodarts_tf.search.model import SearchModel
from emodarts_tf.search.perturbation_selection import (
    cap_skips,
    edge_rows,
    removal_weights,
    select_by_perturbation,
)
from emodarts_tf.search_space.genotype import Genotype


def _model(backbone=None, shape=(4, 4, 1), seed=0):
    model = SearchModel(backbone or TinyBackbone(), input_shape=shape, seed=seed)
    model.compile(keras.optimizers.SGD(0.05, momentum=0.9), keras.optimizers.Adam(0.03, 0.5, 0.999))
    return model


def _softmax(a):
    e = np.exp(a - a.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def _loss(backbone, x, y, weights):
    """Mean cross-entropy of the backbone for the given mixing weights, computed here with Keras directly."""
    w = {k: keras.ops.convert_to_tensor(np.asarray(v, dtype="float32")) for k, v in weights.items()}
    logits = keras.ops.convert_to_numpy(backbone(keras.ops.convert_to_tensor(x), w, training=False)).astype(np.float64)
    logp = logits - np.log(np.exp(logits - logits.max(1, keepdims=True)).sum(1, keepdims=True)) - logits.max(1, keepdims=True)
    return float(-logp[np.arange(len(y)), y].mean())


def test_edge_rows_follow_the_alpha_matrix_layout():
    # node i reads the two cell inputs and the i earlier nodes: 2 + 3 + 4 rows for 3 nodes
    rows = edge_rows(3)
    assert len(rows) == 9 and [r for *_, r in rows] == list(range(9))
    assert [(n, j) for n, j, _ in rows] == [(0, 0), (0, 1), (1, 0), (1, 1), (1, 2), (2, 0), (2, 1), (2, 2), (2, 3)]


def test_removal_weights_take_out_one_op_or_one_edge():
    w = _softmax(np.random.default_rng(0).standard_normal((3, 4)))
    one = removal_weights(w, 1, 2)
    assert one[1, 2] == 0 and np.count_nonzero(one != w) == 1
    edge = removal_weights(w, 2)
    assert np.all(edge[2] == 0) and np.array_equal(edge[:2], w[:2])
    assert np.array_equal(w, _softmax(np.random.default_rng(0).standard_normal((3, 4))))  # input untouched


def test_skip_cap_moves_the_weakest_skip_edges_to_their_next_op():
    ops = ("none", "skip_connect", "sep_conv_3x3", "max_pool_3x3")
    kept = [(0, 0, 0, 1), (0, 1, 1, 1), (1, 2, 4, 1)]  # three skips
    op_scores = {0: np.array([-np.inf, 0.5, 0.2, 0.1]), 1: np.array([-np.inf, 0.4, 0.1, 0.3]),
                 4: np.array([9.0, 0.3, 0.25, 0.0])}
    edge_scores = {0: 0.9, 1: 0.1, 4: 0.2}
    capped = cap_skips(kept, ops, op_scores, edge_scores, max_skip=1)
    # edge rows 1 and 4 are the weakest skips; row 1's next op is max_pool, row 4's sep_conv (none is never taken)
    assert capped == [(0, 0, 0, 1), (0, 1, 1, 3), (1, 2, 4, 2)]
    assert cap_skips(kept, ops, op_scores, edge_scores, max_skip=None) == kept
    assert cap_skips(kept, ops, op_scores, edge_scores, max_skip=3) == kept


def test_removal_scores_equal_an_independent_computation():
    keras.utils.set_random_seed(0)
    model = _model()
    ds, steps = search_dataset(64, 16)
    model.fit(ds, steps_per_epoch=steps, epochs=2, verbose=0)
    rng = np.random.default_rng(3)
    for var in model.arch_variables:
        var.assign(rng.standard_normal(var.shape))
    alphas_before = {k: v.copy() for k, v in model.alpha_arrays().items()}
    weights_before = [v.numpy().copy() for v in model.weight_variables]
    x, y = ring_data(37, seed=5)
    genotype, record = select_by_perturbation(model, (x, y), tune_steps=0, seed=1, batch_size=8)

    backbone = model.backbone
    current = {k: _softmax(a.astype(np.float64)) for k, a in alphas_before.items()}
    ops = {"normal": backbone.cnn_ops, "reduce": backbone.cnn_ops, "seq": backbone.seq_ops}
    assert len(record["operations"]) == 6 and record["evaluations"] > 0
    for decision in record["operations"]:
        kind, row = decision["cell"], decision["input"]  # one node: the input index is the row
        base = _loss(backbone, x, y, current)
        assert decision["loss_before"] == pytest.approx(base, rel=1e-5, abs=1e-6)
        for c, name in enumerate(ops[kind]):
            if name == "none":
                assert name not in decision["removal_loss_rise"]
                continue
            trial = dict(current)
            trial[kind] = current[kind].copy()
            trial[kind][row, c] = 0.0
            expected = _loss(backbone, x, y, trial) - base
            assert decision["removal_loss_rise"][name] == pytest.approx(expected, rel=1e-4, abs=1e-5)
        rises = decision["removal_loss_rise"]
        assert decision["op"] == max(rises, key=rises.get)
        current[kind] = current[kind].copy()
        current[kind][row] = 0.0
        current[kind][row, ops[kind].index(decision["op"])] = 1.0
    for step in record["topology"]:
        kind = step["cell"]
        base = _loss(backbone, x, y, current)
        for j in (0, 1):
            trial = dict(current)
            trial[kind] = current[kind].copy()
            trial[kind][j] = 0.0
            assert step["removal_loss_rise"][str(j)] == pytest.approx(_loss(backbone, x, y, trial) - base,
                                                                      rel=1e-4, abs=1e-5)
        assert step["kept_inputs"] == [0, 1]  # one node of two inputs keeps both
    # The genotype is the decisions: each cell's node reads both inputs through the op chosen on each edge.
    chosen = {(d["cell"], d["input"]): d["op"] for d in record["operations"]}
    for kind in ("normal", "reduce", "seq"):
        assert genotype.cell(kind) == [[(chosen[(kind, 0)], 0), (chosen[(kind, 1)], 1)]]
    assert genotype.meta["selected"] == "perturbation"
    # The model is as it was.
    for k, a in model.alpha_arrays().items():
        np.testing.assert_array_equal(a, alphas_before[k])
    for v, w in zip(model.weight_variables, weights_before):
        np.testing.assert_array_equal(v.numpy(), w)


def test_picks_the_op_the_supernet_relies_on_where_the_alpha_rule_picks_skip():
    """Ring task (x0^2 + x1^2 > median) through one normal cell: only the square op (sep_conv_3x3 here) solves it.
    With the alphas held so that skip_connect has most of the weight (0.77 against 0.06), the weights learn to use
    the square op anyway: the alpha rule keeps skip_connect, and the first removal measured on the trained
    supernet finds the square op the one it relies on."""
    keras.utils.set_random_seed(0)
    backbone = TinyBackbone(solver="square", cells=("normal",), shared_stem=True)
    model = _model(backbone, shape=(2, 1, 1))
    ops = backbone.cnn_ops
    logits = np.zeros((2, len(ops)))
    logits[:, ops.index("skip_connect")] = 2.5
    logits[:, ops.index("avg_pool_3x3")] = 1.0
    model.alpha_normal.assign(logits)
    model.set_alpha_updates(False)
    ds, steps = search_dataset(256, 32, task="ring", shape=(2, 1, 1))
    history = model.fit(ds, steps_per_epoch=steps, epochs=10, verbose=0)
    assert history.history["accuracy"][-1] > 0.75
    assert [op for op, _ in model.genotype().normal[0]] == ["skip_connect", "skip_connect"]
    x, y = ring_data(128, shape=(2, 1, 1), seed=9)
    iterations = int(model.w_optimizer.iterations.numpy())
    # no tuning before the first normal-cell decision: it is measured on the supernet as trained
    genotype, record = select_by_perturbation(model, (x, y), seed=0)
    first = next(d for d in record["operations"] if d["cell"] == "normal")
    rises = first["removal_loss_rise"]
    assert max(rises, key=rises.get) == SOLVER["cnn"] == first["op"]
    assert rises[SOLVER["cnn"]] > rises["skip_connect"] + 0.02
    assert genotype.normal[0][first["input"]] == (SOLVER["cnn"], first["input"])
    # with tuning: 6 projected edges, each followed by 2 weight steps (one-node cells keep both inputs: nothing
    # is pruned), and the model, its optimizer state included, is left as it was
    _, record = select_by_perturbation(model, (x, y), tune_data=ds, tune_steps=2, seed=0)
    assert record["tuning_steps"] == 12
    assert int(model.w_optimizer.iterations.numpy()) == iterations
    assert float(model.alpha_active.numpy()) == 0.0  # still frozen, as the test set it
    np.testing.assert_array_equal(model.alpha_arrays()["normal"], logits.astype(model.alpha_arrays()["normal"].dtype))


def test_bad_arguments_are_named():
    model = _model()
    x, y = ring_data(8)
    with pytest.raises(ValueError, match="tune_steps: expected an integer >= 0, received -1"):
        select_by_perturbation(model, (x, y), tune_steps=-1)
    with pytest.raises(ValueError, match="tune_data"):
        select_by_perturbation(model, (x, y), tune_steps=2)


def test_search_select_perturbation_end_to_end(tmp_path, demo_cache, demo_prepared):
    from emodarts_tf.evaluation.genotype_source import genotypes_for_folds
    from emodarts_tf.search.runner import run_search

    config = micro_config(demo_cache, "search.epochs=2", "search.warmup_epochs=1", "space.cnn_nodes=2",
                          "search.select=perturbation", "search.pt_tune_steps=1", "search.max_skip=null")
    out = tmp_path / "search"
    result = run_search(config, out, 1, prepared=demo_prepared)
    fold = out / "fold1"
    assert result["select"] == "perturbation" and result["genotype_file"] == "genotype_pt.json"
    pt = Genotype.load(fold / "genotype_pt.json")
    assert pt.meta["selected"] == "perturbation" and pt.meta["fold"] == 1 and pt.meta["epoch"] == 2
    assert result["genotype"] == pt
    record = json.loads((fold / "perturbation.json").read_text())
    # 2 CNN nodes (5 edges) in normal and reduce cells, 1 SeqNN node (2 edges); nodes with 3 inputs prune one
    assert len(record["operations"]) == 12 and record["tuning_steps"] == 12 + 2
    assert json.loads((out / "genotypes.json").read_text())["1"] == pt.to_dict()
    # each node keeps the two inputs whose removal raised the loss most, with the op chosen on each
    chosen = {(d["cell"], d["node"], d["input"]): d["op"] for d in record["operations"]}
    for step in record["topology"]:
        rises = {int(j): r for j, r in step["removal_loss_rise"].items()}
        assert step["kept_inputs"] == sorted(sorted(rises, key=lambda j: (-rises[j], j))[:2])
        assert pt.cell(step["cell"])[step["node"]] == [(chosen[(step["cell"], step["node"], j)], j)
                                                       for j in step["kept_inputs"]]
    # cli/train's lookup takes the selection the search made
    (choice,) = genotypes_for_folds(out, [demo_prepared.folds[0]], demo_prepared.corpus, demo_prepared.protocol,
                                    choice="search").values()  # fmt: skip
    assert choice.genotype == pt
    (choice,) = genotypes_for_folds(out, [demo_prepared.folds[0]], demo_prepared.corpus, demo_prepared.protocol,
                                    choice="final").values()  # fmt: skip
    assert choice.genotype == Genotype.load(fold / "genotype.json") != pt
    # A finished search selects again on --resume with another search.select, without searching again
    again = run_search(micro_config(demo_cache, "search.epochs=2", "search.warmup_epochs=1", "space.cnn_nodes=2",
                                    "search.select=final", "search.max_skip=null"), out, 1, resume=True,
                       prepared=demo_prepared)
    assert again["genotype_file"] == "genotype.json" and again["epochs_done"] == 2
    assert json.loads((out / "genotypes.json").read_text())["1"] == Genotype.load(fold / "genotype.json").to_dict()
