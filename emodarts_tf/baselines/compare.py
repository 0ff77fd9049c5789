"""Side-by-side comparison of runs (emoDARTS and baselines) from their ``summary.json`` files.

One row per run: UA, WA and macro F1 as mean ± std over folds, parameters, FLOPs of one forward pass for
one example, and the compute the run spent (architecture search + retraining for emoDARTS, tuning +
retraining for a baseline), as a Markdown table and as a grouped bar chart with the std as error bars.
Runs are comparable only on the same corpus, classes and folds; differences are listed under the table.

A run may also be the ``--out`` folder of ``cli/train.py --genotype random:N`` (its ``random_summary.json``):
N random genotypes of the search space retrained with the same recipe. It is shown as a distribution: its
row holds the median over the genotypes of their mean over folds, with [min, max]; a section under the
table gives median, min and max of UA / WA / macro F1 and ranks every other run's mean UA among the random
genotypes' mean UAs ("emoDARTS ranks 2 of 9 (above 7 of 8 random genotypes)").
"""
from __future__ import annotations

import io
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from emodarts_tf.evaluation.random_summary import RANDOM_SUMMARY, load_random_summary
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
    random: dict | None = None  # the random_summary.json of a random-genotype run (None: a plain run)

    @property
    def kind(self) -> str:
        return str(self.summary.get("kind", "?"))

    @property
    def is_random(self) -> bool:
        return self.random is not None

    def metric(self, key: str) -> tuple[float, float]:
        """(mean, std) over folds of a plain run; a random run has a distribution instead (:meth:`spread`)."""
        if self.is_random:
            raise ValueError(f"run {self.name}: a random-genotype run has no single mean ± std; use spread()")
        return float(self.summary[key]["mean"]), float(self.summary[key]["std"])

    def random_means(self, key: str) -> list:
        """The mean over folds of each random genotype that finished every fold."""
        return [float(row[key]["mean"]) for row in _finished_genotypes(self.random)]

    def spread(self, key: str) -> tuple[float, float, float]:
        """(median, min, max) over the random genotypes of their mean ``key``."""
        means = self.random_means(key)
        return float(np.median(means)), float(np.min(means)), float(np.max(means))

    def bar(self, key: str) -> tuple[float, float, float]:
        """(height, lower error, upper error) of the chart: mean ± std, or median with [min, max]."""
        if self.is_random:
            median, low, high = self.spread(key)
            return median, median - low, high - median
        mean, std = self.metric(key)
        return mean, std, std

    @property
    def compute_total(self) -> float | None:
        return float(sum(self.stages.values())) if self.stages else None


def _finished_genotypes(random: dict) -> list:
    finished = set(random.get("finished", []))
    return [row for row in random["genotypes"] if row.get("index") in finished]


def _random_run(path: Path, random: dict) -> Run:
    """A run of the random genotypes of ``random_summary.json``: its summary holds what the table and the
    comparability notes read (folds, classes, corpus, ...); the figures come from the genotypes."""
    finished = _finished_genotypes(random)
    if not finished:
        raise ValueError(f"run {path}: no random genotype has finished every fold yet ({RANDOM_SUMMARY})")
    summary = {
        "kind": "random",
        "classes": random.get("classes"),
        "folds": random.get("folds"),
        "params": None,
        "flops": None,
        "compute_s": dict(random.get("compute_s") or {}),
        "extra": {key: random.get(key) for key in ("corpus", "protocol", "synthetic")},
    }
    stages = {k: float(v) for k, v in summary["compute_s"].items() if v is not None}
    return Run(name="", path=path, summary=summary, stages=stages, random=random)


def load_runs(run_dirs: list, names: list | None = None) -> list[Run]:
    """Read each run's ``summary.json`` (or ``random_summary.json``); a folder without one is an error naming it."""
    if not run_dirs:
        raise ValueError("runs: give at least one run folder")
    if names is not None and len(names) != len(run_dirs):
        raise ValueError(f"--names: {len(names)} name(s) for {len(run_dirs)} run(s); give one per run, in order")
    runs = []
    for i, run_dir in enumerate(run_dirs):
        path = Path(run_dir).expanduser()
        random_path = path / RANDOM_SUMMARY if path.is_dir() else path
        if random_path.name == RANDOM_SUMMARY and random_path.is_file():
            runs.append(_random_run(random_path.parent, load_random_summary(random_path)))
            continue
        summary_path = path / "summary.json" if path.is_dir() or not path.suffix else path
        if not summary_path.is_file():
            if not path.exists():
                raise ValueError(f"run {run_dir}: no such folder")
            raise ValueError(
                f"run {run_dir}: no summary.json in it; give the --out folder of cli/train.py or cli/baseline.py "
                "(a run writes summary.json once a fold has finished; cli/train.py --genotype random:N writes "
                f"{RANDOM_SUMMARY})"
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


def _range(values: list, fmt) -> str:
    values = [v for v in values if v is not None]
    if not values:
        return "n/a"
    low, high = min(values), max(values)
    return fmt(low) if low == high else f"{fmt(low)} – {fmt(high)}"


def comparison_table(runs: list[Run]) -> str:
    header = ["run", "kind", "folds"] + [f"{METRIC_LABELS[k]} (mean ± std)" for k in METRIC_KEYS]
    header += ["params", "FLOPs", "compute", "compute spent on"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for run in runs:
        total, breakdown = format_compute(run)
        cells = [run.name, run.kind, ",".join(str(k) for k in run.summary.get("folds", []))]
        if run.is_random:
            finished = _finished_genotypes(run.random)
            cells[1] = f"random ({len(finished)} genotypes)"
            for key in METRIC_KEYS:
                median, low, high = run.spread(key)
                cells.append(f"median {median:.4f} [{low:.4f}, {high:.4f}]")
            cells += [_range([g.get("params") for g in finished], format_count),
                      _range([g.get("flops") for g in finished], format_flops)]  # fmt: skip
        else:
            for key in METRIC_KEYS:
                mean, std = run.metric(key)
                cells.append(f"{mean:.4f} ± {std:.4f}")
            cells += [format_count(run.summary.get("params")), format_flops(run.summary.get("flops"))]
        cells += [total, breakdown]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def rank_among(value: float, random_values: list) -> dict:
    """Where ``value`` stands among ``random_values`` (higher is better): rank 1 = best of the
    ``len(random_values) + 1``; ``above`` = random values strictly below it, ``tied`` = equal ones."""
    value = float(value)
    higher = sum(1 for v in random_values if float(v) > value)
    tied = sum(1 for v in random_values if float(v) == value)
    return {"value": value, "rank": higher + 1, "of": len(random_values) + 1,
            "above": len(random_values) - higher - tied, "tied": tied, "n_random": len(random_values)}  # fmt: skip


def rank_sentence(name: str, rank: dict) -> str:
    tied = f", tied with {rank['tied']}" if rank["tied"] else ""
    return (f"{name} ranks {rank['rank']} of {rank['of']} (above {rank['above']} of {rank['n_random']} random "
            f"genotypes{tied})")  # fmt: skip


def random_distribution(random_run: Run, runs: list[Run]) -> dict:
    """Median, min, max of each metric over the random genotypes, and each plain run's rank among them."""
    info = random_run.random
    out = {
        "name": random_run.name,
        "path": str(random_run.path),
        "n": info.get("n"),
        "finished": len(_finished_genotypes(info)),
        "complete": bool(info.get("complete")),
        "seed": info.get("seed"),
    }
    for key in METRIC_KEYS:
        median, low, high = random_run.spread(key)
        out[key] = {"median": median, "min": low, "max": high, "means": random_run.random_means(key)}
    out["ranks"] = [
        {"run": run.name, **{key: rank_among(run.metric(key)[0], random_run.random_means(key)) for key in METRIC_KEYS}}
        for run in runs if not run.is_random
    ]
    return out


def random_section(random_run: Run, runs: list[Run]) -> str:
    dist = random_distribution(random_run, runs)
    unfinished = "" if dist["complete"] else f"; only {dist['finished']} of {dist['n']} finished every fold"
    lines = [
        f"\n#### {dist['name']}: {dist['finished']} random genotypes (seed {dist['seed']}{unfinished}), "
        "retrained with the same recipe\n",
        "| metric | median | min | max |",
        "|---|---|---|---|",
    ]
    for key in METRIC_KEYS:
        d = dist[key]
        lines.append(f"| {METRIC_LABELS[key]} | {d['median']:.4f} | {d['min']:.4f} | {d['max']:.4f} |")
    if dist["ranks"]:
        lines.append("\nMean UA of each run among the random genotypes' mean UAs (rank 1 = best):\n")
        lines += [f"- {rank_sentence(r['run'], r['ua'])}" for r in dist["ranks"]]
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
    if any(run.is_random for run in runs):
        parts.append(
            "Random rows: genotypes drawn uniformly from the search space, each retrained like the searched one; "
            "the median over the genotypes of their mean over folds, [min, max]; params and FLOPs: their range; "
            "compute: retraining of all of them.\n"
        )
    for run in runs:
        if run.is_random:
            parts.append(random_section(run, runs))
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
        bars_of = [run.bar(k) for k in METRIC_KEYS]
        heights = [b[0] for b in bars_of]
        errors = [[b[1] for b in bars_of], [b[2] for b in bars_of]]
        offset = (i - (n - 1) / 2) * width
        label = f"{run.name} (random: median, min–max)" if run.is_random else f"{run.name} ({run.kind})"
        bars = ax.bar(x + offset, heights, width, yerr=errors, capsize=3, label=label)
        for bar, height, upper in zip(bars, heights, errors[1]):
            ax.annotate(f"{height:.3f}", (bar.get_x() + bar.get_width() / 2, height + upper), xytext=(0, 2),
                        textcoords="offset points", ha="center", va="bottom", fontsize=7)
    ax.set_xticks(x, labels=[METRIC_LABELS[k] for k in METRIC_KEYS])
    top = max(run.bar(k)[0] + run.bar(k)[2] for run in runs for k in METRIC_KEYS)
    ax.set_ylim(0.0, min(1.05, max(0.1, top * 1.15)))
    ax.set_ylabel("score (mean ± std over folds)" if not any(r.is_random for r in runs)
                  else "score (mean ± std over folds; random: median, min–max)")
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
        rows = []
        for r in runs:
            if r.is_random:
                finished = _finished_genotypes(r.random)
                figures = {k: dict(zip(("median", "min", "max"), r.spread(k))) for k in METRIC_KEYS}
                figures["params"] = [g.get("params") for g in finished]
                figures["flops"] = [g.get("flops") for g in finished]
            else:
                figures = {k: {"mean": r.metric(k)[0], "std": r.metric(k)[1]} for k in METRIC_KEYS}
                figures["params"] = r.summary.get("params")
                figures["flops"] = r.summary.get("flops")
            rows.append({"name": r.name, "path": str(r.path), "kind": r.kind, "folds": r.summary.get("folds"),
                         **figures, "compute_s": r.stages, "compute_total_s": r.compute_total})  # fmt: skip
        document = {"runs": rows, "notes": comparability_notes(runs)}
        random = [random_distribution(r, runs) for r in runs if r.is_random]
        if random:
            document["random"] = random
        written["json"] = write_json(out_dir / "comparison.json", document)
    return markdown, written
