"""compare: the table shows exactly the figures of the summaries; the chart is written; bad runs are named."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from emodarts_tf.baselines.compare import compare_runs, format_flops
from emodarts_tf.commands.compare import main as compare_main
from emodarts_tf.evaluation.summary import summarise, write_summary


def _write_run(path, kind, uas, was, f1s, params, flops, compute):
    per_fold = {k: {"ua": ua, "wa": wa, "f1": f1} for k, ua, wa, f1 in zip((1, 2, 3), uas, was, f1s)}
    summary = summarise(per_fold, kind=kind, classes=["ang", "hap", "neu", "sad"], params=params, flops=flops,
                        compute_s=compute, extra={"corpus": "emodb", "protocol": "emodb5"})
    write_summary(path, summary)
    return summary


@pytest.fixture
def two_runs(tmp_path):
    darts = _write_run(tmp_path / "darts", "emodarts", [0.70, 0.80, 0.75], [0.72, 0.78, 0.74], [0.69, 0.79, 0.73],
                       123456, 7_890_000, {"search": 1800.0, "train": 600.0})
    base = _write_run(tmp_path / "cnn", "baseline:cnn", [0.60, 0.62, 0.64], [0.61, 0.63, 0.65], [0.58, 0.60, 0.62],
                      98765, 4_321_000_000, {"tuning": 90.0, "train": 20.0})
    return tmp_path, darts, base


def _row(markdown, name):
    for line in markdown.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if cells and cells[0] == name:
            return cells
    raise AssertionError(f"no row {name!r} in\n{markdown}")


def test_table_numbers_equal_the_summaries(two_runs):
    root, darts, base = two_runs
    markdown, written = compare_runs([root / "darts", root / "cnn"], out_dir=root / "cmp")
    for name, summary in (("darts", darts), ("cnn", base)):
        row = _row(markdown, name)
        assert row[1] == summary["kind"] and row[2] == "1,2,3"
        for cell, key in zip(row[3:6], ("ua", "wa", "f1")):
            mean, std = (float(v) for v in cell.split("±"))
            assert mean == pytest.approx(summary[key]["mean"], abs=5e-5)
            assert std == pytest.approx(summary[key]["std"], abs=5e-5)
        assert int(row[6].replace(",", "")) == summary["params"]
    assert _row(markdown, "darts")[7] == "7.89 M" and _row(markdown, "cnn")[7] == "4.32 G"
    assert _row(markdown, "darts")[8] == "40.0 min" and _row(markdown, "darts")[9] == "search 30.0 min + train 10.0 min"
    assert _row(markdown, "cnn")[8] == "110 s" and _row(markdown, "cnn")[9] == "tuning 90 s + train 20 s"
    png = written["png"].read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000
    assert written["md"].read_text() == markdown
    rows = json.loads(written["json"].read_text())["runs"]
    assert rows[0]["compute_total_s"] == 2400.0 and rows[1]["ua"]["mean"] == pytest.approx(0.62)
    assert "Not comparable" not in markdown


def test_names_and_comparability_notes(two_runs, tmp_path):
    root, _, _ = two_runs
    _write_run(tmp_path / "other", "baseline:lstm", [0.5, 0.5], [0.5, 0.5], [0.5, 0.5], None, None, {"tuning": None, "train": 5.0})
    markdown, _ = compare_runs([root / "darts", tmp_path / "other"], names=["emoDARTS", "LSTM"])
    assert _row(markdown, "LSTM")[6] == "n/a" and "tuning not recorded" in _row(markdown, "LSTM")[9]
    assert "folds differ" in markdown
    with pytest.raises(ValueError, match="1 name"):
        compare_runs([root / "darts", root / "cnn"], names=["only-one"])
    assert format_flops(950) == "950"


def test_run_without_summary_is_named(tmp_path, two_runs, capsys):
    root, _, _ = two_runs
    empty = tmp_path / "not-a-run"
    empty.mkdir()
    with pytest.raises(ValueError, match="not-a-run: no summary.json"):
        compare_runs([root / "darts", empty])
    assert compare_main([str(root / "darts"), str(empty), "--out", str(tmp_path / "x")]) == 2
    assert compare_main([str(root / "darts"), str(root / "cnn"), "--out", str(tmp_path / "ok")]) == 0
    out = capsys.readouterr().out
    assert out.startswith("| run |") and (tmp_path / "ok" / "comparison.png").is_file()


def test_cli_script_is_thin(project_root, two_runs, tmp_path):
    root, _, _ = two_runs
    result = subprocess.run(
        [sys.executable, str(project_root / "cli" / "compare.py"), str(root / "darts"), str(root / "cnn"), "--out", str(tmp_path / "c")],
        capture_output=True, text=True, cwd=project_root, timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "| darts | emodarts |" in result.stdout


# ------------------------------------------------------------------------- random genotypes (random:N)
RANDOM_UAS = [0.60, 0.61, 0.63, 0.66, 0.68, 0.70, 0.72, 0.80]  # mean UA of each random genotype (3 folds)


def _write_random(path, uas, unfinished: int = 0, seed: int = 5):
    """A ``cli/train.py --genotype random:N`` folder: per genotype, folds at mean UA ± 0.02; plus
    ``unfinished`` genotypes that lack fold 3 (not counted in the distribution)."""
    from emodarts_tf.evaluation.random_summary import summarise_random, write_random_summary

    entries = []
    for i, ua in enumerate(list(uas) + [0.99] * unfinished, 1):
        folds = (1, 2, 3) if i <= len(uas) else (1, 2)
        values = {1: ua - 0.02, 2: ua, 3: ua + 0.02}
        per_fold = {k: {"ua": values[k], "wa": values[k] + 0.01, "f1": values[k] - 0.01} for k in folds}
        summary = summarise(per_fold, kind="random", classes=["ang", "hap", "neu", "sad"], params=1000 + i,
                            flops=2_000_000 * i, compute_s={"train": 10.0},
                            extra={"corpus": "emodb", "protocol": "emodb5"})  # fmt: skip
        write_summary(path / f"random{i}", summary)
        entries.append({"index": i, "dir": f"random{i}", "summary": summary, "genotype": None})
    n = len(uas) + unfinished
    extra = {"corpus": "emodb", "protocol": "emodb5", "synthetic": False, "classes": ["ang", "hap", "neu", "sad"]}
    write_random_summary(path, summarise_random(entries, n, seed, [1, 2, 3], extra))
    return path


def _rank_reference(value, randoms):
    """Rank 1 = best of the run and the random genotypes; computed by sorting, not by counting."""
    ordered = sorted(list(randoms) + [value], reverse=True)
    return ordered.index(value) + 1, sum(1 for r in randoms if r < value)


def test_random_genotypes_as_a_distribution(two_runs):
    root, darts, base = two_runs
    _write_random(root / "rand", RANDOM_UAS)
    markdown, written = compare_runs([root / "darts", root / "cnn", root / "rand"], out_dir=root / "cmp",
                                     names=["emoDARTS", "CNN", "random"])  # fmt: skip
    means = {"ua": RANDOM_UAS, "wa": [u + 0.01 for u in RANDOM_UAS], "f1": [u - 0.01 for u in RANDOM_UAS]}
    row = _row(markdown, "random")
    assert row[1] == "random (8 genotypes)" and row[2] == "1,2,3"
    for cell, key in zip(row[3:6], ("ua", "wa", "f1")):
        assert cell == (f"median {np.median(means[key]):.4f} [{min(means[key]):.4f}, {max(means[key]):.4f}]")
    assert row[6] == "1,001 – 1,008" and row[7] == "2.00 M – 16.00 M" and row[9] == "train 80 s"
    assert float(_row(markdown, "emoDARTS")[3].split("±")[0]) == pytest.approx(darts["ua"]["mean"], abs=5e-5)
    section = markdown[markdown.index("#### random"):]
    assert "8 random genotypes (seed 5)" in section
    assert f"| UA | {np.median(RANDOM_UAS):.4f} | 0.6000 | 0.8000 |" in section
    for name, summary in (("emoDARTS", darts), ("CNN", base)):
        rank, above = _rank_reference(summary["ua"]["mean"], RANDOM_UAS)
        assert f"- {name} ranks {rank} of 9 (above {above} of 8 random genotypes)\n" in section
    assert "emoDARTS ranks 2 of 9 (above 7 of 8 random genotypes)" in section  # 0.75: only 0.80 above it
    assert "Not comparable" not in markdown

    document = json.loads(written["json"].read_text())
    rows = {r["name"]: r for r in document["runs"]}
    assert rows["random"]["kind"] == "random" and rows["random"]["ua"]["median"] == pytest.approx(np.median(RANDOM_UAS))
    assert rows["emoDARTS"]["ua"]["mean"] == pytest.approx(darts["ua"]["mean"])
    (dist,) = document["random"]
    assert dist["n"] == 8 and dist["finished"] == 8 and dist["seed"] == 5
    assert dist["ua"]["means"] == pytest.approx(RANDOM_UAS) and dist["f1"]["min"] == pytest.approx(0.59)
    ranks = {r["run"]: r for r in dist["ranks"]}
    assert ranks["emoDARTS"]["ua"] == {"value": pytest.approx(0.75), "rank": 2, "of": 9, "above": 7, "tied": 0,
                                       "n_random": 8}  # fmt: skip
    assert ranks["CNN"]["ua"]["rank"] == _rank_reference(base["ua"]["mean"], RANDOM_UAS)[0]
    assert ranks["CNN"]["wa"]["rank"] == _rank_reference(base["wa"]["mean"], means["wa"])[0]
    png = written["png"].read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000


def test_random_distribution_counts_only_finished_genotypes_and_ties(tmp_path, two_runs):
    from emodarts_tf.baselines.compare import rank_among, rank_sentence

    root, _, _ = two_runs
    _write_random(tmp_path / "rand", RANDOM_UAS[:3], unfinished=2)  # two genotypes lack fold 3 (mean UA 0.99)
    markdown, _ = compare_runs([tmp_path / "rand" / "random_summary.json", root / "darts"], names=["r", "d"])
    assert _row(markdown, "r")[1] == "random (3 genotypes)"
    assert "3 random genotypes (seed 5; only 3 of 5 finished every fold)" in markdown
    assert f"| UA | {np.median(RANDOM_UAS[:3]):.4f} | 0.6000 | {RANDOM_UAS[2]:.4f} |" in markdown
    assert "d ranks 1 of 4 (above 3 of 3 random genotypes)" in markdown  # 0.99 of the unfinished ones ignored
    tie = rank_among(0.7, [0.6, 0.7, 0.8, 0.7])
    assert tie == {"value": 0.7, "rank": 2, "of": 5, "above": 1, "tied": 2, "n_random": 4}
    assert rank_sentence("x", tie) == "x ranks 2 of 5 (above 1 of 4 random genotypes, tied with 2)"
    # A random folder alone: the distribution without ranks; one with no finished genotype is named.
    alone, _ = compare_runs([tmp_path / "rand"])
    assert "#### rand: 3 random genotypes" in alone and "ranks" not in alone
    _write_random(tmp_path / "none", [], unfinished=1)
    with pytest.raises(ValueError, match="none: no random genotype has finished every fold"):
        compare_runs([tmp_path / "none"])
