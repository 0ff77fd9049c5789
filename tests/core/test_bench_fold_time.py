"""benchmarks/bench_fold_time.py's parsing, turn order and figures, on hand-made run folders (no run)."""
from __future__ import annotations

import json

import pytest


@pytest.fixture(scope="module")
def bench(load_benchmark):
    return load_benchmark("bench_fold_time")


def test_variants_are_parsed_and_bad_ones_named(bench):
    assert bench.parse_variant("base=") == ("base", [])
    assert bench.parse_variant("off=search.graph_optimization=false, search.epochs=2") == (
        "off", ["search.graph_optimization=false", "search.epochs=2"])
    with pytest.raises(SystemExit, match="expected NAME=key=value"):
        bench.parse_variant("off")
    with pytest.raises(SystemExit, match="'search.epochs' is not key=value"):
        bench.parse_variant("x=search.epochs")
    with pytest.raises(SystemExit, match="the name must be"):
        bench.parse_variant("a b=search.epochs=2")


def test_turns_alternate_between_repeats(bench):
    orders = [bench.turn_order(["a", "b", "c"], r) for r in range(3)]
    assert orders == [["a", "b", "c"], ["c", "b", "a"], ["a", "b", "c"]]


def _fold(tmp_path, name, epochs, val_ua, train_s, train_epochs, fold=2, rss=2000.0):
    search, train = tmp_path / name / "search" / f"fold{fold}", tmp_path / name / "train" / f"fold{fold}"
    search.mkdir(parents=True)
    train.mkdir(parents=True)
    (search / "search.json").write_text(json.dumps({"epoch_seconds": epochs, "peak_rss_mb": rss,
                                                    "final": {"val_ua": val_ua}}))  # fmt: skip
    (train / "metrics.json").write_text(json.dumps({"seconds": train_s, "epochs_run": train_epochs}))
    return search.parent, train.parent


def test_figures_medians_and_table(bench, tmp_path):
    search_dir, train_dir = _fold(tmp_path, "a", [60.0, 5.0, 5.0], 0.5, 40.0, 20)
    a = {**bench.fold_figures(search_dir, folds=2), **bench.train_figures(train_dir, folds=2)}
    assert a == {"search_first_epoch_s": 60.0, "search_later_epochs_s": 10.0, "search_epochs_s": 70.0,
                 "search_peak_rss_mb": 2000.0, "search_final_val_ua": 0.5, "train_epochs": 20, "train_fit_s": 40.0,
                 "train_s_per_epoch": 2.0}  # fmt: skip
    runs = {"on": [{**a, "search_command_s": 90.0, "train_command_s": 50.0},
                   {**a, "search_command_s": 70.0, "train_command_s": 30.0},
                   {**a, "search_command_s": 100.0, "train_command_s": 45.0}]}  # fmt: skip
    summary = bench.summarise(runs)
    assert summary["on"]["search_command_s"] == 90.0 and summary["on"]["train_command_s"] == 45.0
    assert summary["on"]["repeats"] == 3
    text = bench.markdown(summary, {"cpu_model": "Test CPU", "cpus": 2}, {"on": []}, "t")
    assert "Machine: Test CPU, 2 CPUs" in text
    assert "| on | (config as is) | 3 | 90 | 60.0 | 10.0 | 2000 | 45 | 2.00 | 0.500 |" in text
    # --no-train: the search's figures only
    search_only = bench.summarise({"off": [{**bench.fold_figures(search_dir, folds=2), "search_command_s": 80.0}]})
    text = bench.markdown(search_only, {"cpu_model": "Test CPU", "cpus": 2}, {"off": ["search.epochs=3"]}, "t")
    assert "| off | search.epochs=3 | 1 | 80 | 60.0 | 10.0 | 2000 | not run | not run | 0.500 |" in text


def test_several_folds_in_one_command_are_summed(bench, tmp_path):
    assert bench.parse_folds("1,2") == [1, 2] and bench.parse_folds("3") == [3]
    for bad in ("0", "a", ""):
        with pytest.raises(SystemExit, match="--fold"):
            bench.parse_folds(bad)
    _fold(tmp_path, "a", [60.0, 5.0, 5.0], 0.5, 40.0, 20, fold=1, rss=2000.0)
    search_dir, train_dir = _fold(tmp_path, "a", [20.0, 6.0], 0.7, 30.0, 10, fold=2, rss=2500.0)
    figures = {**bench.fold_figures(search_dir, [1, 2]), **bench.train_figures(train_dir, [1, 2])}
    assert figures == pytest.approx({"search_first_epoch_s": 80.0, "search_later_epochs_s": 16.0,
                                     "search_epochs_s": 96.0, "search_peak_rss_mb": 2500.0, "search_final_val_ua": 0.6,
                                     "train_epochs": 30, "train_fit_s": 70.0, "train_s_per_epoch": 70.0 / 30})
