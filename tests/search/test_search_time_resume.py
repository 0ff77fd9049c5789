"""The time ``cli/search.py`` reports after a ``--resume``: the end-of-search table, the fold's "done" line and
``search.json`` all give the search's total, the sum of the per-epoch seconds that ``alpha_history.json``
records for every epoch, those of the killed run included; the "done" line gives this run's time apart."""
from __future__ import annotations

import json
import logging
import re

import pytest
from search_helpers import MICRO, KillAfter, Killed


def _history_seconds(fold_dir) -> list:
    return [e["seconds"] for e in json.loads((fold_dir / "alpha_history.json").read_text())]


def test_table_and_log_report_the_time_of_every_run(tmp_path, demo_cache, demo_prepared, monkeypatch, caplog):
    import emodarts_tf.search.runner as runner
    from emodarts_tf.commands.search import main

    out = tmp_path / "search"
    args = ["--data", "demo", "--cache", str(demo_cache), "--out", str(out), "--fold", "1", "--epochs", "3",
            "--set", "search.warmup_epochs=1", "--set", "search.steps_per_epoch=1"]  # fmt: skip
    for item in MICRO:
        args += ["--set", item]

    real_run_search = runner.run_search

    def killed_run_search(*a, **kw):
        return real_run_search(*a, **{**kw, "callbacks": [KillAfter(2)]})

    monkeypatch.setattr(runner, "run_search", killed_run_search)
    with pytest.raises(Killed):
        main(args)
    monkeypatch.undo()
    fold_dir = out / "fold1"
    killed_seconds = _history_seconds(fold_dir)
    assert len(killed_seconds) == 2

    caplog.clear()
    with caplog.at_level(logging.INFO, logger="emodarts_tf"):
        assert main([*args, "--resume"]) == 0
    seconds = _history_seconds(fold_dir)
    assert len(seconds) == 3 and seconds[:2] == killed_seconds  # the killed run's epochs keep their times
    total = sum(seconds)
    summary = json.loads((fold_dir / "search.json").read_text())
    assert summary["seconds"] == pytest.approx(total, abs=0.01)
    assert summary["epoch_seconds"] == seconds
    # This process ran one epoch (plus data, model and tracing): its own time is reported apart.
    assert summary["this_run_seconds"] > seconds[2]

    messages = [r.getMessage() for r in caplog.records]
    header = next(i for i, m in enumerate(messages) if m.split()[:2] == ["fold", "best"])
    assert messages[header].split() == ["fold", "best", "UA", "epoch", "epochs", "search", "s", "genotype"]
    row = messages[header + 1].split()
    assert row[0] == "1" and row[3] == "3"  # fold 1, 3 epochs
    assert row[4] == f"{summary['seconds']:.0f}"  # summary["seconds"] is the total (above)
    done = [m for m in messages if m.startswith("fold 1 done:")]
    assert len(done) == 1
    found = re.match(r"fold 1 done: 3 epochs, (\d+) s of epochs over all runs \(epochs 1-2 in earlier runs\), "
                     r"(\d+) s in this run: ", done[0])  # fmt: skip
    assert found, done[0]
    assert found[1] == row[4]
    assert found[2] == f"{summary['this_run_seconds']:.0f}"
