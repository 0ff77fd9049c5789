"""``cli/train.py --genotype random:N`` end to end on the (synthetic) demo corpus with a micro space: N
random genotypes retrained with the same recipe, a kill between genotypes resumed by the same command,
``random_summary.json`` checked against the folds' own metrics, ``cli/compare.py`` ranking a run among them;
bad ``random:N`` values and mixed output folders refused."""
from __future__ import annotations

import json
import logging

import numpy as np
import pytest

from emodarts_tf.commands.train import main

MICRO = [
    "space.init_channels=2",
    "space.stem_multiplier=1",
    "space.cnn_nodes=1",
    "space.seq_nodes=1",
    "space.seq_hidden=8",
    "space.cnn_ops=[none,skip_connect,max_pool_3x3,sep_conv_3x3]",
    "space.seq_ops=[none,skip_connect,rnn_1]",
    "train.batch_size=16",
    "data.workers=1",
]


def _args(cache, out, spec="random:2", seed=3, *extra):
    sets = [a for o in MICRO for a in ("--set", o)]
    return ["--data", "demo", "--cache", str(cache), "--out", str(out), "--genotype", spec, "--seed", str(seed),
            "--folds", "1", "--epochs", "1", *sets, *extra]  # fmt: skip


class Killed(Exception):
    pass


@pytest.mark.slow
def test_random_genotypes_train_resume_summarise_and_compare(tmp_path, monkeypatch, caplog):
    from emodarts_tf.baselines.compare import compare_runs
    from emodarts_tf.config import load_config
    from emodarts_tf.evaluation import trainer
    from emodarts_tf.evaluation.summary import summarise, write_summary
    from emodarts_tf.search_space.random_genotype import sample_genotypes

    cache, out = tmp_path / "cache", tmp_path / "run"
    original = trainer.train_genotype_fold

    def dies_in_genotype_2(genotype, config, fold_data, fold_dir, **kwargs):
        if fold_dir.parent.name == "random2":
            raise Killed()  # genotype 1 is finished: stop as a kill would, without any clean-up
        return original(genotype, config, fold_data, fold_dir, **kwargs)

    monkeypatch.setattr(trainer, "train_genotype_fold", dies_in_genotype_2)
    with pytest.raises(Killed):
        main(_args(cache, out))
    monkeypatch.setattr(trainer, "train_genotype_fold", original)
    assert (out / "random1" / "fold1" / "metrics.json").is_file()
    assert not (out / "random2" / "fold1" / "metrics.json").exists()
    partial = json.loads((out / "random_summary.json").read_text())
    assert partial["finished"] == [1] and partial["complete"] is False
    metrics1 = (out / "random1" / "fold1" / "metrics.json").read_text()

    with caplog.at_level(logging.INFO):
        assert main(_args(cache, out)) == 0  # the same command
    assert "fold 1: finished earlier; skipped" in caplog.text
    assert (out / "random1" / "fold1" / "metrics.json").read_text() == metrics1

    config = load_config("demo", overrides=[*MICRO, "seed=3", "train.epochs=1"])
    expected = sample_genotypes(config.space, 2, seed=3, max_skip=config.search.max_skip)
    summary = json.loads((out / "random_summary.json").read_text())
    assert summary["kind"] == "random" and summary["seed"] == 3 and summary["n"] == 2 and summary["complete"]
    assert summary["folds"] == [1] and summary["corpus"] == "demo" and summary["config"]["seed"] == 3
    assert summary["config"]["space"]["cnn_nodes"] == 1 and summary["max_skip"] == 2
    means = {}
    for i, genotype in enumerate(expected, 1):
        run = out / f"random{i}"
        saved = json.loads((run / "genotype.json").read_text())
        assert saved == genotype.to_dict() and saved["meta"]["source"] == "random" and saved["meta"]["index"] == i
        info = json.loads((run / "fold1" / "model_info.json").read_text())
        assert {k: v for k, v in info["genotype"].items() if k != "meta"} == \
            {k: v for k, v in saved.items() if k != "meta"}  # fmt: skip
        fold_metrics = json.loads((run / "fold1" / "metrics.json").read_text())
        run_summary = json.loads((run / "summary.json").read_text())
        assert run_summary["kind"] == "random" and "search" not in run_summary["compute_s"]
        assert "| mean ± std |" in (run / "summary.md").read_text() and (run / "config.yaml").is_file()
        row = summary["genotypes"][i - 1]
        assert row["index"] == i and row["dir"] == f"random{i}" and row["genotype"] == saved
        for key in ("ua", "wa", "f1"):
            assert row[key]["per_fold"] == {"1": fold_metrics[key]}
            assert row[key]["mean"] == pytest.approx(fold_metrics[key]) and row[key]["std"] == 0.0
            means.setdefault(key, []).append(fold_metrics[key])
    for key, values in means.items():
        assert summary["median"][key] == pytest.approx((values[0] + values[1]) / 2)  # median of two
        assert summary["min"][key] == pytest.approx(min(values)) and summary["max"][key] == pytest.approx(max(values))
    markdown = (out / "random_summary.md").read_text()
    assert "| random1 | 1 |" in markdown and "| random2 | 1 |" in markdown
    assert f"| median of the means | | {np.median(means['ua']):.4f} |" in markdown

    # compare: a run whose mean UA is above both random genotypes ranks 1 of 3.
    best = max(means["ua"])
    darts = summarise({1: {"ua": min(1.0, best + 0.01), "wa": 0.5, "f1": 0.5}}, kind="emodarts",
                      classes=["ang", "hap", "neu", "sad"], extra={"corpus": "demo", "protocol": "loso"})  # fmt: skip
    write_summary(tmp_path / "darts", darts)
    compared, written = compare_runs([out, tmp_path / "darts"], names=["random", "emoDARTS"], out_dir=tmp_path / "cmp")
    assert "emoDARTS ranks 1 of 3 (above 2 of 2 random genotypes)" in compared
    assert json.loads(written["json"].read_text())["random"][0]["ua"]["median"] == pytest.approx(np.median(means["ua"]))

    # Another seed into the same --out is refused (the config differs), before anything trains.
    caplog.clear()
    assert main(_args(cache, out, seed=4)) == 2
    assert "another config (differing: seed)" in caplog.text


def test_bad_random_spec_and_mixed_output_folders_are_refused(tmp_path, caplog):
    cache = tmp_path / "cache"
    for bad in ("random:0", "random:x"):
        caplog.clear()
        assert main(_args(cache, tmp_path / "bad", spec=bad)) == 2
        assert f"--genotype '{bad}'" in caplog.text and "N >= 1" in caplog.text
    assert not (tmp_path / "bad").exists()  # refused before any output folder or data preparation
    single = tmp_path / "single"
    (single / "fold1").mkdir(parents=True)
    caplog.clear()
    assert main(_args(cache, single)) == 2
    assert "holds a run of one genotype (fold1)" in caplog.text
    randoms = tmp_path / "randoms"
    (randoms / "random1").mkdir(parents=True)
    caplog.clear()
    assert main(_args(cache, randoms, spec=str(tmp_path / "genotype.json"))) == 2
    assert "holds random-genotype runs (random1)" in caplog.text
    assert not (cache / "demo-corpus-v1").exists()  # nothing was prepared


def test_the_random_summary_carries_the_first_model_and_the_refit_alone_of_a_pair():
    """Genotypes served as a ``recipe.ensemble`` pair: each row keeps its first model and refit alone, and
    ``parts_median`` is the median over the finished genotypes of their fold means, computed here from the inputs."""
    from emodarts_tf.evaluation.random_summary import random_markdown, summarise_random
    from emodarts_tf.evaluation.summary import summarise

    rng = np.random.default_rng(0)
    entries, expected = [], {"first_model": [], "refit_alone": []}
    for i in range(1, 6):
        folds = (1, 2) if i < 5 else (1,)  # genotype 5 is unfinished
        per_fold = {}
        for k in folds:
            first, alone, pair = rng.uniform(0.3, 0.9, size=(3, 3))
            per_fold[k] = {"ua": pair[0], "wa": pair[1], "f1": pair[2],
                           "refit": {"ensemble": True, "selection_test": dict(zip(("ua", "wa", "f1"), first)),
                                     "refit_test": dict(zip(("ua", "wa", "f1"), alone))}}  # fmt: skip
        summary = summarise(per_fold, kind="random", classes=["a", "b"])
        entries.append({"index": i, "dir": f"random{i}", "summary": summary, "genotype": None})
        if i < 5:
            expected["first_model"].append(np.mean([per_fold[k]["refit"]["selection_test"]["ua"] for k in folds]))
            expected["refit_alone"].append(np.mean([per_fold[k]["refit"]["refit_test"]["ua"] for k in folds]))
    out = summarise_random(entries, 5, 0, [1, 2])
    assert out["finished"] == [1, 2, 3, 4]
    for part, values in expected.items():
        assert out["parts_median"][part]["ua"] == pytest.approx(np.median(values))
        assert out["genotypes"][0][part]["ua"]["mean"] == pytest.approx(values[0])
    table = random_markdown(out)
    assert f"| median of the means, refit alone | | {np.median(expected['refit_alone']):.4f} |" in table
    # one model served: no parts
    plain = [{**e, "summary": summarise({1: {"ua": 0.5, "wa": 0.5, "f1": 0.5}}, kind="random", classes=["a", "b"])}
             for e in entries]  # fmt: skip
    assert summarise_random(plain, 5, 0, [1])["parts_median"] == {}
