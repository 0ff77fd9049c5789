"""compare: the table shows exactly the figures of the summaries; the chart is written; bad runs are named."""
from __future__ import annotations

import json
import subprocess
import sys

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
