"""Side-by-side comparison of runs (emoDARTS and baselines) from their ``summary.json`` files.

One row per run: UA, WA and macro F1 as mean ± std over folds, parameters, FLOPs of one forward pass for
one example, and the compute the run spent (architecture search + retraining for emoDARTS, tuning +
retraining for a baseline), as a Markdown table and as a grouped bar chart with the std as error bars.
Runs are comparable only on the same corpus, classes and folds; differences are listed under the table.
"""
from __future__ import annotations

import io
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from emodarts_tf.evaluation.summary import METRIC_KEYS, load_summary
from emodarts_tf.utils.io import atomic_write_bytes, atomic_write_text, write_json

log = logging.getLogger(__name__)

METRIC_LABELS = {"ua": "UA", "wa": "WA", "f1": "macro F1"}
# Compute stages in display order: what the run spent before retraining, then retraining.
STAGES = ("search", "tuning", "train")


@dataclass
class Run:
    """One run's figures, read from its summary."""

    name: str
    path: Path
    summary: dict
    stages: dict = field(default_factory=dict)  # stage -> seconds (only stages the summary reports)

    @property
    def kind(self) -> str:
        return str(self.summary.get("kind", "?"))

    def metric(self, key: str) -> tuple[float, float]:
        return float(self.summary[key]["mean"]), float(self.summary[key]["std"])

    @property
    def compute_total(self) -> float | None:
        return float(sum(self.stages.values())) if self.stages else None


def load_runs(run_dirs: list, names: list | None = None) -> list[Run]:
    """Read each run's ``summary.json``; a folder without one is an error naming it."""
    if not run_dirs:
        raise ValueError("runs: give at least one run folder")
    if names is not None and len(names) != len(run_dirs):
        raise ValueError(f"--names: {len(names)} name(s) for {len(run_dirs)} run(s); give one per run, in order")
    runs = []
    for i, run_dir in enumerate(run_dirs):
        path = Path(run_dir).expanduser()
        summary_path = path / "summary.json" if path.is_dir() or not path.suffix else path
        if not summary_path.is_file():
            if not path.exists():
                raise ValueError(f"run {run_dir}: no such folder")
            raise ValueError(
                f"run {run_dir}: no summary.json in it; give the --out folder of cli/train.py or cli/baseline.py "
                "(a run writes summary.json once a fold has finished)"
            )
        summary = load_summary(summary_path)
        stages = {}
        for stage, seconds in (summary.get("compute_s") or {}).items():
            if seconds is not None:
                stages[stage] = float(seconds)
        run_root = summary_path.parent
        runs.append(Run(name="", path=run_root, summary=summary, stages=stages))
    for i, run in enumerate(runs):
        run.name = names[i] if names is not None else _default_name(run, runs)
    seen = {}
    for run in runs:
        seen[run.name] = seen.get(run.name, 0) + 1
    duplicates = sorted(n for n, c in seen.items() if c > 1)
    if duplicates:
        raise ValueError(f"run names {duplicates} repeat; pass --names with one distinct name per run")
    return runs


def _default_name(run: Run, runs: list[Run]) -> str:
    name = run.path.name or str(run.path)
    if sum(1 for r in runs if (r.path.name or str(r.path)) == name) > 1:
        name = f"{run.path.parent.name}/{name}"
    return name


# ----------------------------------------------------------------------------------------- formatting
def format_count(value) -> str:
    """Exact integer with thousands separators, or n/a."""
    return "n/a" if value is None else f"{int(value):,}"


def format_flops(value) -> str:
    if value is None:
        return "n/a"
    value = float(value)
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if value >= scale:
            return f"{value / scale:.2f} {unit}"
    return f"{value:.0f}"


def format_seconds(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.2f} h"


def format_compute(run: Run) -> tuple[str, str]:
    """(total, breakdown) of the compute a run spent, e.g. ("31.0 min", "search 25.0 min + train 6.0 min")."""
    if not run.stages:
        return "n/a", "n/a"
    ordered = [s for s in STAGES if s in run.stages] + sorted(s for s in run.stages if s not in STAGES)
    breakdown = " + ".join(f"{s} {format_seconds(run.stages[s])}" for s in ordered)
    missing = []
    summary_stages = run.summary.get("compute_s") or {}
    for stage, seconds in summary_stages.items():
        if seconds is None:
            missing.append(stage)
    if missing:
        breakdown += " (" + ", ".join(f"{s} not recorded" for s in missing) + ")"
    return format_seconds(run.compute_total), breakdown


def comparison_table(runs: list[Run]) -> str:
    header = ["run", "kind", "folds"] + [f"{METRIC_LABELS[k]} (mean ± std)" for k in METRIC_KEYS]
    header += ["params", "FLOPs", "compute", "compute spent on"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for run in runs:
        total, breakdown = format_compute(run)
        cells = [run.name, run.kind, ",".join(str(k) for k in run.summary.get("folds", []))]
        for key in METRIC_KEYS:
            mean, std = run.metric(key)
            cells.append(f"{mean:.4f} ± {std:.4f}")
        cells += [format_count(run.summary.get("params")), format_flops(run.summary.get("flops")), total, breakdown]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def comparability_notes(runs: list[Run]) -> list[str]:
    """What differs between the runs in ways that make their figures not directly comparable."""
    notes = []

    def differs(getter, what: str):
        values = {run.name: getter(run) for run in runs}
        if len({repr(v) for v in values.values()}) > 1:
            notes.append(f"{what} differ: " + "; ".join(f"{n}: {v}" for n, v in values.items()))

    differs(lambda r: r.summary.get("folds"), "folds")
    differs(lambda r: r.summary.get("classes"), "classes")
    differs(lambda r: (r.summary.get("extra") or {}).get("corpus"), "corpora")
    differs(lambda r: (r.summary.get("extra") or {}).get("protocol"), "protocols")
    synthetic = [r.name for r in runs if (r.summary.get("extra") or {}).get("synthetic")]
    if synthetic:
        notes.append(f"SYNTHETIC demo corpus: {', '.join(synthetic)}")
    return notes


def comparison_markdown(runs: list[Run], title: str | None = None) -> str:
    parts = [f"### {title}\n" if title else "", comparison_table(runs)]
    notes = comparability_notes(runs)
    parts.append(
        "\nUA: mean per-class recall; WA: accuracy; both over each whole test fold, then mean ± std (ddof 0) "
        "over folds. FLOPs: one forward pass of one example (2 per multiply-add). Compute: wall-clock seconds "
        "of search or tuning plus retraining, summed over folds.\n"
    )
    if notes:
        parts.append("\n" + "\n".join(f"- Not comparable as is: {n}" for n in notes) + "\n")
    return "".join(parts)


# ------------------------------------------------------------------------------------------- figure
def plot_comparison(runs: list[Run], path: str | Path, title: str | None = None) -> Path:
    """Grouped bars: UA, WA, macro F1 per run (mean over folds), the std over folds as error bars."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    n = len(runs)
    x = np.arange(len(METRIC_KEYS))
    width = 0.8 / n
    fig, ax = plt.subplots(figsize=(max(6.0, 1.6 + 1.1 * n * len(METRIC_KEYS) * 0.6), 4.2))
    for i, run in enumerate(runs):
        means = [run.metric(k)[0] for k in METRIC_KEYS]
        stds = [run.metric(k)[1] for k in METRIC_KEYS]
        offset = (i - (n - 1) / 2) * width
        bars = ax.bar(x + offset, means, width, yerr=stds, capsize=3, label=f"{run.name} ({run.kind})")
        for bar, mean, std in zip(bars, means, stds):
            ax.annotate(f"{mean:.3f}", (bar.get_x() + bar.get_width() / 2, mean + std), xytext=(0, 2),
                        textcoords="offset points", ha="center", va="bottom", fontsize=7)
    ax.set_xticks(x, labels=[METRIC_LABELS[k] for k in METRIC_KEYS])
    top = max(run.metric(k)[0] + run.metric(k)[1] for run in runs for k in METRIC_KEYS)
    ax.set_ylim(0.0, min(1.05, max(0.1, top * 1.15)))
    ax.set_ylabel("score (mean ± std over folds)")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8, loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=min(n, 3), frameon=False)
    if title:
        ax.set_title(title, pad=28 + 12 * ((n - 1) // 3))
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return atomic_write_bytes(path, buf.getvalue())


def compare_runs(run_dirs: list, out_dir: str | Path | None = None, names: list | None = None,
                 title: str | None = None) -> tuple[str, dict]:
    """Load the runs, and with ``out_dir`` write ``comparison.md``, ``comparison.png`` and ``comparison.json``.

    Returns (the Markdown, {"md": path, "png": path, "json": path} or {}).
    """
    runs = load_runs(run_dirs, names)
    markdown = comparison_markdown(runs, title)
    written = {}
    if out_dir is not None:
        out_dir = Path(out_dir)
        written["md"] = atomic_write_text(out_dir / "comparison.md", markdown)
        written["png"] = plot_comparison(runs, out_dir / "comparison.png", title)
        rows = [
            {
                "name": r.name,
                "path": str(r.path),
                "kind": r.kind,
                "folds": r.summary.get("folds"),
                **{k: {"mean": r.metric(k)[0], "std": r.metric(k)[1]} for k in METRIC_KEYS},
                "params": r.summary.get("params"),
                "flops": r.summary.get("flops"),
                "compute_s": r.stages,
                "compute_total_s": r.compute_total,
            }
            for r in runs
        ]
        written["json"] = write_json(out_dir / "comparison.json", {"runs": rows, "notes": comparability_notes(runs)})
    return markdown, written
