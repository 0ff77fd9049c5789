"""benchmarks/gpu_check.sh and the flags it passes: without a GPU it exits 0 at once saying nothing was
measured; every command it would run parses (bench_search.py's driver is run with its worker replaced, so the
specs its workers would get are checked: paper configuration, batch 64, both orders, XLA and mixed precision
on and off); with a GPU, a small retraining throughput run uses it (skipped without one)."""
from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
import time

import pytest

needs_bash = pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")


def _gpu_visible() -> bool:
    import tensorflow as tf

    return bool(tf.config.list_physical_devices("GPU"))


@needs_bash
def test_without_a_gpu_the_script_says_so_and_exits_0(project_root, tmp_path):
    out = tmp_path / "results"
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "GPU_CHECK_OUT": str(out)}
    started = time.monotonic()
    proc = subprocess.run(["bash", str(project_root / "benchmarks" / "gpu_check.sh")], capture_output=True,
                          text=True, env=env, timeout=60)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "no GPU visible" in proc.stdout and "nothing measured" in proc.stdout
    assert time.monotonic() - started < 30
    assert not out.exists()  # nothing started, nothing written


@needs_bash
def test_every_command_of_the_script_parses(project_root, tmp_path, monkeypatch, load_benchmark):
    env = {**os.environ, "GPU_CHECK_DRY_RUN": "1", "GPU_CHECK_OUT": str(tmp_path / "gc")}
    proc = subprocess.run(["bash", str(project_root / "benchmarks" / "gpu_check.sh")], capture_output=True,
                          text=True, env=env, timeout=120, cwd=tmp_path)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    lines = [line[len("would run: "):] for line in proc.stdout.splitlines() if line.startswith("would run: ")]
    search = [shlex.split(line) for line in lines if "bench_search.py" in line]
    train = [shlex.split(line) for line in lines if "bench_train.py" in line]
    assert len(search) == 4 and len(train) == 2

    bench = load_benchmark("bench_search")
    specs = []

    def fake_run_config(spec, timeout, max_rss_gb):
        specs.append({**spec, "timeout": timeout})
        return [{**spec, "order": o, "step_median_s": 1.0, "first_step_s": 2.0, "step_s": [1.0], "peak_rss_gb": 1.0,
                 "peak_gpu_gb": 3.0, "params": 10, "device": "GPU"} for o in spec["orders"]]  # fmt: skip

    monkeypatch.setattr(bench, "run_config", fake_run_config)
    monkeypatch.setattr(bench, "_gpu_visible", lambda: "a GPU")  # the driver's GPU branch (no extra batch 64 run)
    monkeypatch.setattr(bench, "machine_info", lambda: {"cpus": 1})
    monkeypatch.setattr(bench, "calibrate", lambda n=2048: {"error": "not run"}, raising=False)
    for argv in search:
        argv = argv[argv.index(next(a for a in argv if a.endswith("bench_search.py"))) + 1:]
        out_at = argv.index("--out") + 1
        argv[out_at] = str(tmp_path / os.path.basename(argv[out_at]))
        assert bench.main(argv) == 0
    assert [(s["jit"], s["mixed_precision"]) for s in specs] == [(False, False), (False, True), (True, False), (True, True)]
    for spec in specs:
        assert spec["batch"] == 64 and spec["orders"] == ["first", "second"] and spec["steps"] >= 1
        assert spec["step_lock"].endswith("steps.lock") and spec["timeout"] <= 450
        assert {k: spec[k] for k in ("n_mfcc", "frames", "init_channels", "cnn_cells", "seq_cells")} == \
            {k: bench.PAPER[k] for k in ("n_mfcc", "frames", "init_channels", "cnn_cells", "seq_cells")}  # fmt: skip
    written = json.loads((tmp_path / "search_b64_mixed_xla.json").read_text())
    assert len(written["results"]) == 2 and "XLA" in (tmp_path / "search_b64_mixed_xla.md").read_text()

    trainer = load_benchmark("bench_train")
    parsed = [trainer.build_parser().parse_args(argv[argv.index(next(a for a in argv if a.endswith("bench_train.py"))) + 1:])
              for argv in train]  # fmt: skip
    assert [(a.batch, a.mixed_precision, a.jit, a.config) for a in parsed] == [(64, False, False, "paper"),
                                                                              (64, True, False, "paper")]


@pytest.mark.gpu
def test_retraining_throughput_on_the_gpu(project_root, tmp_path):
    if not _gpu_visible():
        pytest.skip("no GPU visible")
    out = tmp_path / "train.json"
    proc = subprocess.run([sys.executable, str(project_root / "benchmarks" / "bench_train.py"), "--config", "demo", "--input",
                           "32x32", "--batch", "16", "--steps", "2", "--mixed-precision", "--out", str(out)],
                          capture_output=True, text=True, timeout=300, cwd=project_root)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(out.read_text())
    assert result["device"] == "GPU" and result["precision"] == "mixed_float16"
    assert result["utterances_per_s"] > 0 and result["peak_gpu_gb"] >= 0
