"""EmotionNAS end to end from the commands: `search --method emotionnas` on the demo corpus (openSMILE frames
beside the MFCC image), then `train` recognises the two-stream genotype by itself (here with a classifier per
stream and modality dropout in training; then with the late fusion), and the model directory reloads with both inputs
and the fused logits only."""
from __future__ import annotations

import json

import numpy as np
from search_helpers import MICRO


def _micro(*extra):
    args = []
    for item in [*MICRO, "search.epochs=2", "search.warmup_epochs=1", "train.epochs=2", "train.patience=2",
                 "frames.frames=8", "frames.time_pool=16", "data.normalize=speaker", *extra]:
        args += ["--set", item]
    return args


def test_search_then_train_a_two_stream_genotype(tmp_path, demo_cache):
    from emodarts_tf.commands.search import main as search
    from emodarts_tf.commands.train import main as train
    from emodarts_tf.evaluation.model_dir import load_model_dir
    from emodarts_tf.search_space.genotype import Genotype, is_two_stream

    out = tmp_path / "search"
    assert search(["--method", "emotionnas", "--data", "demo", "--cache", str(demo_cache), "--out", str(out),
                   "--fold", "1", *_micro()]) == 0
    summary = json.loads((out / "fold1" / "search.json").read_text())
    assert summary["method"] == "emotionnas" and set(summary["streams"]) == {"mfcc", "frames"}
    assert summary["input_shape"] == {"mfcc": [32, 32, 1], "frames": [8, 25]}  # eGeMAPSv02: 25 descriptors
    assert summary["streams"]["frames"]["opensmile_set"] == "eGeMAPSv02"
    genotype = Genotype.load(out / "fold1" / "genotype.json")
    assert is_two_stream(genotype) and genotype.fusion == "supplement"
    assert genotype.stream_cells == {"mfcc": ["normal", "reduce"], "frames": ["seq"]}
    assert json.loads((out / "fold1" / "genotype.json").read_text())["format"] == "emodarts-tf/genotype/v2"

    trained = tmp_path / "train"
    assert train(["--data", "demo", "--cache", str(demo_cache), "--genotype", str(out), "--folds", "1",
                  "--out", str(trained), *_micro("train.stream_heads=0.5", "train.stream_dropout=0.3")]) == 0
    run = json.loads((trained / "summary.json").read_text())
    assert run["kind"] == "emotionnas" and run["folds"] == [1]
    model = load_model_dir(trained / "fold1")
    assert model.info["train"]["stream_heads"] == 0.5  # trained with a classifier per stream; saved without them
    assert model.info["train"]["stream_dropout"] == 0.3  # and with modality dropout, the identity when it predicts
    assert model.two_stream and model.info["input_shapes"] == {"mfcc": [32, 32, 1], "frames": [8, 25]}
    # per-speaker z-scores already: nothing on top of them (as the image)
    assert model.frames_mean.tolist() == [[0.0]] and model.frames_std.tolist() == [[1.0]]
    assert model.info["complexity"]["params"] > 0
    rng = np.random.default_rng(0)
    x = {"mfcc": rng.normal(size=(3, 32, 32, 1)).astype("float32"), "frames": rng.normal(size=(3, 8, 25)).astype("float32")}
    assert np.asarray(model.model(x, training=False)).shape == (3, 4)
    preds = (trained / "fold1" / "predictions.csv").read_text().splitlines()
    assert len(preds) == 1 + 44
    # evaluate reads both streams as the model was trained (per-speaker statistics included) and scores the
    # test fold as training did
    from emodarts_tf.commands.evaluate import main as evaluate

    assert evaluate(["--data", "demo", "--cache", str(demo_cache), "--model", str(trained / "fold1"),
                     "--out", str(tmp_path / "eval")]) == 0
    again = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    first = json.loads((trained / "fold1" / "metrics.json").read_text())
    assert again["confusion_matrix"] == first["confusion_matrix"] and abs(again["ua"] - first["ua"]) < 1e-9
    assert evaluate(["--data", "demo", "--cache", str(demo_cache), "--model", str(trained / "fold1"),
                     "--split", "all", "--out", str(tmp_path / "eval-all")]) == 0  # no fold protocol: both caches
    assert json.loads((tmp_path / "eval-all" / "metrics.json").read_text())["n"] == 176
    # predict: the same files as one speaker's utterances (the whole test speaker), both streams computed
    # from the audio, give the probabilities evaluate gave from the caches
    import csv

    from emodarts_tf.evaluation.predict import load_predictor, predict_files

    with open(tmp_path / "eval" / "predictions.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len({r["speaker"] for r in rows}) == 1
    result = predict_files(load_predictor(trained / "fold1"), [r["path"] for r in rows])
    expected = np.array([[float(r[f"p_{c}"]) for c in model.classes] for r in rows])
    assert result.paths == [r["path"] for r in rows] and not result.skipped
    np.testing.assert_allclose(result.probabilities, expected, atol=2e-5)

    # the same cells retrained with the late fusion: one classifier per stream, the saved logits their mean
    # probability (LateFusion), reloaded and scored again by evaluate
    late = tmp_path / "train-late"
    assert train(["--data", "demo", "--cache", str(demo_cache), "--genotype", str(out), "--folds", "1",
                  "--out", str(late), *_micro("train.fusion=late")]) == 0
    model = load_model_dir(late / "fold1")
    assert model.info["genotype"]["streams"]["fusion"] == "late" and model.two_stream
    assert any(type(layer).__name__ == "LateFusion" for layer in model.model.layers)
    assert not any(layer.name.startswith("supplement") for layer in model.model.layers)
    probabilities = np.exp(np.asarray(model.model(x, training=False), "float64"))
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)  # logits of a mean probability
    assert evaluate(["--data", "demo", "--cache", str(demo_cache), "--model", str(late / "fold1"),
                     "--out", str(tmp_path / "eval-late")]) == 0
    again = json.loads((tmp_path / "eval-late" / "metrics.json").read_text())
    first = json.loads((late / "fold1" / "metrics.json").read_text())
    assert again["confusion_matrix"] == first["confusion_matrix"]

    # the image stream alone, served as the pair (recipe.ensemble): the one-stream network reads its own entry of
    # the two-stream batches; its probabilities are the mean of the first model's and the refit's, each scored
    # alone, and evaluate (which reads both streams) scores it as training did
    alone = tmp_path / "train-image-pair"
    assert train(["--data", "demo", "--cache", str(demo_cache), "--genotype", str(out), "--folds", "1",
                  "--out", str(alone), *_micro("train.fusion=spectrogram", "recipe.refit=true",
                                               "recipe.ensemble=true")]) == 0
    model = load_model_dir(alone / "fold1")
    assert model.info["genotype"]["streams"]["fusion"] == "spectrogram" and model.info["recipe"]["ensemble"]

    def probabilities(name):
        with open(alone / "fold1" / name, newline="") as fh:
            return np.array([[float(r[f"p_{c}"]) for c in model.classes] for r in csv.DictReader(fh)])

    members = (probabilities("predictions_selection.csv") + probabilities("predictions_refit.csv")) / 2
    np.testing.assert_allclose(probabilities("predictions.csv"), members, atol=2e-5)
    assert evaluate(["--data", "demo", "--cache", str(demo_cache), "--model", str(alone / "fold1"),
                     "--out", str(tmp_path / "eval-image-pair")]) == 0
    again = json.loads((tmp_path / "eval-image-pair" / "metrics.json").read_text())
    first = json.loads((alone / "fold1" / "metrics.json").read_text())
    assert again["confusion_matrix"] == first["confusion_matrix"]


def test_two_stream_search_prunes_both_streams(tmp_path, demo_cache):
    """search.prune in the two-stream search: both streams' cells (the image's normal and reduction cells, the
    frames' SeqNN cells) keep 3, then 2 candidates per edge on the schedule, the mixing weights are 0 exactly on
    the pruned ones, and the genotype of each stream uses kept candidates only."""
    from test_pruning import _check_genotype_kept, _check_history, _ops

    from emodarts_tf.commands.search import main as search
    from emodarts_tf.config import load_config

    extra = ["search.epochs=4", "search.prune=[3,2]"]
    out = tmp_path / "search"
    assert search(["--method", "emotionnas", "--data", "demo", "--cache", str(demo_cache), "--out", str(out),
                   "--fold", "1", *_micro(*extra)]) == 0
    ops = _ops(load_config("demo", overrides=_micro(*extra)[1::2]).space)
    history = json.loads((out / "fold1" / "alpha_history.json").read_text())
    assert [entry["epoch"] for entry in history] == [1, 2, 3, 4]
    _check_history(history, ops, {1: None, 2: 3, 3: 2, 4: 2})
    _check_genotype_kept(json.loads((out / "fold1" / "genotype.json").read_text()), history[-1]["weights"], ops)
