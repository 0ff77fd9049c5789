"""``train``: retrain a genotype on every fold of a corpus's speaker-independent protocol.

Usage::

    python cli/train.py --data emodb --root ../shared/data/emodb --genotype runs/search-emodb --folds all --out runs/train-emodb
    python cli/train.py --data iemocap --root /data/IEMOCAP_full_release --genotype runs/search-iemocap --out runs/train-iemocap
    python cli/train.py --data demo --genotype configs/genotypes/paper.json --allow-leak --folds 1,3 --epochs 4 --out runs/demo-train

``--genotype`` is one genotype JSON (the same architecture for every fold) or a search output directory
(``cli/search.py --out``) holding one genotype per fold; ``evaluation.genotype_source`` documents the
lookup (by default the genotype each fold's search selected, ``search.select``: best by validation UA or
final or the perturbation-selected one; ``--genotype-choice best|final|perturbation`` overrides it). A genotype whose search saw a fold's test speakers is refused for that fold, with
the reason, unless ``--allow-leak`` is given; a genotype without search meta (typed in from a paper) is
accepted with a warning. A genotype of a search that stopped before its last epoch (killed, no
``search.json`` or fewer ``epochs_done`` than ``epochs``) is refused with the fold directory and the epochs
it ran, unless ``--allow-unfinished`` is given: then it trains with a warning, and the fold's
``model_info.json`` and its entry in ``summary.json``'s ``extra.per_fold`` record ``"unfinished_search":
true`` with the search's epochs (``extra.unfinished_search_folds`` lists those folds).

``--genotype random:N`` draws N genotypes uniformly from the config's search space with the config seed
(``--seed``; ``search_space.random_genotype``: the genotypes the DARTS derivation can produce, skip cap
``search.max_skip`` included) and retrains each exactly as a searched genotype (same config, folds and
recipe): the random-architecture baseline (Li & Talwalkar 2019; Yang et al., ICLR 2020).

Output::

    <out>/config.yaml           the resolved config (a rerun with another config is refused)
    <out>/data/                 records.csv, folds.json, prepared.json of the corpus
    <out>/fold<k>/              the fold's model directory (cli/evaluate.py --model, cli/export.py --model),
                                genotype.json, metrics.json, history.csv/json, learning_curves.png,
                                confusion_matrix.png; checkpoint/ while it trains
    <out>/summary.json, summary.md   UA / WA / macro F1 per fold and mean +- std over the finished folds

With ``--genotype random:N``, instead of ``fold<k>/`` and ``summary.*``::

    <out>/random<i>/            i = 1..N: a train run of random genotype i (genotype.json, fold<k>/,
                                summary.json, summary.md, config.yaml)
    <out>/random_summary.json, random_summary.md   UA / WA / macro F1 per genotype (mean, std, per fold),
                                the median, min and max over the genotypes of their means, seed, N, config

Rerunning the same command after a kill skips the finished folds and resumes the interrupted one from
its last finished epoch. Several hosts may retrain different ``--folds`` into one shared ``--out``: the summaries are
rebuilt from every finished fold on disk under a lock that works across hosts (``utils.index_lock``), and a
final ``--folds all`` skips what is trained and summarises every fold. Exit status 0 on success, 2 on a bad corpus, config, genotype or checkpoint, or a
full disk (one line naming the file it could not write), 3 when another worker of a
``train.strategy=multi_worker`` run was lost (one line naming it; README, Several machines).
"""
from __future__ import annotations

import argparse
import logging
import shutil
from dataclasses import asdict
from pathlib import Path

import yaml

from emodarts_tf.commands.common import (
    add_common_args,
    config_from_args,
    exits_on_full_disk,
    exits_on_lost_worker,
    parse_folds,
)
from emodarts_tf.utils.logs import progress_bars
from emodarts_tf.utils.memory import custom_gradient_names, release_trial

log = logging.getLogger("emodarts_tf.train")

# Config keys that may differ between a run and its resumption (they do not change the results).
_VOLATILE = {("data", "cache_dir"), ("data", "workers"), ("data", "root"), ("data", "lock_timeout_s")}
# The search and baseline sections do not shape a retraining; runtime (thread pools) changes how fast it runs, not
# what it computes (up to rounding), so a run may resume with other thread counts (as a search may, search/runner.py).
_IRRELEVANT_SECTIONS = ("search", "baseline", "runtime")
# What --allow-unfinished records in a fold's model_info.json (GenotypeChoice.unfinished) and its summary entry.
UNFINISHED_KEYS = ("unfinished_search", "search_epochs_done", "search_epochs", "search_dir")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="train",
        description="Retrain a genotype on each fold of a corpus's speaker-independent protocol, "
        "pick each model on validation UA and score its test fold once.",
    )
    add_common_args(parser)
    parser.add_argument("--genotype", required=True,
                        help="a genotype JSON file, a search output directory, or random:N (N genotypes drawn "
                        "uniformly from the search space with --seed, each retrained the same way)")
    parser.add_argument("--genotype-choice", choices=("search", "best", "final", "perturbation"), default="search",
                        help="from a search directory: what each fold's search selected (search.select; default), "
                        "the best genotype by validation UA, the final one, or the perturbation-selected one "
                        "(genotype_pt.json, search.select: perturbation)")
    parser.add_argument("--folds", default="all", help="'all' (default) or fold numbers such as 1,3")
    parser.add_argument("--epochs", type=int, help="training epochs (default: train.epochs of the config)")
    parser.add_argument("--out", required=True, help="output directory (one fold<k>/ per fold and summary.json)")
    parser.add_argument("--allow-leak", action="store_true",
                        help="train a genotype even where its search saw the fold's test speakers (not speaker-independent)")
    parser.add_argument("--allow-unfinished", action="store_true",
                        help="train the genotype of a search that stopped before its last epoch (recorded as "
                        "unfinished_search in model_info.json and the summary)")
    parser.add_argument("--restart", action="store_true",
                        help="discard finished folds and checkpoints in --out and start over")
    return parser


def _comparable(config_dict: dict) -> dict:
    out = {k: v for k, v in config_dict.items() if k not in _IRRELEVANT_SECTIONS}
    if isinstance(out.get("train"), dict):  # where a run executes, not what it computes
        out["train"] = {k: v for k, v in out["train"].items() if k != "strategy"}
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


def _search_seconds_of_source(source) -> tuple[float | None, str | None]:
    """The search seconds of the genotype a fold was trained with, from its ``model_info.json``'s
    ``genotype_source`` (a genotype file; ``genotypes.json[k]`` records none, as when it was chosen)."""
    from emodarts_tf.evaluation.genotype_source import _search_seconds as search_seconds

    if not isinstance(source, str) or not source.endswith(".json"):
        return None, None
    return search_seconds(Path(source))


def _summarise(out: Path, prepared, choices: dict, config, show: bool = False, kind: str = "emodarts",
               label: str = "emoDARTS", extra: dict | None = None) -> dict | None:
    """Rebuild ``<out>/summary.json`` and ``summary.md`` from every finished fold of ``out`` (its
    ``metrics.json``), not only the folds of this process: several hosts may train other folds into one
    shared ``--out`` (``cli/train.py --folds k`` each). The rebuild holds the run folder's index lock, writes
    atomically and checks again after the write (``utils.index_lock.rebuild_index``). A fold trained by
    another process (not in ``choices``) gets its genotype note and search seconds from its
    ``model_info.json``. Returns the summary, or None when no fold has finished."""
    from emodarts_tf.evaluation.summary import markdown_table, write_summary
    from emodarts_tf.utils.index_lock import rebuild_index
    from emodarts_tf.utils.io import read_json

    def finished() -> list:
        return sorted(f.index for f in prepared.folds if (out / f"fold{f.index}" / "metrics.json").is_file())

    def indexed() -> list:
        if not finished():  # nothing to write (a summary of folds removed since is left as it is)
            return []
        try:
            summary = read_json(out / "summary.json")
        except ValueError:
            return []
        return sorted(int(k) for k in summary.get("folds", [])) if isinstance(summary, dict) else []

    def write() -> tuple | None:
        summary = _build_summary(out, prepared, choices, config, kind=kind, extra=extra)
        if summary is None:
            return None
        tag = " (SYNTHETIC demo corpus)" if prepared.synthetic else ""
        title = f"{label} on {prepared.corpus}{tag}, protocol {prepared.protocol}: {len(summary['folds'])} fold(s)"
        write_summary(out, summary, title=title)
        return summary, title

    written = rebuild_index(out, write, finished, indexed, what="summary.json")
    if written is None:
        return None
    summary, title = written
    if show:
        log.info("summary (%s):\n%s", out / "summary.json", markdown_table(summary, title))
    return summary


def _build_summary(out: Path, prepared, choices: dict, config, kind: str, extra: dict | None) -> dict | None:
    from emodarts_tf.evaluation.summary import served_networks, summarise
    from emodarts_tf.utils.io import read_json

    per_fold, complexity, extra_folds = {}, {}, {}
    search_seconds, seen = 0.0, set()
    for fold in prepared.folds:
        fold_dir = out / f"fold{fold.index}"
        if not (fold_dir / "metrics.json").is_file():
            continue
        metrics = read_json(fold_dir / "metrics.json")
        per_fold[fold.index] = metrics
        info = read_json(fold_dir / "model_info.json") if (fold_dir / "model_info.json").is_file() else {}
        if info.get("complexity"):  # one network's; a recipe.ensemble pair serves two
            complexity[fold.index] = {key: None if value is None else value * served_networks(metrics)
                                      for key, value in info["complexity"].items() if key in ("params", "flops")}
        choice = choices.get(fold.index)
        note = choice.note if choice is not None else info.get("genotype_note")
        if choice is not None:
            seconds, key = choice.search_seconds, choice.search_key
        else:  # trained by another process (another host's --folds)
            seconds, key = _search_seconds_of_source(info.get("genotype_source"))
        if seconds is not None and key not in seen:
            seen.add(key)
            search_seconds += seconds
        extra_folds[str(fold.index)] = {
            "n": metrics.get("n"),
            "best_epoch": metrics.get("best_epoch"),
            "epochs_run": metrics.get("epochs_run"),
            "val_ua": (metrics.get("val") or {}).get("ua"),
            "test_speakers": metrics.get("test_speakers"),
            "val_speakers": metrics.get("val_speakers"),
            "seconds": metrics.get("seconds"),
            "genotype_source": info.get("genotype_source"),
            **({"note": note} if note else {}),
            # Set by --allow-unfinished: the genotype's search stopped before its last epoch.
            **{key: info[key] for key in UNFINISHED_KEYS if key in info},
        }
    if not per_fold:
        return None
    unfinished = sorted(int(k) for k, entry in extra_folds.items() if entry.get("unfinished_search"))
    params = flops = None
    if complexity:
        params_list = [c.get("params") for c in complexity.values() if c.get("params") is not None]
        flops_list = [c.get("flops") for c in complexity.values() if c.get("flops") is not None]
        params = round(sum(params_list) / len(params_list)) if params_list else None
        flops = round(sum(flops_list) / len(flops_list)) if flops_list else None
    train_seconds = sum(float(m.get("seconds") or 0.0) for m in per_fold.values())
    return summarise(
        per_fold,
        kind=kind,
        classes=list(prepared.classes),
        params=params,
        flops=flops,
        # A random genotype had no search at all (not an unrecorded one).
        compute_s={**({} if kind == "random" else {"search": round(search_seconds, 1) if seen else None}),
                   "train": round(train_seconds, 1)},
        extra={
            "corpus": prepared.corpus,
            "protocol": prepared.protocol,
            "synthetic": bool(prepared.synthetic),
            "folds_of_protocol": [f.index for f in prepared.folds],
            "per_fold": extra_folds,
            "complexity_per_fold": {str(k): v for k, v in complexity.items()},
            "train": asdict(config.train),
            **({"unfinished_search_folds": unfinished} if unfinished else {}),
            **dict(extra or {}),
        },
    )


def _restart(out: Path) -> None:
    """Remove what a previous run wrote into ``out`` (fold runs, random runs, summaries, config, prepared data)."""
    children = list(out.glob("fold*")) + [p for p in out.glob("random*") if p.is_dir() and p.name[6:].isdigit()]
    children.append(out / "data")
    names = ("summary.json", "summary.md", "config.yaml", "random_summary.json", "random_summary.md")
    children += [out / name for name in names]
    for child in children:
        if child.is_dir():
            shutil.rmtree(child)
        elif child.exists():
            child.unlink()


def _check_mode(out: Path, random: bool) -> None:
    """Refuse to mix a run of one genotype (``fold<k>/``) and random genotypes (``random<i>/``) in one ``--out``."""
    folds = sorted(p.name for p in out.glob("fold*") if p.is_dir())
    randoms = sorted(p.name for p in out.glob("random*") if p.is_dir() and p.name[6:].isdigit())
    if random and folds:
        raise ValueError(
            f"{out} holds a run of one genotype ({', '.join(folds)}); random:N writes random<i>/ folders: choose "
            "another --out, or pass --restart to start over"
        )
    if not random and randoms:
        raise ValueError(
            f"{out} holds random-genotype runs ({', '.join(randoms)}); pass random:N again to resume them, "
            "choose another --out, or pass --restart to start over"
        )


def _train_run(out: Path, config, prepared, folds: list, genotype_spec, *, allow_leak: bool, choice: str,
               show: bool = True, kind: str = "emodarts", label: str = "emoDARTS", extra: dict | None = None,
               allow_unfinished: bool = False):
    """Retrain ``genotype_spec`` (a file or search directory) on ``folds`` into ``out``; the summary or None.

    A finished fold is skipped and an interrupted one resumed from its checkpoint."""
    from emodarts_tf.data.pipeline import make_fold_data
    from emodarts_tf.evaluation.genotype_source import genotypes_for_folds
    from emodarts_tf.evaluation.trainer import train_genotype_fold
    from emodarts_tf.utils.io import read_json, write_json

    # Every fold's genotype is resolved and checked before anything trains.
    choices = genotypes_for_folds(
        genotype_spec,
        [prepared.fold(k) for k in folds],
        prepared.corpus,
        prepared.protocol,
        allow_leak=allow_leak,
        choice=choice,
        allow_unfinished=allow_unfinished,
    )
    for i, k in enumerate(folds, 1):
        choice_k = choices[k]
        fold_dir = out / f"fold{k}"
        log.info("=== fold %d (%d/%d): genotype %s", k, i, len(folds), choice_k.source)
        cells = {key: v for key, v in choice_k.genotype.to_dict().items() if key != "meta"}
        if (fold_dir / "genotype.json").is_file():
            before = {key: v for key, v in read_json(fold_dir / "genotype.json").items() if key != "meta"}
            if before != cells:
                raise ValueError(
                    f"{fold_dir} was trained (or started) with another genotype than {choice_k.source}; "
                    "pass the same --genotype to resume, --restart to start over, or another --out"
                )
        else:
            fold_dir.mkdir(parents=True, exist_ok=True)
            write_json(fold_dir / "genotype.json", choice_k.genotype.to_dict())
        if (fold_dir / "metrics.json").is_file():
            log.info("fold %d: finished earlier; skipped", k)
            continue
        fold_data = make_fold_data(prepared, k, config)
        before = custom_gradient_names()
        train_genotype_fold(
            choice_k.genotype,
            config,
            fold_data,
            fold_dir,
            resume=True,
            corpus=prepared.corpus,
            protocol=prepared.protocol,
            genotype_source=choice_k.source,
            # unfinished: None for a finished search; the note, for a summary rebuilt by another process
            extra_info={**(choice_k.unfinished or {}), **({"genotype_note": choice_k.note} if choice_k.note else {})},
        )
        release_trial(before)  # the fold's model is saved; free it and its traced graphs before the next one
        _summarise(out, prepared, choices, config, kind=kind, label=label, extra=extra)
    return _summarise(out, prepared, choices, config, show=show, kind=kind, label=label, extra=extra)


def _train_random(out: Path, config, prepared, folds: list, n: int) -> dict | None:
    """Draw ``n`` random genotypes (seed ``config.seed``) and retrain each into ``out/random<i>/`` as
    :func:`_train_run` retrains a searched one; write ``random_summary.json`` / ``.md``; the random summary,
    or None when no genotype finished a fold."""
    from emodarts_tf.evaluation.random_summary import random_dir_name, summarise_random, write_random_summary
    from emodarts_tf.search_space.genotype import Genotype
    from emodarts_tf.search_space.random_genotype import sample_genotypes, space_of
    from emodarts_tf.utils.io import read_json

    seed, max_skip = int(config.seed), config.search.max_skip
    genotypes = sample_genotypes(config.space, n, seed, max_skip)
    # Every genotype is drawn and checked against what is on disk before anything trains.
    for genotype in genotypes:
        path = out / random_dir_name(genotype.meta["index"]) / "genotype.json"
        if path.is_file():
            before = Genotype.load(path)
            if before.to_dict() != genotype.to_dict():
                raise ValueError(
                    f"{path} holds another genotype than random:{n} with seed {seed} draws for it (another seed or "
                    "search space?); rerun with the same --seed and config to resume, --restart to start over, "
                    "or another --out"
                )
    tag = " (SYNTHETIC demo corpus)" if prepared.synthetic else ""
    title = (f"{n} random genotypes (seed {seed}) on {prepared.corpus}{tag}, protocol {prepared.protocol}: "
             f"fold(s) {','.join(str(k) for k in folds)}")  # fmt: skip
    extra = {
        "corpus": prepared.corpus,
        "protocol": prepared.protocol,
        "synthetic": bool(prepared.synthetic),
        "classes": list(prepared.classes),
        "max_skip": max_skip,
        "space": space_of(config.space),
        "config": config.to_dict(),
    }

    def entries() -> list:
        found = []
        for genotype in genotypes:
            run_dir = out / random_dir_name(genotype.meta["index"])
            if (run_dir / "summary.json").is_file():
                found.append({"index": genotype.meta["index"], "dir": run_dir.name, "genotype": genotype.to_dict(),
                              "summary": read_json(run_dir / "summary.json")})  # fmt: skip
        return found

    def write() -> dict | None:
        found = entries()
        if not found:
            return None
        summary = summarise_random(found, n, seed, folds, extra)
        write_random_summary(out, summary, title)
        return summary

    def finished() -> list:  # per genotype, the folds its own summary holds
        return sorted((int(e["index"]), sorted(e["summary"].get("folds", []))) for e in entries())

    def indexed() -> list:
        if not finished():
            return []
        try:
            summary = read_json(out / "random_summary.json")
        except ValueError:
            return []
        rows = summary.get("genotypes", []) if isinstance(summary, dict) else []
        return sorted((int(row["index"]), sorted(row.get("folds", []))) for row in rows)

    def summarise_all() -> dict | None:
        # Rebuilt from every random<i>/summary.json under the folder's index lock and checked after the
        # write, as summary.json is (hosts may retrain other folds of the same random:N into one --out).
        from emodarts_tf.utils.index_lock import rebuild_index

        return rebuild_index(out, write, finished, indexed, what="random_summary.json")

    for genotype in genotypes:
        index = genotype.meta["index"]
        run_dir = out / random_dir_name(index)
        log.info("=== random genotype %d/%d (seed %d): %s", index, n, seed, run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        _check_run_config(run_dir, config)
        path = run_dir / "genotype.json"
        if not path.is_file():
            genotype.save(path)
        _train_run(run_dir, config, prepared, folds, path, allow_leak=False, choice="best", show=False,
                   kind="random", label=f"random genotype {index} (seed {seed})",
                   extra={"random": {"seed": seed, "index": index, "n": n}})  # fmt: skip
        summarise_all()
    summary = summarise_all()
    if summary is not None:
        from emodarts_tf.evaluation.random_summary import random_markdown

        log.info("random summary (%s):\n%s", out / "random_summary.json", random_markdown(summary, title))
    return summary


@exits_on_full_disk("train", "free some space, then rerun the same command: finished folds are kept and the "
                    "interrupted one resumes from its last checkpoint")
@exits_on_lost_worker("train", "Restart every worker with the same TF_CONFIG and the same command: finished "
                      "folds are kept and the interrupted one resumes from its last checkpoint")
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        config = config_from_args(args, epochs_key="train.epochs")
        from emodarts_tf.utils.cluster import start_strategies, sync_workers, worker_output_dir
        from emodarts_tf.utils.runtime import STRATEGIES

        if config.train.strategy not in STRATEGIES:
            raise ValueError(f"train.strategy: expected one of {STRATEGIES}, received {config.train.strategy!r}")
        # train.strategy=multi_worker: the strategy must exist before TensorFlow runs anything.
        start_strategies(config.train.strategy)
    except ValueError as exc:
        log.error("%s", exc)
        return 2
    # The chief writes under --out; another worker of a multi-worker cluster into a temporary copy of it.
    with worker_output_dir(Path(args.out)) as written:
        status = _train(args, config, written)
        if status == 0:
            sync_workers()  # no worker leaves while another still writes
        return status


def _train(args, config, out: Path) -> int:
    try:
        from emodarts_tf.data.prepare import prepare
        from emodarts_tf.evaluation.genotype_source import spec_is_two_stream
        from emodarts_tf.search_space.random_genotype import parse_random_spec

        random_n = parse_random_spec(args.genotype)
        if args.restart and out.exists():
            _restart(out)
        out.mkdir(parents=True, exist_ok=True)
        _check_mode(out, random_n is not None)
        _check_run_config(out, config)
        two_stream = random_n is None and spec_is_two_stream(args.genotype)
        prepared = prepare(config, out_dir=out / "data", progress=progress_bars(), two_stream=two_stream,
                           resuming=True)
        folds = parse_folds(args.folds, [f.index for f in prepared.folds])
        if random_n is not None:
            summary = _train_random(out, config, prepared, folds, random_n)
            written = (out / "random_summary.json", out / "random_summary.md")
        else:
            method = {"kind": "emotionnas", "label": "EmotionNAS"} if two_stream else {}
            summary = _train_run(out, config, prepared, folds, args.genotype, allow_leak=args.allow_leak,
                                 choice=args.genotype_choice, allow_unfinished=args.allow_unfinished,
                                 **method)  # fmt: skip
            written = (out / "summary.json", out / "summary.md")
    except ValueError as exc:
        log.error("%s", exc)
        return 2
    if summary is None:
        log.error("no fold finished")
        return 2
    log.info("wrote %s and %s", *written)
    return 0
