"""``train``: retrain a genotype on every fold of a corpus's speaker-independent protocol.

Usage::

    python cli/train.py --data emodb --root ../shared/data/emodb --genotype runs/search-emodb --folds all --out runs/train-emodb
    python cli/train.py --data iemocap --root /data/IEMOCAP_full_release --genotype runs/search-iemocap --out runs/train-iemocap
    python cli/train.py --data demo --genotype configs/genotypes/paper.json --allow-leak --folds 1,3 --epochs 4 --out runs/demo-train

``--genotype`` is one genotype JSON (the same architecture for every fold) or a search output directory
(``cli/search.py --out``) holding one genotype per fold; ``evaluation.genotype_source`` documents the
lookup (the best genotype by validation UA of each fold's search by default, ``--genotype-choice final``
for the last epoch's). A genotype whose search saw a fold's test speakers is refused for that fold, with
the reason, unless ``--allow-leak`` is given; a genotype without search meta (typed in from a paper) is
accepted with a warning.

Output::

    <out>/config.yaml           the resolved config (a rerun with another config is refused)
    <out>/data/                 records.csv, folds.json, prepared.json of the corpus
    <out>/fold<k>/              the fold's model directory (cli/evaluate.py --model, cli/export.py --model),
                                genotype.json, metrics.json, history.csv/json, learning_curves.png,
                                confusion_matrix.png; checkpoint/ while it trains
    <out>/summary.json, summary.md   UA / WA / macro F1 per fold and mean +- std over the finished folds

Rerunning the same command after a kill skips the finished folds and resumes the interrupted one from
its last finished epoch. Exit status 0 on success, 2 on a bad corpus, config, genotype or checkpoint.
"""
from __future__ import annotations

import argparse
import logging
import shutil
from dataclasses import asdict
from pathlib import Path

import yaml

from emodarts_tf.commands.common import add_common_args, config_from_args, parse_folds

log = logging.getLogger("emodarts_tf.train")

# Config keys that may differ between a run and its resumption (they do not change the results).
_VOLATILE = {("data", "cache_dir"), ("data", "workers"), ("data", "root")}
_IRRELEVANT_SECTIONS = ("search", "baseline")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="train",
        description="Retrain a genotype on each fold of a corpus's speaker-independent protocol, "
        "pick each model on validation UA and score its test fold once.",
    )
    add_common_args(parser)
    parser.add_argument("--genotype", required=True, help="a genotype JSON file, or a search output directory")
    parser.add_argument("--genotype-choice", choices=("best", "final"), default="best",
                        help="from a search directory: the best genotype by validation UA (default) or the final one")
    parser.add_argument("--folds", default="all", help="'all' (default) or fold numbers such as 1,3")
    parser.add_argument("--epochs", type=int, help="training epochs (default: train.epochs of the config)")
    parser.add_argument("--out", required=True, help="output directory (one fold<k>/ per fold and summary.json)")
    parser.add_argument("--allow-leak", action="store_true",
                        help="train a genotype even where its search saw the fold's test speakers (not speaker-independent)")
    parser.add_argument("--restart", action="store_true",
                        help="discard finished folds and checkpoints in --out and start over")
    return parser


def _comparable(config_dict: dict) -> dict:
    out = {k: v for k, v in config_dict.items() if k not in _IRRELEVANT_SECTIONS}
    out["data"] = {k: v for k, v in out.get("data", {}).items() if ("data", k) not in _VOLATILE}
    return out


def _check_run_config(out: Path, config) -> None:
    """Refuse to mix results of two configs in one output directory."""
    from emodarts_tf.config import save_config
    from emodarts_tf.evaluation.fitting import diff_keys

    path = out / "config.yaml"
    current = _comparable(config.to_dict())
    if path.is_file():
        previous = _comparable(yaml.safe_load(path.read_text(encoding="utf-8")) or {})
        differing = diff_keys(previous, current)
        if differing:
            raise ValueError(
                f"{out} holds a run with another config (differing: {', '.join(differing[:12])}); rerun with the "
                f"same config to resume, pass --restart to start over, or choose another --out"
            )
    else:
        save_config(config, path)


def _summarise(out: Path, prepared, choices: dict, config, show: bool = False) -> dict | None:
    from emodarts_tf.evaluation.summary import markdown_table, summarise, write_summary
    from emodarts_tf.utils.io import read_json

    per_fold, complexity, extra_folds = {}, {}, {}
    for fold in prepared.folds:
        fold_dir = out / f"fold{fold.index}"
        if not (fold_dir / "metrics.json").is_file():
            continue
        metrics = read_json(fold_dir / "metrics.json")
        per_fold[fold.index] = metrics
        info = read_json(fold_dir / "model_info.json") if (fold_dir / "model_info.json").is_file() else {}
        if info.get("complexity"):
            complexity[fold.index] = info["complexity"]
        extra_folds[str(fold.index)] = {
            "n": metrics.get("n"),
            "best_epoch": metrics.get("best_epoch"),
            "epochs_run": metrics.get("epochs_run"),
            "val_ua": (metrics.get("val") or {}).get("ua"),
            "test_speakers": metrics.get("test_speakers"),
            "val_speakers": metrics.get("val_speakers"),
            "seconds": metrics.get("seconds"),
            "genotype_source": info.get("genotype_source"),
            **({"note": choices[fold.index].note} if fold.index in choices and choices[fold.index].note else {}),
        }
    if not per_fold:
        return None
    params = flops = None
    if complexity:
        params_list = [c.get("params") for c in complexity.values() if c.get("params") is not None]
        flops_list = [c.get("flops") for c in complexity.values() if c.get("flops") is not None]
        params = round(sum(params_list) / len(params_list)) if params_list else None
        flops = round(sum(flops_list) / len(flops_list)) if flops_list else None
    search_seconds, seen = 0.0, set()
    for choice in choices.values():
        if choice.search_seconds is not None and choice.search_key not in seen:
            seen.add(choice.search_key)
            search_seconds += choice.search_seconds
    train_seconds = sum(float(m.get("seconds") or 0.0) for m in per_fold.values())
    summary = summarise(
        per_fold,
        kind="emodarts",
        classes=list(prepared.classes),
        params=params,
        flops=flops,
        compute_s={"search": round(search_seconds, 1) if seen else None, "train": round(train_seconds, 1)},
        extra={
            "corpus": prepared.corpus,
            "protocol": prepared.protocol,
            "synthetic": bool(prepared.synthetic),
            "folds_of_protocol": [f.index for f in prepared.folds],
            "per_fold": extra_folds,
            "complexity_per_fold": {str(k): v for k, v in complexity.items()},
            "train": asdict(config.train),
        },
    )
    tag = " (SYNTHETIC demo corpus)" if prepared.synthetic else ""
    title = f"emoDARTS on {prepared.corpus}{tag}, protocol {prepared.protocol}: {len(per_fold)} fold(s)"
    write_summary(out, summary, title=title)
    if show:
        log.info("summary (%s):\n%s", out / "summary.json", markdown_table(summary, title))
    return summary


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        config = config_from_args(args, epochs_key="train.epochs")
        from emodarts_tf.data.pipeline import make_fold_data
        from emodarts_tf.data.prepare import prepare
        from emodarts_tf.evaluation.genotype_source import genotypes_for_folds
        from emodarts_tf.evaluation.trainer import train_genotype_fold

        out = Path(args.out)
        if args.restart and out.exists():
            for child in list(out.glob("fold*")) + [out / "summary.json", out / "summary.md", out / "config.yaml"]:
                if child.is_dir():
                    shutil.rmtree(child)
                elif child.exists():
                    child.unlink()
        out.mkdir(parents=True, exist_ok=True)
        _check_run_config(out, config)
        prepared = prepare(config, out_dir=out / "data")
        folds = parse_folds(args.folds, [f.index for f in prepared.folds])
        # Every fold's genotype is resolved and checked before anything trains.
        choices = genotypes_for_folds(
            args.genotype,
            [prepared.fold(k) for k in folds],
            prepared.corpus,
            prepared.protocol,
            allow_leak=args.allow_leak,
            choice=args.genotype_choice,
        )
        from emodarts_tf.utils.io import read_json, write_json

        for i, k in enumerate(folds, 1):
            choice = choices[k]
            fold_dir = out / f"fold{k}"
            log.info("=== fold %d (%d/%d): genotype %s", k, i, len(folds), choice.source)
            cells = {key: v for key, v in choice.genotype.to_dict().items() if key != "meta"}
            if (fold_dir / "genotype.json").is_file():
                before = {key: v for key, v in read_json(fold_dir / "genotype.json").items() if key != "meta"}
                if before != cells:
                    raise ValueError(
                        f"{fold_dir} was trained (or started) with another genotype than {choice.source}; "
                        "pass the same --genotype to resume, --restart to start over, or another --out"
                    )
            else:
                fold_dir.mkdir(parents=True, exist_ok=True)
                write_json(fold_dir / "genotype.json", choice.genotype.to_dict())
            if (fold_dir / "metrics.json").is_file():
                log.info("fold %d: finished earlier; skipped", k)
                continue
            fold_data = make_fold_data(prepared, k, config)
            train_genotype_fold(
                choice.genotype,
                config,
                fold_data,
                fold_dir,
                resume=True,
                corpus=prepared.corpus,
                protocol=prepared.protocol,
                genotype_source=choice.source,
            )
            _summarise(out, prepared, choices, config)
        summary = _summarise(out, prepared, choices, config, show=True)
    except ValueError as exc:
        log.error("%s", exc)
        return 2
    if summary is None:
        log.error("no fold finished")
        return 2
    log.info("wrote %s and %s", out / "summary.json", out / "summary.md")
    return 0
