"""benchmarks/bench_search.py's machine-relative figures, on hand-made results (no benchmark is run)."""
from __future__ import annotations

import pytest


@pytest.fixture(scope="module")
def bench(load_benchmark):
    return load_benchmark("bench_search")


def _result(bench, **extra):
    return {**bench.QUICK, "order": "first", "step_median_s": 0.5, "first_step_s": 10.0, "peak_rss_gb": 1.0,
            "params": 1000, "device": "CPU", **extra}  # fmt: skip


def test_gemm_reference_fraction_and_markdown(bench):
    info = {"cpu_model": "Test CPU", "cpu_flags": "avx2 fma avx512f",
            "gemm": {"n": 2048, "tf_gflops": 100.0, "numpy_gflops": 90.0, "numpy_blas": "openblas"},
            "gemm_after": {"n": 2048, "tf_gflops": 80.0}}  # fmt: skip
    assert bench.gemm_reference(info) == 90.0
    assert bench.gemm_spread(info) == pytest.approx(20 / 90)
    results = [_result(bench, step_gflop=9.0, achieved_gflops=18.0), _result(bench, order="second")]
    bench.add_gemm_fractions(results, bench.gemm_reference(info))
    assert results[0]["gemm_fraction"] == 0.2 and results[0]["gemm_gflops"] == 90.0
    assert "gemm_fraction" not in results[1]  # not counted: no fraction
    text = bench.markdown(results, info, "test")
    assert "Instruction sets: avx2 fma avx512f" in text
    assert "TF 100.0 GFLOP/s, numpy 90.0 GFLOP/s (openblas)" in text and "reference for '% of GEMM': 90.0" in text
    assert "| 9.0 | 18.0 (20.0 %) |" in text
    assert "differ by" not in text  # 22 %: under the warning's 25 %
    header, rule = [line for line in text.splitlines() if line.startswith("| order") or line.startswith("|---")]
    assert header.count("|") == rule.count("|")
    for line in text.splitlines():
        if line.startswith("| first") or line.startswith("| second"):
            assert line.count("|") == header.count("|")


def test_drifting_calibrations_are_flagged(bench):
    info = {"gemm": {"n": 8, "tf_gflops": 100.0}, "gemm_after": {"n": 8, "tf_gflops": 20.0}}
    assert "differ by 133 %" in bench.markdown([], info, "test")
    assert bench.gemm_reference({"gemm": {"error": "timed out"}}) is None


def test_reference_per_machine_kind_sets_the_verdict(bench):
    kind, ref = bench.reference_for("Intel(R) Xeon(R) Platinum 8480+")
    assert kind == "Intel Xeon" and ref["seconds"] == 89.2
    assert bench.reference_for("AMD EPYC 9R14")[1]["seconds"] == 85.7
    kind, ref = bench.reference_for("Apple M2")
    assert "none for this CPU" in kind and ref is bench.REFERENCE
    paper = {**bench.PAPER, "order": "second", "peak_rss_gb": 7.3, "device": "CPU"}
    # 65 s: within 3/4 of the Xeon's 89.2 s (66.9 s), not of the EPYC's 85.7 s (64.3 s)
    assert bench.verdict({**paper, "step_median_s": 65.0}, bench.reference_for("Intel Xeon")[1]).endswith("met")
    assert bench.verdict({**paper, "step_median_s": 65.0}, bench.reference_for("AMD EPYC")[1]).endswith("MISSED")
    assert bench.verdict({**paper, "order": "first", "step_median_s": 29.0}, ref).endswith("MISSED")  # > 85.7 / 3
    info = {"cpu_model": "Intel(R) Xeon(R) Processor"}
    text = bench.markdown([_result(bench, threads="2/1")], info, "t")
    assert "Reference (Intel Xeon)" in text and "<= 66.9 s" in text and "| 2/1 |" in text


def test_thread_settings_are_shown_only_when_set(bench):
    assert not any("threads" in v for v in bench._variations(bench.PAPER))
    spec = bench._apply_sets(bench.PAPER, ["intra_op_threads=0", "inter_op_threads=2"])
    assert "threads inter/intra 2/TF" in bench.describe({**spec, "order": "first"})


def test_a_reference_timed_side_by_side_replaces_the_stored_one(bench):
    paper = {**bench.PAPER, "order": "second", "batch": 16, "device": "CPU", "step_median_s": 66.0,
             "first_step_s": 80.0, "peak_rss_gb": 7.4, "params": 1}  # fmt: skip
    # 66 s: over 3/4 of the stored EPYC figure (85.7 s -> 64.3 s), within 3/4 of 90.2 s (67.65 s)
    assert bench.verdict(paper, bench.reference_for("AMD EPYC")[1]).endswith("MISSED")
    kind, ref = bench.side_by_side_reference(90.2, 22.67, "AMD EPYC")
    assert kind == "timed side by side" and bench.verdict(paper, ref) == f"{66.0 / 90.2:.2f}x ref time; target met"
    text = bench.markdown([paper], {"cpu_model": "AMD EPYC"}, "test", (kind, ref))
    assert "Reference (timed side by side): PyTorch emoDARTS" in text and "90.2 s/step, 22.67 GB" in text
    assert "second-order <= 67.7 s" in text
    assert "90.2 s/step. Targets" in bench.markdown([paper], {}, "t", bench.side_by_side_reference(90.2, None, None))
    for bad in ((0.0, None), (-1.0, None), (90.0, 0.0)):
        with pytest.raises(SystemExit, match="expected a"):
            bench.side_by_side_reference(*bad, "AMD EPYC")
