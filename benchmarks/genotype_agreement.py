"""Do searches with different seeds find the same genotype? Agreement across seeds vs random genotypes.

Takes the output folders of searches that differ only in ``--seed`` (one folder per seed, each with
``fold<k>/genotype_best.json`` or ``genotype.json`` and ``fold<k>/config.yaml``), and per fold computes the
mean pairwise agreement of the seeds' genotypes (``emodarts_tf.search.diagnostics.genotype_agreement``): per
cell kind, the share of ``(node, input)`` edges two genotypes have in common ("edge"), and of
``(node, input, op)`` ("edge+op"); then averages over the folds that every search has.

The same statistic for genotypes drawn uniformly from the same space (``search_space.random_genotype``,
with the searches' ``search.max_skip``) is what agreement means by chance: ``--groups`` draws of as many
random genotypes as there are seeds, for as many folds, give its mean, its 95th percentile and ``p``, the
share of random draws that agree at least as much as the searches (``(1 + count) / (1 + groups)``). Searches
that have learnt something stable agree well above chance; searches whose alphas barely moved from their
uniform start (see the alpha entropy column, from ``alpha_history.json``: 1.0 = uniform) agree at chance.

    python benchmarks/genotype_agreement.py runs/search-s0 runs/search-s1 runs/search-s2 [--which best|final|perturbation]
        [--groups 1000] [--seed 0] [--json runs/agreement.json]

Prints Markdown: the data and the machines (the searches' and this one's), then the tables. No TensorFlow.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
from pathlib import Path

import numpy as np
import yaml

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from emodarts_tf.config import config_from_dict  # noqa: E402
from emodarts_tf.search.diagnostics import genotype_agreement  # noqa: E402
from emodarts_tf.search_space.genotype import CELL_KINDS, Genotype  # noqa: E402
from emodarts_tf.search_space.random_genotype import sample_genotypes, space_of  # noqa: E402

KEYS = ("edge", "edge_op")
ROWS = (*CELL_KINDS, "mean")
GENOTYPE_FILES = {"best": "genotype_best.json", "final": "genotype.json", "perturbation": "genotype_pt.json"}


def _read_json(path: Path):
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None


def load_search(directory: str | Path, which: str = "best") -> dict:
    """``{"dir", "folds": {k: {"genotype", "file", "config", "search", "entropy"}}}`` of one search folder.

    ``which``: ``best`` (``genotype_best.json``, else ``genotype.json``), ``final`` (``genotype.json``) or
    ``perturbation`` (``genotype_pt.json``, ``search.select: perturbation``).
    ``config`` comes from ``fold<k>/config.yaml`` (else ``search.json``'s); ``entropy`` is the last
    ``alpha_history.json`` entry's (None for searches that predate it).
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise ValueError(f"{directory}: not a folder")
    if which not in GENOTYPE_FILES:
        raise ValueError(f"which: expected one of {tuple(GENOTYPE_FILES)}, received {which!r}")
    names = [GENOTYPE_FILES[which]] + (["genotype.json"] if which == "best" else [])
    folds = {}
    for fold_dir in sorted(directory.glob("fold*")):
        suffix = fold_dir.name[len("fold"):]
        if not (fold_dir.is_dir() and suffix.isdigit()):
            continue
        path = next((fold_dir / n for n in names if (fold_dir / n).is_file()), None)
        if path is None:
            continue
        search = _read_json(fold_dir / "search.json") or {}
        if (fold_dir / "config.yaml").is_file():
            raw = yaml.safe_load((fold_dir / "config.yaml").read_text(encoding="utf-8")) or {}
            config = config_from_dict(raw, str(fold_dir / "config.yaml"))
        elif isinstance(search.get("config"), dict):
            config = config_from_dict(search["config"], str(fold_dir / "search.json"))
        else:
            raise ValueError(f"{fold_dir}: no config.yaml or search.json config: cannot tell the search space")
        history = _read_json(fold_dir / "alpha_history.json") or []
        entropy = history[-1].get("entropy") if history and isinstance(history[-1], dict) else None
        folds[int(suffix)] = {"genotype": Genotype.load(path), "file": path.name, "config": config,
                              "search": search, "entropy": entropy}  # fmt: skip
    if not folds:
        raise ValueError(f"{directory}: no fold<k>/ with {' or '.join(names)}")
    return {"dir": str(directory), "folds": folds}


def _space_key(config) -> str:
    return json.dumps({**space_of(config.space), "max_skip": config.search.max_skip}, sort_keys=True)


def group_statistic(groups: list) -> dict:
    """Mean over folds of ``genotype_agreement`` of each fold's genotypes: ``{row: {key: value}}``."""
    per_fold = [genotype_agreement(g) for g in groups]
    return {row: {key: float(np.mean([a[row][key] for a in per_fold])) for key in KEYS} for row in ROWS}


def random_baseline(space, max_skip, seeds: int, folds: int, groups: int, seed: int) -> dict:
    """The statistic of ``groups`` draws of ``folds`` x ``seeds`` random genotypes of ``space``:
    ``{row: {key: {"mean", "p95", "values"}}}``."""
    pool = sample_genotypes(space, groups * folds * seeds, seed, max_skip)
    stats = []
    for r in range(groups):
        block = pool[r * folds * seeds:(r + 1) * folds * seeds]
        stats.append(group_statistic([block[f * seeds:(f + 1) * seeds] for f in range(folds)]))
    out = {}
    for row in ROWS:
        out[row] = {}
        for key in KEYS:
            values = np.array([s[row][key] for s in stats])
            out[row][key] = {"mean": float(values.mean()), "p95": float(np.percentile(values, 95)), "values": values}
    return out


def compare(searches: list, groups: int = 1000, seed: int = 0) -> dict:
    """Agreement of the searches' genotypes per fold and averaged, against random genotypes."""
    if len(searches) < 2:
        raise ValueError(f"expected the folders of at least 2 searches (one per seed), received {len(searches)}")
    common = sorted(set.intersection(*(set(s["folds"]) for s in searches)))
    if not common:
        raise ValueError("the searches have no fold in common: " + "; ".join(
            f"{s['dir']}: folds {sorted(s['folds'])}" for s in searches))
    first = searches[0]["folds"][common[0]]["config"]
    key = _space_key(first)
    for s in searches:
        for k in common:
            if _space_key(s["folds"][k]["config"]) != key:
                raise ValueError(
                    f"{s['dir']} fold {k}: another search space or search.max_skip than {searches[0]['dir']} fold "
                    f"{common[0]}; agreement is only meaningful within one space"
                )
    per_fold = {k: genotype_agreement([s["folds"][k]["genotype"] for s in searches]) for k in common}
    observed = group_statistic([[s["folds"][k]["genotype"] for s in searches] for k in common])
    baseline = random_baseline(first.space, first.search.max_skip, len(searches), len(common), groups, seed)
    p = {row: {key: float((1 + np.sum(baseline[row][key]["values"] >= observed[row][key] - 1e-12)) / (1 + groups))
               for key in KEYS} for row in ROWS}  # fmt: skip
    return {"folds": common, "per_fold": per_fold, "observed": observed, "random": baseline, "p": p}


def _describe_data(searches: list, folds: list, which: str) -> list:
    lines = []
    configs = [s["folds"][k]["config"] for s in searches for k in folds]
    metas = [s["folds"][k]["search"] for s in searches for k in folds]
    c = configs[0]
    corpus = sorted({m.get("corpus") or x.data.corpus for m, x in zip(metas, configs)})
    synthetic = any(m.get("synthetic") for m in metas) or c.data.corpus == "demo"
    seeds = [s["folds"][folds[0]]["config"].seed for s in searches]
    files = sorted({s["folds"][k]["file"] for s in searches for k in folds})
    lines.append(
        f"data: corpus {', '.join(map(str, corpus))}{' (SYNTHETIC)' if synthetic else ''}, protocol "
        f"{metas[0].get('protocol', c.data.protocol)}, folds {', '.join(map(str, folds))} (in all {len(searches)} "
        f"searches), genotypes from {', '.join(files)} (--which {which}); seeds {', '.join(map(str, seeds))}"
    )
    if len(set(seeds)) < len(seeds):
        lines.append("WARNING: some searches share a seed; identical seeds give identical genotypes (agreement 1)")
    epochs = sorted({(x.search.epochs, x.search.warmup_epochs, x.search.order) for x in configs})
    resolved = space_of(c.space)
    lines.append(
        "searches: " + "; ".join(f"{e} epochs ({w} warm-up), {o} order" for e, w, o in epochs)
        + f"; space: {c.space.cnn_cells} CNN cell(s) of {resolved['cnn_nodes']} nodes over {resolved['cnn_ops']}, "
        f"{c.space.seq_cells} SeqNN cell(s) of {resolved['seq_nodes']} nodes over {resolved['seq_ops']}, "
        f"max_skip {c.search.max_skip}"
    )
    devices = []
    for m in metas:
        d = m.get("device")
        if isinstance(d, dict):
            text = (f"{d.get('processor') or d.get('machine')}, {d.get('cpus')} CPUs, "
                    f"{', '.join(d.get('gpus') or []) or 'no GPU'}, TF {d.get('tensorflow')}")  # fmt: skip
            if text not in devices:
                devices.append(text)
    lines.append(f"searched on: {'; '.join(devices) if devices else 'unknown (no search.json)'}")
    lines.append(
        f"this table: {platform.platform()}, {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
        f"Python {platform.python_version()}, numpy {np.__version__}"
    )
    return lines


def _fmt(x) -> str:
    return "n/a" if x is None else f"{x:.3f}"


def render(searches: list, result: dict, which: str, groups: int, seed: int) -> str:
    folds = result["folds"]
    lines = ["# Genotype agreement across seeds vs random genotypes", ""]
    lines += [f"- {line}" for line in _describe_data(searches, folds, which)]
    lines.append(
        f"- random: {groups} draws of {len(searches)} genotypes x {len(folds)} fold(s) from the same space "
        f"(seed {seed}); p = share of draws agreeing at least as much as the searches"
    )
    lines += ["", "Mean pairwise agreement, averaged over the folds (edge: same (node, input); edge+op: same "
              "(node, input, op)):", "",
              "| cell | edge: searched | random mean | random 95% | p "
              "| edge+op: searched | random mean | random 95% | p |",
              "|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for row in ROWS:
        cells = [row]
        for key in KEYS:
            r = result["random"][row][key]
            cells += [_fmt(result["observed"][row][key]), _fmt(r["mean"]), _fmt(r["p95"]),
                      f"{result['p'][row][key]:.3f}"]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "Per fold (searched; edge / edge+op), and the final alphas' normalised entropy (mean over seeds; "
              "1.000 = uniform, the random start):", "",
              "| fold | " + " | ".join(CELL_KINDS) + " | alpha entropy " + " / ".join(CELL_KINDS) + " |",
              "|---|" + "---|" * (len(CELL_KINDS) + 1)]  # fmt: skip
    for k in folds:
        a = result["per_fold"][k]
        entropies = []
        for kind in CELL_KINDS:
            values = [s["folds"][k]["entropy"][kind]["normalized"] for s in searches
                      if (s["folds"][k]["entropy"] or {}).get(kind)]  # fmt: skip
            entropies.append(f"{np.mean(values):.4f}" if len(values) == len(searches) else "n/a")
        agreement = " | ".join(f"{a[kind]['edge']:.3f} / {a[kind]['edge_op']:.3f}" for kind in CELL_KINDS)
        lines.append(f"| {k} | {agreement} | {' / '.join(entropies)} |")
    return "\n".join(lines) + "\n"


def main(argv: list | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("searches", nargs="+", help="search output folders, one per seed (each with fold<k>/)")
    parser.add_argument("--which", choices=tuple(GENOTYPE_FILES), default="best",
                        help="genotype_best.json (default; genotype.json where absent), genotype.json (final) or "
                        "genotype_pt.json (perturbation)")
    parser.add_argument("--groups", type=int, default=1000, help="random draws for the chance level (default 1000)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random genotypes (default 0)")
    parser.add_argument("--json", help="also write the numbers to this JSON file")
    args = parser.parse_args(argv)
    if args.groups < 1:
        parser.error("--groups: expected an integer >= 1")
    try:
        searches = [load_search(d, args.which) for d in args.searches]
        result = compare(searches, args.groups, args.seed)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(render(searches, result, args.which, args.groups, args.seed), end="")
    if args.json:
        out = {
            "searches": args.searches, "which": args.which, "groups": args.groups, "seed": args.seed,
            "folds": result["folds"], "observed": result["observed"], "p": result["p"],
            "per_fold": {str(k): v for k, v in result["per_fold"].items()},
            "random": {row: {key: {"mean": v["mean"], "p95": v["p95"]} for key, v in d.items()}
                       for row, d in result["random"].items()},
        }  # fmt: skip
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(out, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
