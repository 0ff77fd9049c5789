"""A linear reference on the same folds and features as the EmoDB runs in the README.

Logistic regression (scikit-learn, which librosa already installs) on per-coefficient statistics
(mean, std, max, min over time) of the cached MFCCs, trained on each fold's training part and scored on
its test speakers with the project's UA/WA/F1. It checks the data path independently of Keras (labels
are re-derived from the EmoDB file names) and gives a floor that the neural models should clear.

    python benchmarks/emodb_linear_reference.py --root ../shared/data/emodb [--config cpu] [--set data.classes=[all]]

With ``data.normalize: speaker`` in the config (``configs/cpu.yaml``) the MFCCs are z-scored per speaker first,
exactly as the neural models see them (``data.pipeline.speaker_normalised_features``).

``--streams frames`` or ``both`` (with a config that has a ``frames`` section, e.g. ``--config emotionnas``)
pools EmotionNAS's frame-level features instead of, or beside, the image (the image of that config: its
spectrogram), normalised per speaker and dimension in the same way: the linear reference of the two-stream
runs, on the same information.

    python benchmarks/emodb_linear_reference.py --config emotionnas --streams both
"""
from __future__ import annotations

import argparse
import os
import platform
from pathlib import Path

import numpy as np


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", default=str(Path(__file__).resolve().parents[2] / "shared" / "data" / "emodb"))
    parser.add_argument("--config", default="emodb_budget")
    parser.add_argument("--cache", default="cache")
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="config override KEY=VALUE")
    parser.add_argument("--streams", choices=("image", "frames", "both"), default="image",
                        help="pool the image (default), the frame-level features of the config, or both")
    args = parser.parse_args()

    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from emodarts_tf.config import load_config
    from emodarts_tf.data.prepare import prepare
    from emodarts_tf.data.features import feature_extractor_label
    from emodarts_tf.evaluation.metrics import classification_metrics
    from emodarts_tf.evaluation.summary import markdown_table, summarise

    from emodarts_tf.data.pipeline import (
        as_coefficient_layout,
        normalise_frames_per_speaker,
        per_speaker_frame_statistics,
        speaker_normalised_features,
    )

    config = load_config(args.config, overrides=args.overrides,
                         updates={"data": {"corpus": "emodb", "root": args.root, "cache_dir": args.cache}})  # fmt: skip
    two_stream = args.streams != "image"
    prepared = prepare(config, progress=False, two_stream=two_stream)
    speaker = {r.path: r.speaker for r in prepared.records}

    frame_statistics = (per_speaker_frame_statistics(prepared.records, prepared.frames_features)
                        if two_stream and config.data.normalize == "speaker" else None)
    letter_to_class = {"W": "ang", "F": "hap", "T": "sad", "N": "neu", "L": "bor", "A": "fea", "E": "dis"}

    def statistics(x):
        return np.concatenate([x.mean(2), x.std(2), x.max(2), x.min(2)], axis=1)

    def pooled(paths):
        parts = []
        if args.streams != "frames":
            x = speaker_normalised_features(prepared, paths) if config.data.normalize == "speaker" else prepared.features(paths)
            parts.append(statistics(x))
        if two_stream:
            f = prepared.frames_features(paths)
            if frame_statistics is not None:
                f = normalise_frames_per_speaker(f, [speaker[p] for p in paths], frame_statistics)
            parts.append(statistics(as_coefficient_layout(f)))
        return np.concatenate(parts, axis=1)

    per_fold = {}
    for fold in prepared.folds:
        y_train, y_test = prepared.labels(fold.train), prepared.labels(fold.test)
        for path, y in zip(fold.test, y_test):  # independent label check from the file name
            expected = letter_to_class[Path(path).name[5]]
            if prepared.classes[y] != expected:
                raise SystemExit(f"{path}: label {prepared.classes[y]} != {expected} from its file name")
        clf = make_pipeline(StandardScaler(), LogisticRegression(C=0.1, max_iter=5000))
        clf.fit(pooled(fold.train), y_train)
        per_fold[fold.index] = classification_metrics(y_test, clf.predict(pooled(fold.test)), len(prepared.classes))
    summary = summarise(per_fold, "linear-reference", prepared.classes)
    print(f"machine: {platform.platform()}, {os.cpu_count()} cores; data: EmoDB at {args.root}, "
          f"classes {prepared.classes}, protocol {prepared.protocol}, features {prepared.input_shape} ({args.config}, "
          f"normalisation {config.data.normalize}), streams {args.streams}"
          + (f", frames {prepared.frames_shape}" if two_stream else ""))
    image = feature_extractor_label(config.features)
    what = {"image": f"{image} statistics", "frames": "frame-level feature statistics",
            "both": f"{image} and frame-level feature statistics"}[args.streams]
    print(markdown_table(summary, f"logistic regression on pooled {what}"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
