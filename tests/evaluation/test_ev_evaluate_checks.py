"""``cli/evaluate.py``: unknown classes refused before any feature is extracted, and a help text that says
what ``--split`` defaults to."""
from __future__ import annotations

import logging

from emodarts_tf.commands.evaluate import build_parser, main
from eval_helpers import write_emodb_manifest


def test_unknown_class_refused_before_extraction(standin_run, emodb_root, tmp_path, caplog):
    fold_dir, _ = standin_run
    labels = {"W": "ang", "F": "hap", "T": "sad", "N": "neu", "A": "fear"}
    manifest = write_emodb_manifest(tmp_path / "fear.csv", emodb_root, speakers=("11", "12"), per_class=1,
                                    letters="WFTNA", labels=labels)  # fmt: skip
    cache = tmp_path / "fresh-cache"
    for split in (["--split", "all"], ["--split", "test", "--fold", "1"]):
        with caplog.at_level(logging.ERROR):
            assert main(["--model", str(fold_dir), "--data", "csv", "--root", str(manifest), *split,
                         "--set", f"data.cache_dir={cache}", "--set", "data.workers=1"]) == 2  # fmt: skip
        assert "class(es) the model does not know: 'fear'" in caplog.text
        caplog.clear()
        # Nothing was extracted: the feature cache was never created.
        assert not cache.exists() or not any(cache.iterdir()), sorted(cache.rglob("*"))


def test_split_help_states_the_default():
    text = build_parser().format_help()
    assert "see above" not in text
    assert "default: test, the model's own test fold" in " ".join(text.split())
