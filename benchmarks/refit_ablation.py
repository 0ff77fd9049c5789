"""Retraining settings compared on speakers that no arm selects on: a nested check that never touches
the test speakers.

For each outer fold, the fold's validation speakers play the test speakers of an inner fold built from
the fold's training part alone: the remaining training speakers are split again into inner-train and
inner-validation speakers by the same rule (``data.val_fraction``, seed, genders). Every arm retrains the
same genotypes on that inner fold and is scored on the held-out (outer validation) speakers, so a setting
that only wins by selecting on noisy validation figures does not win here. The default arms:

- ``select``: train on inner-train, keep the best inner-validation epoch (``recipe.refit=false``);
- ``refit``: the same, then a fresh model on inner-train + inner-validation for that many epochs
  (``recipe.refit=true``); under a config that serves the pair (``recipe.ensemble``, ``configs/cpu.yaml``) this
  arm serves the mean of both models, and its ``:refit`` row is the refit alone.

``--arm NAME=key=value,...`` (repeatable; ``NAME=`` for the config as it is) replaces them, for instance
``--arm select= --arm swa=recipe.swa=0.5`` for the weight average. The first arm is the reference of the
paired differences.

    python benchmarks/refit_ablation.py --config cpu --root ../shared/data/emodb --genotype random:2 --out runs/refit

``--genotype`` is ``random:N``, a genotype JSON (every fold), or a search output directory: each outer fold's own
searched genotype is retrained on that fold's inner fold (two-stream EmotionNAS genotypes prepare both streams)::

    python benchmarks/refit_ablation.py --config emotionnas --genotype runs/en/search \
        --arm select= --arm swarefit=recipe.swa=0.5,recipe.refit=true --out runs/en/nested

Reruns reuse finished folds. Prints a table per arm and each arm's paired difference from the first. An arm
that refits (``recipe.refit``) also gets a row ``<arm>+avg``: the held-out UA of the average of its two models'
probabilities (the first training's kept model and the refit, from their ``predictions_selection.csv`` and
``predictions.csv``), computed from the saved predictions without training anything more, and a row
``<arm>:first``, the first model alone. An arm that serves that average itself (``recipe.ensemble``, as
``configs/cpu.yaml`` does) gets ``<arm>:first`` and ``<arm>:refit``, the refit alone, instead.
"""
from __future__ import annotations

import argparse
import logging
import os
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from emodarts_tf.utils.machine import cpu_model


class _InnerCorpus:
    """A prepared corpus whose folds are the inner folds (everything else delegated)."""

    def __init__(self, prepared, folds: dict):
        self._prepared = prepared
        self._folds = folds

    def fold(self, index: int):
        return self._folds[index]

    def __getattr__(self, name):
        return getattr(self._prepared, name)


def inner_folds(prepared, config) -> dict:
    """``{k: Fold}``: fold k's training part, its validation speakers as the test speakers."""
    from emodarts_tf.data.pipeline import make_fold_data

    folds = {}
    for fold in prepared.folds:
        outer = make_fold_data(prepared, fold.index, config, speed_copies=False)  # its paths only
        held_out = list(outer.val_speakers)
        folds[fold.index] = replace(
            fold,
            name=f"{fold.name}-inner",
            train_speakers=sorted(set(fold.train_speakers) - set(held_out)),
            test_speakers=held_out,
            train=list(outer.train_paths),
            test=list(outer.val_paths),
        )
    return folds


def parse_arms(texts: list[str]) -> dict:
    """``{name: [key=value, ...]}`` from ``--arm`` texts, in their order; a repeated name is refused."""
    from emodarts_tf.config import parse_variant
    from emodarts_tf.data.prepare import PREPARE_KEYS

    arms = {}
    for text in texts:
        try:
            name, overrides = parse_variant(text)
        except ValueError as exc:
            raise SystemExit(str(exc).replace("--variant", "--arm")) from None
        if name in arms:
            raise SystemExit(f"--arm {text!r}: arm {name!r} is given twice")
        for item in overrides:
            key = item.split("=", 1)[0].strip()
            if key.startswith(PREPARE_KEYS):
                raise SystemExit(f"--arm {text!r}: {key} changes the prepared corpus, which every arm shares; "
                                 "give it with --set to every arm")
        arms[name] = overrides
    return arms


def averaged_ua(fold_dir: Path) -> float | None:
    """UA of the mean of the refit's and the first training's test probabilities (argmax of the mean), or None
    when the fold has no ``predictions_selection.csv`` (an arm without the refit) or already serves the mean
    (``recipe.ensemble``: the arm's own row is that figure)."""
    import csv

    from emodarts_tf.evaluation.fitting import SELECTION_PREDICTIONS_FILE
    from emodarts_tf.evaluation.metrics import classification_metrics
    from emodarts_tf.evaluation.summary import served_networks
    from emodarts_tf.utils.io import read_json

    first = fold_dir / SELECTION_PREDICTIONS_FILE
    metrics = fold_dir / "metrics.json"
    if not first.is_file():
        return None
    if metrics.is_file() and served_networks(read_json(metrics)) == 2:
        return None  # recipe.ensemble: predictions.csv is already the average
    tables = []
    for path in (first, fold_dir / "predictions.csv"):
        with open(path, newline="", encoding="utf-8") as handle:
            tables.append(list(csv.DictReader(handle)))
    columns = [c for c in tables[0][0] if c.startswith("p_")]
    if [r["path"] for r in tables[0]] != [r["path"] for r in tables[1]]:
        raise ValueError(f"{fold_dir}: {SELECTION_PREDICTIONS_FILE} and predictions.csv list different utterances")
    classes = [c[2:] for c in columns]
    labels = np.array([classes.index(r["label"]) for r in tables[0]])
    probs = sum(np.array([[float(r[c]) for c in columns] for r in table]) for table in tables) / 2.0
    return float(classification_metrics(labels, probs.argmax(axis=1), len(classes))["ua"])


# rows derived from an arm's folds: suffix -> what the row scores
DERIVED_ROWS = {"+avg": "(the first model's and the refit's probabilities averaged)",
                ":first": "(the first training's model alone, before the refit)",
                ":refit": "(the refit alone; the arm serves the pair)"}


def derived_scores(metrics: dict, fold_dir: Path) -> dict:
    """A fold's held-out UA of the models an arm with the refit trained besides the one it serves, keyed by the
    suffixes of ``DERIVED_ROWS``: the first model (``refit.selection_test``), the refit alone when the arm serves
    the pair (``refit.refit_test``), or else the pair computed from the saved predictions (``averaged_ua``)."""
    refit = metrics.get("refit") or {}
    out = {}
    if refit.get("selection_test") is not None:
        out[":first"] = float(refit["selection_test"]["ua"])
    if refit.get("refit_test") is not None:
        out[":refit"] = float(refit["refit_test"]["ua"])
    both = averaged_ua(fold_dir)
    if both is not None:
        out["+avg"] = both
    return out


def arm_table(arms: dict, scores: dict, seconds: dict) -> list[str]:
    """Markdown: each arm's held-out UA, then each later arm's paired difference from the first."""
    lines = ["| arm | overrides | held-out UA (mean ± std over genotype x fold) | train s |", "|---|---|---|---|"]
    for arm, overrides in arms.items():
        ua = np.asarray(scores[arm])
        lines.append(f"| {arm} | {' '.join(overrides) or '(config)'} | {ua.mean():.4f} ± {ua.std():.4f} | {seconds[arm]:.0f} |")
    first = next(iter(arms))
    lines.append("")
    for arm in list(arms)[1:]:
        diff = np.asarray(scores[arm]) - np.asarray(scores[first])
        lines.append(f"{arm} - {first}: mean {diff.mean():+.4f}, {arm} better in {int((diff > 0).sum())} of {len(diff)} "
                     f"pairs, worse in {int((diff < 0).sum())}")  # fmt: skip
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="cpu")
    parser.add_argument("--data", default="emodb")
    parser.add_argument("--root", default=str(Path(__file__).resolve().parents[2] / "shared" / "data" / "emodb"))
    parser.add_argument("--genotype", default="random:2",
                        help="random:N (sampled from the config's space), a genotype JSON, or a search output directory "
                             "(each fold its own searched genotype)")
    parser.add_argument("--genotype-seed", type=int, default=0)
    parser.add_argument("--protocol", default=None, help="default: the corpus's (emodb: emodb5)")
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument("--folds", default="all")
    parser.add_argument("--arm", action="append", default=[],
                        help="NAME=key=value,... (repeatable; default: select=recipe.refit=false and "
                             "refit=recipe.refit=true)")
    parser.add_argument("--out", default="runs/refit-ablation")
    args = parser.parse_args()
    arms = parse_arms(args.arm or ["select=recipe.refit=false", "refit=recipe.refit=true"])

    from emodarts_tf.commands.common import config_from_args
    from emodarts_tf.data.pipeline import make_fold_data
    from emodarts_tf.data.prepare import prepare
    from emodarts_tf.evaluation.genotype_source import spec_is_two_stream
    from emodarts_tf.evaluation.trainer import train_genotype_fold
    from emodarts_tf.utils.logs import setup_logging
    from emodarts_tf.utils.threads import configure_threads
    from recipe_ablation import fold_genotypes  # benchmarks/ is the script's own folder, first on sys.path

    setup_logging(0)
    logging.getLogger("emodarts_tf.evaluation.fitting").setLevel(logging.WARNING)
    base = argparse.Namespace(config=args.config, data=args.data, root=args.root, protocol=args.protocol)
    try:
        # threads=False: the pools are sized once, by the first arm's runtime section
        configs = {name: config_from_args(argparse.Namespace(**vars(base), overrides=[*args.overrides, *overrides]),
                                          threads=False)
                   for name, overrides in arms.items()}  # fmt: skip
        config = next(iter(configs.values()))
        configure_threads(config.runtime.inter_op_threads, config.runtime.intra_op_threads)
    except ValueError as exc:
        raise SystemExit(str(exc)) from None
    prepared = prepare(config, progress=False, two_stream=spec_is_two_stream(args.genotype))  # a search or a genotype JSON
    corpus = _InnerCorpus(prepared, inner_folds(prepared, config))
    folds = [f.index for f in prepared.folds] if args.folds == "all" else [int(k) for k in args.folds.split(",")]
    genotypes = fold_genotypes(args.genotype, prepared, folds, config, args.genotype_seed)
    out = Path(args.out)
    scores = {arm: [] for arm in arms}
    seconds = {arm: 0.0 for arm in arms}
    start = time.perf_counter()
    for g, per_fold in enumerate(genotypes, 1):
        for k in folds:
            for arm, arm_config in configs.items():
                fold_data = make_fold_data(corpus, k, arm_config)
                metrics = train_genotype_fold(per_fold[k], arm_config, fold_data, out / arm / f"g{g}" / f"fold{k}",
                                              corpus=prepared.corpus, protocol=prepared.protocol,
                                              genotype_source=f"nested ablation g{g}")  # fmt: skip
                scores[arm].append(metrics["ua"])
                seconds[arm] += float(metrics.get("seconds", 0.0))
                print(f"g{g} fold {k} {arm}: held-out UA {metrics['ua']:.4f} (inner best epoch {metrics['best_epoch']})", flush=True)
                for suffix, ua in derived_scores(metrics, out / arm / f"g{g}" / f"fold{k}").items():
                    scores.setdefault(f"{arm}{suffix}", []).append(ua)
                    seconds.setdefault(f"{arm}{suffix}", 0.0)
                    print(f"g{g} fold {k} {arm}{suffix}: held-out UA {ua:.4f} {DERIVED_ROWS[suffix]}", flush=True)
    print(f"\nmachine: {cpu_model()}, {os.cpu_count()} cores; data: {args.data} at {args.root}, protocol {prepared.protocol}, "
          f"classes {prepared.classes}; config {args.config} {' '.join(args.overrides)}; {len(genotypes)} genotype(s) "
          f"({args.genotype}, seed {args.genotype_seed}) x folds {folds}; scored on each fold's validation speakers "
          f"(test speakers unused); {time.perf_counter() - start:.0f} s\n")  # fmt: skip
    rows = {}
    for arm, overrides in arms.items():  # each arm, then the rows derived from its folds
        rows[arm] = overrides
        for suffix, what in DERIVED_ROWS.items():
            if len(scores.get(f"{arm}{suffix}", [])) == len(scores[arm]):
                rows[f"{arm}{suffix}"] = [what]
    print("\n".join(arm_table(rows, scores, seconds)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
