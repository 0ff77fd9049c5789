"""Machine description and GEMM calibration (emodarts_tf/utils/machine.py)."""
from __future__ import annotations

import itertools

import pytest

from emodarts_tf.utils.machine import DENSE_MATH_FLAGS, cpu_flags, cpu_model, gemm_flops, gemm_gflops, time_gflops

SAPPHIRE_RAPIDS = """processor\t: 0
vendor_id\t: GenuineIntel
model name\t: Intel(R) Xeon(R) Platinum 8481C CPU @ 2.70GHz
flags\t\t: fpu vme sse sse2 ssse3 fma cx16 sse4_1 sse4_2 avx f16c avx2 avx512f avx512dq avx512bw avx512vl \
avx512_vnni avx512_bf16 avx512_fp16 avx_vnni amx_bf16 amx_tile amx_int8 arch_capabilities

processor\t: 1
model name\t: Intel(R) Xeon(R) Platinum 8481C CPU @ 2.70GHz
flags\t\t: fpu sse
"""
ARM = """processor\t: 0
BogoMIPS\t: 50.00
Features\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp
CPU implementer\t: 0x41
"""


def test_cpu_flags_parsed_from_cpuinfo_in_fixed_order():
    assert cpu_flags(SAPPHIRE_RAPIDS) == [
        "sse4_2", "avx", "avx2", "fma", "f16c", "avx512f", "avx512dq", "avx512bw", "avx512vl", "avx512_vnni",
        "avx512_bf16", "avx512_fp16", "avx_vnni", "amx_tile", "amx_bf16", "amx_int8",
    ]  # fmt: skip
    assert cpu_model(SAPPHIRE_RAPIDS) == "Intel(R) Xeon(R) Platinum 8481C CPU @ 2.70GHz"


def test_cpu_flags_empty_without_x86_flags():
    assert cpu_flags(ARM) == []
    assert cpu_flags("") == []


def test_cpu_flags_of_this_machine_are_known_flags():
    assert set(cpu_flags()) <= set(DENSE_MATH_FLAGS)
    assert cpu_model()


def test_gflops_is_2n3_over_the_median_time_of_a_fake_clock():
    assert gemm_flops(2048) == 2 * 2048**3
    # Each run() takes 0.5, 0.25, 1.0 s on the fake clock (after one untimed warm-up): median 0.5 s.
    durations = iter([0.5, 0.25, 1.0])
    now = itertools.count()
    ticks = []

    def clock():
        if len(ticks) % 2 == 0:
            ticks.append(float(next(now)))
        else:
            ticks.append(ticks[-1] + next(durations))
        return ticks[-1]

    calls = []
    result = time_gflops(lambda: calls.append(1), gemm_flops(1000), repeats=3, warmup=1, clock=clock)
    assert len(calls) == 4
    assert result["times_s"] == [0.5, 0.25, 1.0]
    assert result["median_s"] == 0.5
    assert result["gflops"] == pytest.approx(2 * 1000**3 / 0.5 / 1e9)  # 4.0


def test_time_gflops_rejects_no_repeats():
    with pytest.raises(ValueError, match="repeats"):
        time_gflops(lambda: None, 1, repeats=0)


def test_gemm_gflops_small_matrices():
    result = gemm_gflops(n=128, repeats=2, warmup=1)
    assert result["n"] == 128
    assert result["tf_gflops"] > 0 and result["numpy_gflops"] > 0
    assert len(result["tf_times_s"]) == 2
