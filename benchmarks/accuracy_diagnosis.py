"""Where the accuracy goes: the figures behind docs/accuracy.md, from validation speakers only.

Two parts:

1. ``--runs DIR [DIR ...]``: retraining runs (fold directories with ``history.json`` and a saved model, e.g.
   ``benchmarks/recipe_ablation.py`` variants): the train/validation gap at the selected epoch and at the
   end, the epoch-to-epoch instability of the validation loss, the validation confusion matrix summed over
   folds (per-class recall on unseen speakers), and batch normalisation in inference mode: the validation
   UA of the saved model as it is against the same weights with BN statistics re-estimated on the
   training part (if they agree, stale BN statistics are not what loses accuracy).
2. ``--probe``: linear probes (logistic regression on pooled MFCC statistics, the strongest cheap floor)
   trained on each fold's training speakers and scored on its validation speakers: the data per fold, and
   how feature normalisation (per coefficient over the training part, per utterance, per speaker) and input
   resolution (feature configs given with ``--probe-config``) move a model that has no capacity to overfit.

    python benchmarks/accuracy_diagnosis.py --config cpu --runs runs/abl1/base/g1 runs/abl1/recipe/g1 --probe \
        --probe-config cpu --probe-config emodb_budget --probe-config "cpu:features.duration_s=4.0"
"""
from __future__ import annotations

import argparse
import json
import logging
import os
from pathlib import Path

import numpy as np

from emodarts_tf.utils.machine import cpu_model


def _load(config_name: str, data: str, root: str, overrides=()):
    from emodarts_tf.config import load_config

    return load_config(config_name, overrides=list(overrides), updates={"data": {"corpus": data, "root": root}})


def run_figures(run_dir: Path, prepared, config) -> dict:
    """Gap, instability, validation confusion and the BN check of every fold of one run."""
    from emodarts_tf.data.pipeline import make_fold_data
    from emodarts_tf.evaluation.metrics import classification_metrics
    from emodarts_tf.evaluation.model_dir import load_model_dir

    rows, confusion = [], None
    for fold_dir in sorted(run_dir.glob("fold*")):
        if not (fold_dir / "metrics.json").is_file():
            continue
        k = int(fold_dir.name[4:])
        history = json.loads((fold_dir / "history.json").read_text())
        metrics = json.loads((fold_dir / "metrics.json").read_text())
        best = next(r for r in history if r["epoch"] == metrics["best_epoch"])
        val_loss = np.array([r["val_loss"] for r in history])
        fold = make_fold_data(prepared, k, config)
        trained = load_model_dir(fold_dir)
        x_val, y_val = fold.arrays("val")
        predicted = np.asarray(trained.model.predict(x_val, verbose=0)).argmax(1)
        m = classification_metrics(y_val, predicted, len(fold.classes))
        cm = np.asarray(m["confusion_matrix"])
        confusion = cm if confusion is None else confusion + cm
        rows.append({
            "fold": k,
            "train_acc_selected": best["accuracy"], "val_ua_selected": best["val_ua"], "epoch": best["epoch"],
            "train_acc_last": history[-1]["accuracy"], "val_ua_last": history[-1]["val_ua"],
            "train_loss_last": history[-1]["loss"], "val_loss_last": history[-1]["val_loss"],
            "val_loss_range": [float(val_loss.min()), float(val_loss.max())],
            "val_loss_step": float(np.median(np.abs(np.diff(val_loss)))) if len(val_loss) > 1 else 0.0,
            "val_ua_saved_model": m["ua"], "val_ua_bn_recalibrated": bn_recalibrated_ua(trained.model, fold),
        })  # fmt: skip
    return {"folds": rows, "val_confusion": None if confusion is None else confusion.tolist()}


def bn_recalibrated_ua(model, fold) -> float:
    """Validation UA after re-estimating every BN layer's moving statistics on the training part.

    The moving statistics are reset and then updated by forward passes in training mode (no weight
    change) over the whole training part with momentum 0 for the last pass's batch statistics averaged:
    a cumulative average over batches, as PyTorch's ``momentum=None`` does.
    """
    import keras

    from emodarts_tf.evaluation.metrics import classification_metrics

    bns = [layer for layer in model._flatten_layers(include_self=False, recursive=True)
           if isinstance(layer, keras.layers.BatchNormalization) or type(layer).__name__ == "BatchNormalization"]  # fmt: skip
    saved = [[np.array(v.numpy()) for v in layer.non_trainable_variables] for layer in bns]
    x_train, _ = fold.arrays("train")
    sums = [[np.zeros_like(v) for v in s] for s in saved]
    batches = 0
    for start in range(0, len(x_train), 32):
        for layer, s in zip(bns, saved):
            for var in layer.non_trainable_variables:
                var.assign(np.zeros_like(var.numpy()))
        momentum = [getattr(layer, "momentum", None) for layer in bns]
        for layer in bns:
            layer.momentum = 0.0
        model(x_train[start:start + 32], training=True)
        for layer, m in zip(bns, momentum):
            layer.momentum = m
        for acc, layer in zip(sums, bns):
            for a, var in zip(acc, layer.non_trainable_variables):
                a += var.numpy()
        batches += 1
    for acc, layer in zip(sums, bns):
        for a, var in zip(acc, layer.non_trainable_variables):
            var.assign(a / batches)
    x_val, y_val = fold.arrays("val")
    ua = classification_metrics(y_val, np.asarray(model.predict(x_val, verbose=0)).argmax(1), len(fold.classes))["ua"]
    for layer, s in zip(bns, saved):
        for var, value in zip(layer.non_trainable_variables, s):
            var.assign(value)
    return float(ua)


def _pooled(x: np.ndarray) -> np.ndarray:
    return np.concatenate([x.mean(2), x.std(2), x.max(2), x.min(2)], axis=1)


def probe(prepared, config, mode: str) -> dict:
    """Logistic regression on pooled statistics, train speakers -> validation speakers, per fold."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from emodarts_tf.data.protocols import validation_speakers
    from emodarts_tf.evaluation.metrics import classification_metrics

    speaker = {r.path: r.speaker for r in prepared.records}

    def features(paths):
        x = prepared.features(paths).astype(np.float64)
        if mode == "utterance":
            x = (x - x.mean(2, keepdims=True)) / (x.std(2, keepdims=True) + 1e-6)
        f = _pooled(x)
        if mode == "speaker":  # z-scores per speaker (needs each speaker's unlabelled audio)
            s = np.array([speaker[p] for p in paths])
            for who in np.unique(s):
                rows = s == who
                f[rows] = (f[rows] - f[rows].mean(0)) / (f[rows].std(0) + 1e-6)
        return f

    uas, sizes = [], []
    for fold in prepared.folds:
        val = set(validation_speakers(fold, prepared.records, config.data.val_fraction, config.seed))
        train = [p for p in fold.train if speaker[p] not in val]
        held = [p for p in fold.train if speaker[p] in val]
        clf = make_pipeline(StandardScaler(), LogisticRegression(C=0.1, max_iter=5000))
        clf.fit(features(train), prepared.labels(train))
        uas.append(classification_metrics(prepared.labels(held), clf.predict(features(held)), len(prepared.classes))["ua"])
        sizes.append((fold.index, len(train), len(held), len(fold.test)))
    return {"ua": float(np.mean(uas)), "std": float(np.std(uas)), "per_fold": uas, "sizes": sizes}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="cpu")
    parser.add_argument("--data", default="emodb")
    parser.add_argument("--root", default=str(Path(__file__).resolve().parents[2] / "shared" / "data" / "emodb"))
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument("--runs", nargs="*", default=[])
    parser.add_argument("--probe", action="store_true")
    parser.add_argument("--probe-config", action="append", default=[],
                        help="CONFIG[:key=value,...] feature settings to probe (default: --config)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    from emodarts_tf.data.prepare import prepare

    config = _load(args.config, args.data, args.root, args.overrides)
    prepared = prepare(config, progress=False)
    print(f"machine: {cpu_model()}, {os.cpu_count()} cores; data: {args.data} at {args.root}, protocol "
          f"{prepared.protocol}, classes {prepared.classes}; validation speakers only")  # fmt: skip
    for run in args.runs:
        figures = run_figures(Path(run), prepared, config)
        print(f"\n### {run}\n")
        print("| fold | epoch | train acc / val UA (selected) | train acc / val UA (last) | train / val loss (last) "
              "| val loss min..max | median epoch-to-epoch val loss change | val UA saved model | with BN re-estimated |")
        print("|---|---|---|---|---|---|---|---|---|")
        for r in figures["folds"]:
            print(f"| {r['fold']} | {r['epoch']} | {r['train_acc_selected']:.3f} / {r['val_ua_selected']:.3f} | "
                  f"{r['train_acc_last']:.3f} / {r['val_ua_last']:.3f} | {r['train_loss_last']:.3f} / "
                  f"{r['val_loss_last']:.3f} | {r['val_loss_range'][0]:.2f}..{r['val_loss_range'][1]:.2f} | "
                  f"{r['val_loss_step']:.3f} | {r['val_ua_saved_model']:.3f} | {r['val_ua_bn_recalibrated']:.3f} |")
        if figures["val_confusion"] is not None:
            cm = np.asarray(figures["val_confusion"])
            recall = cm.diagonal() / np.maximum(cm.sum(1), 1)
            print(f"\nvalidation confusion (rows true, columns predicted; {prepared.classes}), summed over folds:")
            for c, row, rec in zip(prepared.classes, cm.tolist(), recall):
                print(f"    {c}: {row}  recall {rec:.3f}")
    if args.probe:
        print("\n### linear probes (train speakers -> validation speakers)\n")
        print("| features | normalisation | val UA (mean ± std over folds) | per fold |")
        print("|---|---|---|---|")
        for spec in args.probe_config or [args.config]:
            name, _, sets = spec.partition(":")
            probe_config = _load(name, args.data, args.root, [s for s in sets.split(",") if s])
            probe_prepared = prepare(probe_config, progress=False)
            for mode in ("coefficient", "utterance", "speaker"):
                r = probe(probe_prepared, probe_config, mode)
                print(f"| {spec} {tuple(probe_prepared.input_shape[:2])} | {mode} | {r['ua']:.4f} ± {r['std']:.4f} "
                      f"| {' '.join(f'{u:.3f}' for u in r['per_fold'])} |")
        sizes = probe(prepared, config, "coefficient")["sizes"]
        print("\ndata per fold (utterances): " + "; ".join(f"fold {k}: train {a}, val {b}, test {c}" for k, a, b, c in sizes))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
