"""Wall time of the search and retraining of one fold (or a few) under config variants, side by side on one
machine.

Usage::

    python benchmarks/bench_fold_time.py --data emodb --root ../shared/data/emodb --protocol emodb5 \\
        --config cpu --fold 1 \\
        --variant grappler=search.graph_optimization=true --variant no-grappler=search.graph_optimization=false

A variant is ``NAME=key=value[,key=value...]`` (``NAME=`` for the config as it is). For each repeat, every
variant runs ``cli/search.py`` on the fold, then ``cli/train.py`` on the genotype it found, each in a fresh
process (the commands a user runs, with their tracing, data loading and file writing); the variants take
turns within a repeat, and the order of the turns alternates between repeats, so that a machine that slows
down or warms up over the run does not favour one of them (``--no-train``: the search only). Reported per
variant (median over repeats):
the search command's wall time, its first epoch (tracing and graph optimisation), its later epochs, its
peak RSS; the retraining command's wall time and its time per epoch; and the validation UA the search
ended with (variants that change how, not what, is computed should differ only by rounding). ``--fold 1,2``
runs both folds in each command, as ``--fold all`` does: the first-epoch and later-epoch figures are then
sums over the folds, the peak RSS the largest, the validation UA the mean.

The feature cache is prepared before the first timed command. Writes a Markdown table (``--out``, default
``benchmarks/results/fold_time.md``) and the raw figures as JSON beside it, with the CPU model and load.
"""
from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from emodarts_tf.utils.machine import machine_info

ROOT = Path(__file__).resolve().parent.parent


def parse_variant(text: str) -> tuple[str, list[str]]:
    from emodarts_tf.config import parse_variant as parse

    try:
        return parse(text)
    except ValueError as exc:
        raise SystemExit(str(exc)) from None


def turn_order(names: list, repeat: int) -> list:
    """The variants' order in repeat ``repeat`` (0-based): as given, reversed in every other repeat."""
    return list(names) if repeat % 2 == 0 else list(reversed(names))


def _run(command: list, log_path: Path) -> float:
    started = time.perf_counter()
    with open(log_path, "w", encoding="utf-8") as log:
        code = subprocess.run(command, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT).returncode
    seconds = time.perf_counter() - started
    if code != 0:
        tail = log_path.read_text(encoding="utf-8", errors="replace")[-2000:]
        raise SystemExit(f"{' '.join(command)} failed with exit status {code} (log {log_path}):\n{tail}")
    return seconds


def parse_folds(text: str) -> list[int]:
    """``"1"`` or ``"1,2"`` -> the fold numbers."""
    try:
        folds = [int(x) for x in str(text).split(",") if x.strip()]
    except ValueError:
        folds = []
    if not folds or min(folds) < 1:
        raise SystemExit(f"--fold {text!r}: expected fold numbers from 1, comma-separated (e.g. 1 or 1,2)")
    return folds


def fold_figures(search_dir: Path, folds) -> dict:
    """The search's figures of one repeat of one variant, from each fold's ``search.json``: sums of the folds'
    first and later epochs, the largest peak RSS, the mean final validation UA."""
    folds = [folds] if isinstance(folds, int) else list(folds)
    searches = [json.loads((search_dir / f"fold{k}" / "search.json").read_text(encoding="utf-8")) for k in folds]
    epochs = [[float(s) for s in search["epoch_seconds"]] for search in searches]
    rss = [search.get("peak_rss_mb") for search in searches if search.get("peak_rss_mb") is not None]
    return {
        "search_first_epoch_s": sum(e[0] for e in epochs),
        "search_later_epochs_s": sum(sum(e[1:]) for e in epochs),
        "search_epochs_s": sum(sum(e) for e in epochs),
        "search_peak_rss_mb": max(rss) if rss else None,
        "search_final_val_ua": statistics.mean(search["final"]["val_ua"] for search in searches),
    }


def train_figures(train_dir: Path, folds) -> dict:
    """The retraining's figures of one repeat of one variant, from each fold's ``metrics.json`` (summed)."""
    folds = [folds] if isinstance(folds, int) else list(folds)
    metrics = [json.loads((train_dir / f"fold{k}" / "metrics.json").read_text(encoding="utf-8")) for k in folds]
    epochs = sum(int(m["epochs_run"]) for m in metrics)
    seconds = sum(float(m["seconds"]) for m in metrics)
    return {"train_epochs": epochs, "train_fit_s": seconds, "train_s_per_epoch": seconds / max(1, epochs)}


def summarise(runs: dict) -> dict:
    """``{variant: {figure: median over repeats}}`` of ``{variant: [figures of each repeat]}``."""
    out = {}
    for name, repeats in runs.items():
        keys = [k for k in repeats[0] if isinstance(repeats[0][k], (int, float))]
        out[name] = {k: statistics.median(float(r[k]) for r in repeats) for k in keys}
        out[name]["repeats"] = len(repeats)
    return out


def markdown(summary: dict, info: dict, variants: dict, title: str) -> str:
    lines = [f"# {title}", "",
             f"Machine: {info.get('cpu_model', 'unknown')}, {info.get('cpus')} CPUs, {info.get('platform')}; "
             f"load average at the start {info.get('load_average')}. Medians over repeats; each command in a "
             "fresh process.", "",
             "| variant | overrides | repeats | search command s | first epoch s | later epochs s | search peak RSS MB "
             "| retrain command s | retrain s / epoch | search final val UA |",
             "|---|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for name, s in summary.items():
        rss = f"{s['search_peak_rss_mb']:.0f}" if s.get("search_peak_rss_mb") is not None else ""
        train = (f"{s['train_command_s']:.0f} | {s['train_s_per_epoch']:.2f}" if "train_command_s" in s
                 else "not run | not run")  # fmt: skip
        lines.append(
            f"| {name} | {', '.join(variants[name]) or '(config as is)'} | {s['repeats']} "
            f"| {s['search_command_s']:.0f} | {s['search_first_epoch_s']:.1f} | {s['search_later_epochs_s']:.1f} "
            f"| {rss} | {train} | {s['search_final_val_ua']:.3f} |"
        )  # fmt: skip
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", required=True)
    parser.add_argument("--root")
    parser.add_argument("--protocol")
    parser.add_argument("--config", default="cpu")
    parser.add_argument("--fold", default="1", help="a fold, or several comma-separated (searched in one command)")
    parser.add_argument("--variant", action="append", default=[], help="NAME=key=value,... (repeatable)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="applied to every variant")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--no-train", action="store_true",
                        help="time the search only (for variants that change only the search)")
    parser.add_argument("--work", help="folder for the runs (default: a temporary one, removed at the end)")
    parser.add_argument("--out", help="Markdown output (JSON beside it)")
    args = parser.parse_args(argv)
    variants = dict(parse_variant(v) for v in (args.variant or ["base="]))
    folds = parse_folds(args.fold)
    fold_arg = ",".join(str(k) for k in folds)
    if args.repeats < 1:
        raise SystemExit(f"--repeats {args.repeats}: expected at least 1")

    common = ["--data", args.data, "--config", args.config]
    common += ["--root", args.root] if args.root else []
    common += ["--protocol", args.protocol] if args.protocol else []
    for item in args.overrides:
        common += ["--set", item]
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="fold_time_"))
    work.mkdir(parents=True, exist_ok=True)
    info = machine_info()
    print("machine:", json.dumps(info), flush=True)
    python = sys.executable
    _run([python, "cli/prepare.py", *common], work / "prepare.log")  # the cache, outside the timed commands
    runs = {name: [] for name in variants}
    for repeat in range(args.repeats):
        for name in turn_order(list(variants), repeat):
            sets = [x for item in variants[name] for x in ("--set", item)]
            search_dir, train_dir = work / f"{name}-{repeat}" / "search", work / f"{name}-{repeat}" / "train"
            for d in (search_dir, train_dir):
                shutil.rmtree(d, ignore_errors=True)
            search_s = _run([python, "cli/search.py", *common, *sets, "--fold", fold_arg,
                             "--out", str(search_dir)], work / f"{name}-{repeat}-search.log")  # fmt: skip
            figures = {"search_command_s": search_s, **fold_figures(search_dir, folds)}
            if not args.no_train:
                figures["train_command_s"] = _run(
                    [python, "cli/train.py", *common, *sets, "--genotype", str(search_dir), "--folds", fold_arg,
                     "--out", str(train_dir)], work / f"{name}-{repeat}-train.log")  # fmt: skip
                figures.update(train_figures(train_dir, folds))
            runs[name].append(figures)
            print(f"{name} (repeat {repeat + 1}): " + ", ".join(
                f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}" for k, v in figures.items()), flush=True)
    summary = summarise(runs)
    title = f"Fold time: {args.data} fold(s) {fold_arg}, --config {args.config}"
    text = markdown(summary, info, variants, title)
    out = Path(args.out) if args.out else ROOT / "benchmarks" / "results" / "fold_time.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text, encoding="utf-8")
    out.with_suffix(".json").write_text(json.dumps({"machine": info, "variants": variants, "runs": runs,
                                                    "summary": summary}, indent=2), encoding="utf-8")  # fmt: skip
    print(text)
    print(f"written: {out}")
    if not args.work:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
