"""benchmarks/bench_frames.py on three real EmoDB files: one row per feature kind, with the real shapes."""
from __future__ import annotations

import shutil
import sys


def test_bench_frames_prints_a_row_per_stream(load_benchmark, emodb_root, tmp_path, monkeypatch, capsys):
    bench = load_benchmark("bench_frames")
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for wav in sorted((emodb_root / "wav").glob("*.wav"))[:3]:
        shutil.copy(wav, corpus / wav.name)  # a temporary copy, removed with tmp_path
    monkeypatch.setattr(sys, "argv", ["bench_frames.py", "--root", str(corpus), "--workers", "1"])
    assert bench.main() == 0
    out = capsys.readouterr().out
    rows = {line.split(" | ")[0].strip("| "): line.split(" | ") for line in out.splitlines() if line.startswith("| ")}
    assert rows["openSMILE eGeMAPSv02 LLD (frames)"][1:3] == ["3", "0"]
    assert rows["openSMILE eGeMAPSv02 LLD (frames)"][-1].startswith("(38, 25)")
    assert rows["openSMILE ComParE_2016 LLD (frames)"][-1].startswith("(38, 65)")
    assert rows["spectrogram image (features)"][-1].startswith("(40, 67)")
    assert "3 files" in out and "machine:" in out
