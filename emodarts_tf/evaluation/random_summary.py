"""The summary of N random genotypes retrained with the same recipe (``cli/train.py --genotype random:N``).

``<out>/random_summary.json``::

    {"kind": "random", "seed": S, "n": N, "complete": bool, "finished": [1, 2, ...],
     "corpus": ..., "protocol": ..., "synthetic": bool, "classes": [...], "folds": [1, 2, ...],
     "max_skip": 2, "space": {"cnn_nodes", "seq_nodes", "cnn_ops", "seq_ops"},
     "genotypes": [{"index": 1, "dir": "random1", "folds": [...],
                    "ua": {"mean", "std", "per_fold"}, "wa": {...}, "f1": {...},
                    "params", "flops", "compute_s", "genotype": {...}}, ...],
     "median": {"ua", "wa", "f1"}, "min": {...}, "max": {...},   # over the finished genotypes' means
     "parts_median": {"first_model": {"ua", "wa", "f1"}, "refit_alone": {...}},  # with recipe.refit / .ensemble
     "compute_s": {"train": seconds summed over every genotype and fold},
     "config": {...}}

A genotype counts as finished once every requested fold has finished; the distribution figures
(``median``, ``min``, ``max``) are over the finished genotypes only, ``complete`` says whether all N are.
Under ``recipe.refit`` each genotype's summary also reports its first training's model (``first_model``), and
under ``recipe.ensemble`` the refit alone (``refit_alone``), beside the served model; each genotype row carries
them, and ``parts_median`` holds their medians where every finished genotype has them.
``<out>/random_summary.md`` holds the same figures as a Markdown table.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from emodarts_tf.evaluation.summary import METRIC_KEYS, PARTS
from emodarts_tf.utils.io import atomic_write_text, read_json, write_json

RANDOM_SUMMARY = "random_summary.json"
RANDOM_MARKDOWN = "random_summary.md"
KIND = "random"
_LABELS = {"ua": "UA", "wa": "WA", "f1": "macro F1"}


def random_dir_name(index: int) -> str:
    """The run directory of random genotype ``index`` (1-based) under the ``--out`` folder."""
    return f"random{int(index)}"


def summarise_random(entries: list, n: int, seed: int, folds: list, extra: dict | None = None) -> dict:
    """The random summary from one entry per genotype with a finished run.

    Args:
        entries: ``{"index", "dir", "summary": the genotype's summary.json, "genotype": dict}`` each.
        n: how many genotypes were asked for.
        seed: the seed they were drawn with.
        folds: the folds every genotype trains; a genotype whose summary lacks one is not finished.
        extra: more top-level keys (corpus, protocol, classes, space, max_skip, config, ...).
    """
    folds = sorted(int(k) for k in folds)
    genotypes, finished = [], []
    train_seconds = 0.0
    for entry in sorted(entries, key=lambda e: int(e["index"])):
        summary = entry["summary"]
        train_seconds += float((summary.get("compute_s") or {}).get("train") or 0.0)
        done = set(int(k) for k in summary.get("folds", [])) >= set(folds)
        row = {
            "index": int(entry["index"]),
            "dir": entry["dir"],
            "finished": done,
            "folds": summary.get("folds", []),
            **{key: summary[key] for key in METRIC_KEYS},
            "params": summary.get("params"),
            "flops": summary.get("flops"),
            "compute_s": summary.get("compute_s") or {},
            "genotype": entry.get("genotype"),
            **{part: summary["extra"][part] for part in PARTS if part in (summary.get("extra") or {})},
        }
        genotypes.append(row)
        if done:
            finished.append(row)
    out = {
        "kind": KIND,
        "seed": int(seed),
        "n": int(n),
        "complete": len(finished) == int(n),
        "finished": [row["index"] for row in finished],
        "folds": folds,
        **dict(extra or {}),
        "genotypes": genotypes,
    }
    for stat, fn in (("median", np.median), ("min", np.min), ("max", np.max)):
        out[stat] = {key: float(fn([row[key]["mean"] for row in finished])) if finished else None
                     for key in METRIC_KEYS}  # fmt: skip
    out["parts_median"] = {part: {key: float(np.median([row[part][key]["mean"] for row in finished])) for key in METRIC_KEYS}
                           for part in PARTS if finished and all(part in row for row in finished)}  # fmt: skip
    out["compute_s"] = {"train": round(train_seconds, 1)}
    return out


def random_markdown(summary: dict, title: str | None = None) -> str:
    """One row per genotype (mean ± std over folds), then the median, min and max over the finished ones."""
    lines = [f"### {title}", ""] if title else []
    lines.append("| genotype | folds | UA | WA | macro F1 | params |")
    lines.append("|---|---|---|---|---|---|")
    for row in summary["genotypes"]:
        cells = [f"{row[k]['mean']:.4f} ± {row[k]['std']:.4f}" for k in METRIC_KEYS]
        name = row["dir"] + ("" if row.get("finished", True) else " (unfinished)")
        params = "n/a" if row.get("params") is None else f"{int(row['params']):,}"
        lines.append(f"| {name} | {','.join(str(k) for k in row['folds'])} | " + " | ".join(cells) + f" | {params} |")
    for stat in ("median", "min", "max"):
        values = summary.get(stat) or {}
        cells = ["n/a" if values.get(k) is None else f"{values[k]:.4f}" for k in METRIC_KEYS]
        lines.append(f"| {stat} of the means | | " + " | ".join(cells) + " | |")
    for part, values in (summary.get("parts_median") or {}).items():
        cells = [f"{values[k]:.4f}" for k in METRIC_KEYS]
        lines.append(f"| median of the means, {part.replace('_', ' ')} | | " + " | ".join(cells) + " | |")
    finished = len(summary.get("finished", []))
    lines.append("")
    lines.append(
        f"{finished} of {summary['n']} genotype(s) finished every fold (seed {summary['seed']}); median, min and "
        "max are over their mean UA / WA / macro F1 across folds (std over folds, ddof 0)."
    )
    return "\n".join(lines) + "\n"


def write_random_summary(out_dir: str | Path, summary: dict, title: str | None = None) -> Path:
    out_dir = Path(out_dir)
    write_json(out_dir / RANDOM_SUMMARY, summary)
    atomic_write_text(out_dir / RANDOM_MARKDOWN, random_markdown(summary, title))
    return out_dir / RANDOM_SUMMARY


def load_random_summary(path: str | Path) -> dict:
    """Read ``random_summary.json`` (or the folder holding it); ValueError if it is not one."""
    path = Path(path)
    if path.is_dir():
        path = path / RANDOM_SUMMARY
    summary = read_json(path)
    if not isinstance(summary, dict) or summary.get("kind") != KIND or not isinstance(summary.get("genotypes"), list):
        raise ValueError(f"{path}: not a random-genotype summary (expected kind {KIND!r} and a 'genotypes' list)")
    for row in summary["genotypes"]:
        for key in METRIC_KEYS:
            if key not in row or "mean" not in row[key]:
                raise ValueError(f"{path}: genotype {row.get('dir')!r} lacks {key!r} with 'mean'")
    return summary
