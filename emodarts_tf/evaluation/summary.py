"""Cross-fold summaries shared by retraining (``cli/train.py``) and baselines (``cli/baseline.py``).

``<run>/summary.json``::

    {"kind": "emodarts" | "baseline:<family>", "classes": [...], "folds": [1, 2, ...],
     "ua": {"mean": m, "std": s, "per_fold": {"1": v, ...}}, "wa": {...}, "f1": {...},
     "params": int | null, "flops": int | null,      # of the served model (both networks of a recipe.ensemble pair)
     "compute_s": {"search": s, "train": s, "tuning": s},   # wall-clock seconds each stage spent
     "extra": {...}}     # with recipe.refit also "first_model" (and with recipe.ensemble "refit_alone"): UA/WA/F1
                         # of that model on the same test speakers, as above

``std`` is the population standard deviation over folds (ddof = 0), as numpy and most SER papers report.
``<run>/summary.md`` holds the same figures as a Markdown table.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from emodarts_tf.utils.io import atomic_write_text, read_json, write_json

METRIC_KEYS = ("ua", "wa", "f1")
# The other models a refit fold scores on the test speakers: summary.json "extra" key -> metrics.json "refit" key
# (with recipe.refit the first training's model; with recipe.ensemble also the refit alone).
PARTS = {"first_model": "selection_test", "refit_alone": "refit_test"}


def served_networks(metrics: dict) -> int:
    """How many networks a fold's served model runs: 2 for a ``recipe.ensemble`` pair, else 1."""
    return 2 if (metrics.get("refit") or {}).get("ensemble") else 1


def _over_folds(folds: list, values: list) -> dict:
    """``{"mean", "std", "per_fold"}`` of one figure over the folds (population std)."""
    arr = np.asarray(values, dtype=float)
    return {"mean": float(arr.mean()), "std": float(arr.std()), "per_fold": {str(k): v for k, v in zip(folds, values)}}


def summarise(
    per_fold: dict,
    kind: str,
    classes: list,
    params: int | None = None,
    flops: int | None = None,
    compute_s: dict | None = None,
    extra: dict | None = None,
) -> dict:
    """``per_fold`` maps fold index -> a metrics dict holding at least ``ua``, ``wa`` and ``f1``."""
    if not per_fold:
        raise ValueError("per_fold: no fold results to summarise")
    folds = sorted(int(k) for k in per_fold)
    summary = {"kind": kind, "classes": list(classes), "folds": folds}
    rows = [per_fold[k] if k in per_fold else per_fold[str(k)] for k in folds]
    for key in METRIC_KEYS:
        for k, metrics in zip(folds, rows):
            if key not in metrics:
                raise ValueError(f"fold {k}: metrics lack {key!r}")
        summary[key] = _over_folds(folds, [float(metrics[key]) for metrics in rows])
    summary["params"] = None if params is None else int(params)
    summary["flops"] = None if flops is None else int(flops)
    summary["compute_s"] = dict(compute_s or {})
    summary["extra"] = dict(extra or {})
    # With recipe.refit each fold also scored the first training's model on the test speakers, and with
    # recipe.ensemble the refit alone: their UA/WA/F1 over the folds, beside the served model's above.
    refits = [metrics.get("refit") or {} for metrics in rows]
    for name, key in PARTS.items():
        if all(key in refit for refit in refits):
            summary["extra"][name] = {metric: _over_folds(folds, [float(r[key][metric]) for r in refits])
                                      for metric in METRIC_KEYS}  # fmt: skip
    return summary


def markdown_table(summary: dict, title: str | None = None) -> str:
    lines = []
    if title:
        lines += [f"### {title}", ""]
    lines.append("| fold | UA | WA | macro F1 |")
    lines.append("|---|---|---|---|")
    for k in summary["folds"]:
        row = [f"{summary[m]['per_fold'][str(k)]:.4f}" for m in METRIC_KEYS]
        lines.append(f"| {k} | " + " | ".join(row) + " |")
    mean = [f"{summary[m]['mean']:.4f} ± {summary[m]['std']:.4f}" for m in METRIC_KEYS]
    lines.append("| mean ± std | " + " | ".join(mean) + " |")
    return "\n".join(lines) + "\n"


def write_summary(out_dir: str | Path, summary: dict, title: str | None = None) -> Path:
    out_dir = Path(out_dir)
    write_json(out_dir / "summary.json", summary)
    atomic_write_text(out_dir / "summary.md", markdown_table(summary, title))
    return out_dir / "summary.json"


def load_summary(run_dir: str | Path) -> dict:
    path = Path(run_dir)
    if path.is_dir():
        path = path / "summary.json"
    summary = read_json(path)
    for key in METRIC_KEYS:
        if key not in summary or "mean" not in summary[key]:
            raise ValueError(f"{path}: not a run summary (missing {key!r} with 'mean')")
    return summary
