"""What machine a benchmark ran on, and how fast its dense fp32 math is.

The CPU model and its instruction sets matter: the search step's time differs 2x between CPU kinds.
:func:`gemm_gflops` measures the machine's fp32 matrix-product throughput in the running process (the
figure a benchmark's achieved GFLOP/s is compared with, so that step times measured on different
machines compare); :func:`cpu_flags` lists the instruction sets that dense math uses; :func:`machine_info` is
what the benchmarks record of the machine.
"""
from __future__ import annotations

import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Callable

# Instruction-set flags (as /proc/cpuinfo spells them) that matter for dense fp32/bf16/int8 math, in order
# of introduction: SSE4.2, AVX, AVX2 + FMA, AVX-512 (foundation, DQ, BW, VL), its VNNI / BF16 / FP16
# extensions, AVX-VNNI, and Intel AMX (tiles, bf16, int8, fp16).
DENSE_MATH_FLAGS = (
    "sse4_2", "avx", "avx2", "fma", "f16c", "avx512f", "avx512dq", "avx512bw", "avx512vl", "avx512_vnni",
    "avx512_bf16", "avx512_fp16", "avx_vnni", "amx_tile", "amx_bf16", "amx_int8", "amx_fp16",
)  # fmt: skip


def _cpuinfo_text() -> str:
    try:
        return Path("/proc/cpuinfo").read_text(encoding="utf-8")
    except OSError:
        return ""


def cpu_model(cpuinfo: str | None = None) -> str:
    """The CPU's model name from ``/proc/cpuinfo`` (Linux), else what ``platform`` knows."""
    text = _cpuinfo_text() if cpuinfo is None else cpuinfo
    for line in text.splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def cpu_flags(cpuinfo: str | None = None) -> list:
    """The dense-math instruction sets of :data:`DENSE_MATH_FLAGS` the CPU reports, in that order.

    Read from the first ``flags`` line of ``/proc/cpuinfo`` (or of ``cpuinfo``, its text); empty where
    there is none (not Linux, or not x86: ARM lists ``Features``, none of which are in the list).
    """
    text = _cpuinfo_text() if cpuinfo is None else cpuinfo
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "flags":
            present = set(value.split())
            return [flag for flag in DENSE_MATH_FLAGS if flag in present]
    return []


def gemm_flops(n: int) -> int:
    """Floating-point operations of one ``n x n`` by ``n x n`` matrix product: ``2 n^3`` (a multiply-add
    counts 2, the TensorFlow profiler's convention, which :mod:`emodarts_tf.utils.step_flops` uses too)."""
    return 2 * int(n) ** 3


def time_gflops(run: Callable[[], object], flops: int, repeats: int = 5, warmup: int = 1,
                clock: Callable[[], float] = time.perf_counter) -> dict:
    """``flops / median seconds of run()`` in GFLOP/s, after ``warmup`` untimed calls.

    ``run`` must wait for its result (e.g. read it back). ``clock`` is replaceable for tests. Returns
    ``{"gflops", "median_s", "times_s", "flops"}``.
    """
    if repeats < 1:
        raise ValueError(f"repeats: expected >= 1, received {repeats}")
    for _ in range(warmup):
        run()
    times = []
    for _ in range(repeats):
        t0 = clock()
        run()
        times.append(clock() - t0)
    median = statistics.median(times)
    return {
        "gflops": round(flops / median / 1e9, 1) if median > 0 else float("inf"),
        "median_s": round(median, 4),
        "times_s": [round(t, 4) for t in times],
        "flops": int(flops),
    }


def gemm_gflops(n: int = 2048, repeats: int = 5, warmup: int = 2, numpy_too: bool = True) -> dict:
    """The machine's fp32 GEMM throughput: ``tf.linalg.matmul`` of two random ``n x n`` float32 matrices
    (TensorFlow's CPU kernel, oneDNN or Eigen, with its default thread pools), ``2 n^3 / median seconds``
    after ``warmup`` products; and numpy's ``@`` (its BLAS) for reference.

    About 0.5-1 s per library at n = 2048 on a 2-core machine doing ~300 GFLOP/s. Measured in the calling
    process, with whatever else runs on the machine: a loaded machine gives a lower figure, in the same
    proportion as it slows the benchmark that is compared with it.

    Returns:
        ``{"n", "tf_gflops", "tf_times_s", "numpy_gflops", "numpy_times_s", "numpy_blas"}`` (numpy's
        entries only with ``numpy_too``).
    """
    import numpy as np
    import tensorflow as tf

    n = int(n)
    flops = gemm_flops(n)
    rng = np.random.default_rng(0)
    a = rng.standard_normal((n, n), dtype=np.float32)
    b = rng.standard_normal((n, n), dtype=np.float32)
    ta, tb = tf.constant(a), tf.constant(b)

    def tf_run():
        # Reading one element back waits for the product (the kernel runs asynchronously on a GPU).
        return tf.linalg.matmul(ta, tb)[0, 0].numpy()

    measured = time_gflops(tf_run, flops, repeats=repeats, warmup=warmup)
    device = tf.linalg.matmul(ta[:2, :2], tb[:2, :2]).device  # where TensorFlow places the product
    out = {"n": n, "tf_gflops": measured["gflops"], "tf_times_s": measured["times_s"],
           "tf_device": device.split("device:")[-1] if device else "CPU:0"}
    if numpy_too:
        measured = time_gflops(lambda: a @ b, flops, repeats=repeats, warmup=warmup)
        out.update(numpy_gflops=measured["gflops"], numpy_times_s=measured["times_s"], numpy_blas=_numpy_blas())
    return out


def _numpy_blas() -> str:
    """The BLAS numpy links (OpenBLAS, MKL, ...), as far as numpy says."""
    try:
        import numpy as np

        config = np.show_config(mode="dicts")
        blas = config.get("Build Dependencies", {}).get("blas", {})
        return f"{blas.get('name', '?')} {blas.get('version', '')}".strip()
    except Exception:  # old numpy: no mode="dicts"
        return "unknown"


def machine_info() -> dict:
    """What a benchmark records of the machine it ran on: CPU model and dense-math flags, platform, core count,
    Python, memory and the load average at the time of the call."""
    info = {
        "cpu_model": cpu_model(),
        "cpu_flags": " ".join(cpu_flags()) or "unknown",
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(),
        "python": sys.version.split()[0],
    }
    try:
        with open("/proc/meminfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("MemTotal"):
                    info["memory_gb"] = round(int(line.split()[1]) / 2**20, 1)
    except OSError:
        pass
    try:
        info["load_average"] = [round(x, 2) for x in os.getloadavg()]
    except OSError:
        pass
    return info
