"""Ablation of retraining settings, judged on validation speakers only.

Every variant (a named list of ``--set`` overrides on top of ``--config``) retrains the same genotypes on
the same folds; the figure of merit is the validation UA (speakers held out of each fold's *training*
part), never the test speakers: this script does not print test figures, so nothing is chosen by them.
Two validation figures per run: the UA of the kept model (the selected epoch, optimistic: a maximum over
epochs; or with ``recipe.swa`` the weight average, selected on nothing) and the mean UA of the last 5 epochs'
own weights (how good training ends, without selection). Compare a weight average against selection with
``benchmarks/refit_ablation.py --arm`` on held-out speakers instead.

    python benchmarks/recipe_ablation.py --config cpu --data emodb --root ../shared/data/emodb \
        --genotype random:2 --variant base= --variant ema=recipe.ema=0.99 --out runs/ablation

A variant is ``name=key=value,key=value`` (``name=`` for the config as it is). Reruns reuse finished folds.
``--genotype`` is ``random:N``, a genotype JSON (every fold), or a search output directory: each fold retrains
the genotype its own search selected (as ``cli/train.py --genotype DIR``; a two-stream EmotionNAS search prepares
both streams), so that retraining settings of a searched run are ablated on its cells::

    python benchmarks/recipe_ablation.py --config emotionnas --genotype runs/en/search \
        --variant base= --variant heads=train.stream_heads=0.5 --out runs/en-ablation

Runs of several invocations (say, one genotype seed each) are compared pairwise with ``--table``: every
variant against ``base`` on the same (run, genotype, fold) pairs, validation speakers only::

    python benchmarks/recipe_ablation.py --table runs/ablation-s0 runs/ablation-s1
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from pathlib import Path

import numpy as np

from emodarts_tf.config import parse_variant as config_variant
from emodarts_tf.data.prepare import PREPARE_KEYS
from emodarts_tf.utils.machine import cpu_model


def parse_variant(text: str) -> tuple[str, list[str]]:
    try:
        name, overrides = config_variant(text)
    except ValueError as exc:
        raise SystemExit(str(exc)) from None
    for item in overrides:
        key = item.split("=", 1)[0].strip()
        if key.startswith(PREPARE_KEYS):
            raise SystemExit(f"--variant {text!r}: {key} changes the prepared corpus, which every variant shares; "
                             "give it with --set in a separate --out and compare the runs with --table")
    return name, overrides


def fold_genotypes(spec: str, prepared, folds: list, config, seed: int) -> list[dict]:
    """The genotypes to retrain, each as ``{fold: Genotype}``: for a search output directory one, each fold's own
    searched genotype (checked as ``cli/train.py`` checks it: no leak of the fold's test speakers); for
    ``random:N`` or a genotype JSON file, each genotype on every fold."""
    from emodarts_tf.evaluation.genotype_source import genotypes_for_folds
    from emodarts_tf.search_space.random_genotype import genotypes_from_spec

    if Path(spec).is_dir():
        chosen = genotypes_for_folds(spec, [f for f in prepared.folds if f.index in folds], prepared.corpus,
                                     prepared.protocol, choice="search")  # fmt: skip
        return [{k: c.genotype for k, c in chosen.items()}]
    return [dict.fromkeys(folds, g)
            for g in genotypes_from_spec(spec, config.space, seed, config.search.max_skip)]


def _fold_figures(fold_dir: Path) -> tuple[float, float] | None:
    """(validation UA of the kept model, mean validation UA of the last 5 epochs) of a finished fold."""
    import json

    if not (fold_dir / "metrics.json").is_file():
        return None
    metrics = json.loads((fold_dir / "metrics.json").read_text(encoding="utf-8"))
    history = json.loads((fold_dir / "history.json").read_text(encoding="utf-8"))
    return float(metrics["val"]["ua"]), float(np.mean([row["val_ua"] for row in history[-5:]]))


def paired_table(roots: list[Path], base: str = "base") -> list[str]:
    """Markdown rows: each variant's validation figures over its finished folds of ``roots`` and its paired
    difference from ``base`` on the (run, genotype, fold) triples both finished (never test figures)."""
    figures: dict = {}
    for root in roots:
        for variant in sorted(p for p in root.iterdir() if p.is_dir() and p.name != "data"):
            for fold_dir in sorted(variant.glob("g*/fold*")):
                result = _fold_figures(fold_dir)
                if result is not None:
                    key = (str(root), fold_dir.parent.name, fold_dir.name)
                    figures.setdefault(variant.name, {})[key] = result
    if base not in figures:
        raise SystemExit(f"--table: no finished folds of the variant {base!r} under {[str(r) for r in roots]}")
    lines = ["| variant | folds | val UA, kept model | val UA, last 5 epochs | paired difference from "
             f"{base} (selected / last 5) | better / worse than {base} (selected) |", "|---|---|---|---|---|---|"]
    for name, rows in figures.items():
        keys = sorted(rows)
        selected = np.array([rows[k][0] for k in keys])
        last5 = np.array([rows[k][1] for k in keys])
        common = [k for k in keys if k in figures[base]]
        d_sel = np.array([rows[k][0] - figures[base][k][0] for k in common])
        d_last = np.array([rows[k][1] - figures[base][k][1] for k in common])
        lines.append(f"| {name} | {len(keys)} | {selected.mean():.4f} ± {selected.std():.4f} | "
                     f"{last5.mean():.4f} ± {last5.std():.4f} | {d_sel.mean():+.4f} / {d_last.mean():+.4f} | "
                     f"{int((d_sel > 1e-9).sum())} / {int((d_sel < -1e-9).sum())} |")
    return lines


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "--table":
        roots = [Path(p) for p in sys.argv[2:]]
        if not roots:
            raise SystemExit("--table: name one or more ablation output folders")
        print("\n".join(paired_table(roots)))
        return 0
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="cpu")
    parser.add_argument("--data", default="emodb")
    parser.add_argument("--root", default=str(Path(__file__).resolve().parents[2] / "shared" / "data" / "emodb"))
    parser.add_argument("--genotype", default="random:2",
                        help="random:N (sampled from the config's space), a genotype JSON, or a search output directory "
                             "(each fold its own searched genotype)")
    parser.add_argument("--genotype-seed", type=int, default=0)
    parser.add_argument("--variant", action="append", default=[], help="NAME=key=value,... (repeatable)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="applied to every variant")
    parser.add_argument("--folds", default="all")
    parser.add_argument("--out", default="runs/recipe-ablation")
    args = parser.parse_args()

    from emodarts_tf.config import load_config
    from emodarts_tf.data.pipeline import make_fold_data
    from emodarts_tf.data.prepare import prepare
    from emodarts_tf.evaluation.genotype_source import spec_is_two_stream
    from emodarts_tf.evaluation.trainer import train_genotype_fold
    from emodarts_tf.utils.io import read_json
    from emodarts_tf.utils.logs import setup_logging
    from emodarts_tf.utils.threads import configure_threads

    setup_logging(0)
    logging.getLogger("emodarts_tf.evaluation.fitting").setLevel(logging.WARNING)
    variants = [parse_variant(v) for v in (args.variant or ["base="])]
    base = load_config(args.config, overrides=args.overrides,
                       updates={"data": {"corpus": args.data, "root": args.root}})  # fmt: skip
    configure_threads(base.runtime.inter_op_threads, base.runtime.intra_op_threads)
    prepared = prepare(base, progress=False, two_stream=spec_is_two_stream(args.genotype))  # a search or a genotype JSON
    folds = [f.index for f in prepared.folds] if args.folds == "all" else [int(k) for k in args.folds.split(",")]
    genotypes = fold_genotypes(args.genotype, prepared, folds, base, args.genotype_seed)
    out = Path(args.out)
    rows = []
    for name, overrides in variants:
        config = load_config(args.config, overrides=[*args.overrides, *overrides],
                             updates={"data": {"corpus": args.data, "root": args.root}})  # fmt: skip
        best, last5, seconds = [], [], 0.0
        start = time.perf_counter()
        for g, per_fold in enumerate(genotypes, 1):
            for k in folds:
                fold_dir = out / name / f"g{g}" / f"fold{k}"
                fold_data = make_fold_data(prepared, k, config)
                metrics = train_genotype_fold(per_fold[k], config, fold_data, fold_dir, corpus=prepared.corpus,
                                              protocol=prepared.protocol, genotype_source=f"ablation g{g}")  # fmt: skip
                history = read_json(fold_dir / "history.json")
                best.append(metrics["val"]["ua"])
                last5.append(float(np.mean([row["val_ua"] for row in history[-5:]])))
                seconds += float(metrics.get("seconds", 0.0))
        rows.append((name, overrides, float(np.mean(best)), float(np.std(best)), float(np.mean(last5)),
                     float(np.std(last5)), seconds, time.perf_counter() - start))  # fmt: skip
        print(f"{name}: val UA (kept model) {rows[-1][2]:.4f}, last 5 epochs {rows[-1][4]:.4f}", flush=True)
    print(f"\nmachine: {cpu_model()}, {os.cpu_count()} cores; data: {args.data} at {args.root}, protocol "
          f"{prepared.protocol}, classes {prepared.classes}, features {prepared.input_shape}; config {args.config} "
          f"{' '.join(args.overrides)}; {len(genotypes)} genotype(s) ({args.genotype}, seed {args.genotype_seed}) "
          f"x folds {folds}; validation speakers only\n")  # fmt: skip
    print("| variant | overrides | val UA, kept model | val UA, last 5 epochs | train s |")
    print("|---|---|---|---|---|")
    for name, overrides, b, bs, l5, l5s, secs, _ in rows:
        print(f"| {name} | {' '.join(overrides) or '(config)'} | {b:.4f} ± {bs:.4f} | {l5:.4f} ± {l5s:.4f} | {secs:.0f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
