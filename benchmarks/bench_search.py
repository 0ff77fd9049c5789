"""Search step time and peak memory of the emoDARTS search, per configuration, each in its own process.

Usage::

    python benchmarks/bench_search.py --paper                 # paper config (batch 16), first and second order
    python benchmarks/bench_search.py --quick                 # small sizes: the table in a few minutes
    python benchmarks/bench_search.py --table                 # the sizing table at paper scale (slow on CPUs)
    python benchmarks/bench_search.py --paper --phases        # plus forward / backward timings per step part
    python benchmarks/bench_search.py --set recompute_cnn=false  # keep the CNN activations (no recomputation)

Every configuration runs in a fresh subprocess (``--worker``), so that its peak resident memory
(``ru_maxrss``) is its own; with a GPU the peak GPU memory (``tf.config.experimental.get_memory_info``) is
reported too and the paper configuration runs at the paper's batch 64 as well. One "step" is one
``SearchModel.train_step`` on one weights batch and one alphas batch (the alpha update, then the weight
update), timed after a first step that traces and compiles the graph (reported separately).

Reference (the PyTorch emoDARTS at its defaults, second-order, batch 16), timed per machine kind
(``REFERENCES``): 85.7 s per step and 23.1 GB on a 2-core AMD EPYC, 89.2 s on a 2-core Intel Xeon (Sapphire
Rapids). Targets against the reference of the machine's kind: second-order <= 3/4 of its time and <= 8 GB;
first-order <= 1/3 of its time. Machines of one kind differ (docs/performance.md): the reference timed side by
side on the same machine, given as ``--reference-seconds`` (and ``--reference-rss-gb``), replaces the stored
figure. TensorFlow's thread pools follow ``emodarts_tf.utils.threads`` as in the
commands (``--set intra_op_threads=0 --set inter_op_threads=0`` for TensorFlow's defaults).

Figures that compare across machines: each run also measures the machine's fp32 GEMM throughput
(``tf.linalg.matmul`` of 2048 x 2048 matrices, and numpy's for reference, in a fresh process before and
after the configurations; ``emodarts_tf.utils.machine.gemm_gflops``) and records the CPU model and its
dense-math instruction sets. Each configuration's step FLOPs are counted once (forward FLOPs of the
supernet on the batch, traced, times the passes of a step; ``emodarts_tf.utils.step_flops``), and the
achieved GFLOP/s of a step (FLOPs / median step seconds) is reported with its fraction of the GEMM
figure (the mean of the before and after calibrations). See docs/performance.md.

Writes a Markdown table (``--out``, default ``benchmarks/results/search_<mode>.md``) and the raw results
as JSON beside it.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from emodarts_tf.utils.machine import machine_info

ROOT = Path(__file__).resolve().parent.parent
# The PyTorch emoDARTS at the paper configuration (second order, its only mode, batch 16), timed per machine
# kind: its step time after the first step and its peak memory. Targets: second order <= 3/4 of its step
# time and <= 8 GB, first order <= 1/3 of its step time, each against the reference of the machine's kind.
REFERENCES = {
    "AMD EPYC": {"seconds": 85.7, "rss_gb": 23.1, "machine": "2-core AMD EPYC"},
    "Intel Xeon": {"seconds": 89.2, "rss_gb": 24.2, "machine": "2-core Intel Xeon (Sapphire Rapids); killed by "
                   "the OOM killer at 24.2 GB in its third step"},
}  # fmt: skip
REFERENCE = REFERENCES["AMD EPYC"]  # where the machine's kind has no timing of its own


def reference_for(cpu_model: str | None) -> tuple:
    """``(kind, reference)`` for a CPU model string: the kind whose words it contains, else the EPYC's
    reference under the kind ``"none for this CPU (AMD EPYC's)"``."""
    text = (cpu_model or "").lower()
    for kind, ref in REFERENCES.items():
        if all(word.lower() in text for word in kind.split()):
            return kind, ref
    return "none for this CPU (AMD EPYC's)", REFERENCE


def side_by_side_reference(seconds: float, rss_gb: float | None, cpu_model: str | None) -> tuple:
    """``(kind, reference)`` for the reference timed side by side on this machine (``--reference-seconds``):
    it replaces the stored figure of the machine's kind, since machines of one kind differ (docs/performance.md)."""
    if not seconds > 0:
        raise SystemExit(f"--reference-seconds: expected a step time > 0, received {seconds!r}")
    if rss_gb is not None and not rss_gb > 0:
        raise SystemExit(f"--reference-rss-gb: expected a peak memory > 0, received {rss_gb!r}")
    return "timed side by side", {"seconds": float(seconds), "rss_gb": rss_gb,
                                  "machine": f"{cpu_model or 'this machine'}, timed side by side in this session"}


def targets(reference: dict) -> dict:
    return {"second": {"seconds": 0.75 * reference["seconds"], "rss_gb": 8.0},
            "first": {"seconds": reference["seconds"] / 3, "rss_gb": None}}


# The paper's search configuration (config.py defaults, except batch 16, the PyTorch reference's; --set batch=64
# gives the paper's): 8 channels, 4 CNN cells (reductions at 1 and 2), 4 SeqNN cells, 4 nodes each, all 8 CNN ops
# and all 14 SeqNN ops, 128 x 128 MFCCs, 4 classes.
PAPER = {
    "batch": 16, "n_mfcc": 128, "frames": 128, "init_channels": 8, "cnn_cells": 4, "cnn_nodes": 4,
    "seq_cells": 4, "seq_nodes": 4, "seq_ops": "all", "cnn_ops": "all", "stem_multiplier": 3, "classes": 4,
    "seq_hidden": None, "recompute_cnn": True, "seq_grouped": True, "recompute_seq": True, "eager_updates": None,
    "arch_only_passes": True, "inter_op_threads": None, "intra_op_threads": None,
}  # fmt: skip
# Small sizes for --quick: every factor of the table still varies.
QUICK = {
    "batch": 8, "n_mfcc": 32, "frames": 32, "init_channels": 4, "cnn_cells": 3, "cnn_nodes": 1,
    "seq_cells": 1, "seq_nodes": 1, "seq_ops": "all", "cnn_ops": "all", "stem_multiplier": 2, "classes": 4,
    "seq_hidden": None, "recompute_cnn": True, "seq_grouped": True, "recompute_seq": True, "eager_updates": None,
    "arch_only_passes": True, "inter_op_threads": None, "intra_op_threads": None,
}  # fmt: skip


# ---------------------------------------------------------------------------------------------- worker
def _reset_peak_rss() -> bool:
    """Reset this process's peak RSS (VmHWM) so that the next phase's peak is its own (Linux >= 4.0)."""
    try:
        with open("/proc/self/clear_refs", "w", encoding="utf-8") as handle:
            handle.write("5")
        return True
    except OSError:
        return False


def _peak_rss_gb() -> float:
    try:
        with open("/proc/self/status", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("VmHWM:"):
                    return round(int(line.split()[1]) / 2**20, 2)
    except OSError:
        pass
    import resource

    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2)


@contextlib.contextmanager
def step_lock(path):
    """``--step-lock FILE``: hold an exclusive lock on FILE (one machine) during the timed steps, so that
    configurations run side by side (``benchmarks/gpu_check.sh``) never time their steps at the same time
    (tracing and compiling, the long part, still overlap). None: no lock."""
    if not path:
        yield
        return
    import fcntl

    with open(path, "a+") as handle:
        fcntl.lockf(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.lockf(handle, fcntl.LOCK_UN)


def build_model(spec: dict, order: str):
    """The search model of a configuration ``spec`` (``PAPER``'s keys), built for ``order``."""
    from emodarts_tf.config import ExperimentConfig, SearchConfig, SearchSpaceConfig
    from emodarts_tf.search.runner import build_search_model

    space = SearchSpaceConfig(
        init_channels=spec["init_channels"], cnn_cells=spec["cnn_cells"], cnn_nodes=spec["cnn_nodes"],
        stem_multiplier=spec["stem_multiplier"], cnn_ops=spec["cnn_ops"], seq_cells=spec["seq_cells"],
        seq_nodes=spec["seq_nodes"], seq_ops=spec["seq_ops"], seq_hidden=spec.get("seq_hidden"),
    )  # fmt: skip
    config = ExperimentConfig(
        space=space,
        search=SearchConfig(order=order, batch_size=spec["batch"], epochs=50, jit_compile=spec.get("jit", False),
                            recompute_cnn=spec.get("recompute_cnn", True), seq_grouped=spec.get("seq_grouped", True),
                            recompute_seq=spec.get("recompute_seq", True), eager_updates=spec.get("eager_updates"),
                            arch_only_passes=spec.get("arch_only_passes", True)),
    )
    shape = (spec["n_mfcc"], spec["frames"], 1)
    return build_search_model(config, shape, spec["classes"], steps_per_epoch=100)


def worker(spec: dict) -> list:
    """Build the search model of ``spec`` once; for each order: first step (trace + compile), then timed steps.

    The orders share the model's traced gradient functions (the second order's first step only re-traces
    the outer step); each order's peak RSS is measured from a reset of VmHWM at its start, so the first
    order's figure includes the graph compilation and the second's only what its steps add on top of the
    compiled model (reported as ``peak_rss_gb``; ``process_peak_rss_gb`` is the peak of the whole process).
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import numpy as np
    import tensorflow as tf

    from emodarts_tf.utils.threads import configure_threads

    plan = configure_threads(spec.get("inter_op_threads"), spec.get("intra_op_threads"))
    gpus = tf.config.list_physical_devices("GPU")
    for gpu in gpus:
        tf.config.experimental.set_memory_growth(gpu, True)
    orders = spec["orders"]
    shape = (spec["n_mfcc"], spec["frames"], 1)
    t0 = time.perf_counter()
    model = build_model(spec, orders[0])
    build_s = time.perf_counter() - t0
    rng = np.random.default_rng(0)

    def batch():
        x = rng.standard_normal((spec["batch"],) + shape).astype("float32")
        y = rng.integers(0, spec["classes"], spec["batch"]).astype("int32")
        return tf.constant(x), tf.constant(y)

    data = tf.data.Dataset.from_tensors((batch(), batch())).repeat()
    iterator = iter(data)
    results = []
    for order in orders:
        model.order = order
        model.make_train_function(force=True)
        train_function = model.train_function  # what fit() calls once per step: train_step on the next batch
        resettable = _reset_peak_rss()
        if gpus:
            tf.config.experimental.reset_memory_stats("GPU:0")
        t0 = time.perf_counter()
        float(train_function(iterator)["loss"])
        first_s = time.perf_counter() - t0
        times = []
        with step_lock(spec.get("step_lock")):
            for _ in range(spec["steps"]):
                t0 = time.perf_counter()
                float(train_function(iterator)["loss"])  # waits for the step
                times.append(time.perf_counter() - t0)
        result = {
            "order": order,
            "build_s": round(build_s, 2),
            "first_step_s": round(first_s, 2),
            "step_s": [round(t, 3) for t in times],
            "step_median_s": round(float(np.median(times)), 3),
            "peak_rss_gb": _peak_rss_gb(),
            "peak_rss_resettable": resettable,
            "params": int(sum(np.prod(v.shape) for v in model.weight_variables)),
            "alphas": {k: list(v.shape) for k, v in model.alpha_arrays().items()},
            "device": "GPU" if gpus else "CPU",
            "threads": f"{plan['inter_op_threads']}/{plan['intra_op_threads']}",
        }
        if gpus:
            result["peak_gpu_gb"] = round(tf.config.experimental.get_memory_info("GPU:0")["peak"] / 2**30, 2)
        results.append(result)
        print(json.dumps({"partial": result}), flush=True)
    import resource

    process_peak = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2)
    for result in results:
        result["process_peak_rss_gb"] = process_peak
    if spec.get("count_flops", True):  # counted once, after the timed steps (its tracing would add to their peak)
        add_flops(model, spec["batch"], results)
    if spec.get("time_phases"):
        results[0]["phases"] = phases(model, batch(), repeats=max(1, spec["steps"]))
    return results


def add_flops(model, batch: int, results: list) -> None:
    """Step FLOPs (counted once for the configuration) and achieved GFLOP/s of each order's result."""
    from emodarts_tf.utils.step_flops import search_step_flops

    t0 = time.perf_counter()
    counted = search_step_flops(model, batch, orders=[r["order"] for r in results])
    for result in results:
        flops = counted["step_flops"][result["order"]]
        result.update(
            forward_flops=counted["forward_flops"],
            recomputed_flops=counted["recomputed_flops"],
            step_flops=flops,
            step_gflop=round(flops / 1e9, 3),
            achieved_gflops=round(flops / result["step_median_s"] / 1e9, 2) if result["step_median_s"] > 0 else None,
            flops_count_s=round(time.perf_counter() - t0, 1),
        )
        if counted["uncounted"]:
            result["flops_uncounted_ops"] = counted["uncounted"]


def calibrate(n: int = 2048) -> dict:
    """The GEMM calibration in a fresh process (the driver does not start TensorFlow)."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--calibrate", str(n)]
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT, timeout=600)
    except subprocess.TimeoutExpired:
        return {"error": "timed out"}
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode != 0 or not lines:
        return {"error": f"exit {proc.returncode}: {(proc.stderr or proc.stdout)[-500:]}"}
    return json.loads(lines[-1])


def gemm_reference(info: dict) -> float | None:
    """The TF GEMM GFLOP/s the achieved figures are compared with: the mean of the calibrations that ran."""
    values = [info[k]["tf_gflops"] for k in ("gemm", "gemm_after") if isinstance(info.get(k), dict)
              and info[k].get("tf_gflops")]  # fmt: skip
    return round(sum(values) / len(values), 1) if values else None


def add_gemm_fractions(results: list, reference: float | None) -> None:
    for result in results:
        if reference and result.get("achieved_gflops") is not None:
            result["gemm_gflops"] = reference
            result["gemm_fraction"] = round(result["achieved_gflops"] / reference, 4)


def phases(model, batch, repeats: int) -> dict:
    """Median seconds of the parts of a step: forward, forward+backward for the alphas only, for all."""
    import numpy as np
    import tensorflow as tf

    x, y = batch
    forward = tf.function(lambda x: model(x, training=True))
    out = {}
    for name, fn in (
        ("forward", lambda: forward(x)),
        ("fwd_bwd_alphas", lambda: model._gradients(x, y, 1.0, "arch")),
        ("fwd_bwd_all", lambda: model._gradients(x, y, 1.0, "all")),
    ):
        fn()  # trace
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            result = fn()
            tf.nest.map_structure(lambda t: t.numpy() if hasattr(t, "numpy") else t, result)
            times.append(time.perf_counter() - t0)
        out[name] = round(float(np.median(times)), 3)
    return out


# ---------------------------------------------------------------------------------------------- driver
def _rss_gb(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/status", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 2**20
    except OSError:
        pass
    return 0.0


def run_config(spec: dict, timeout: int, max_rss_gb: float) -> list:
    """Run one configuration (all its orders) in a subprocess; kill it past ``timeout`` s or ``max_rss_gb``."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", json.dumps(spec)]
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT)
    peak, reason = 0.0, None
    while proc.poll() is None:
        rss = _rss_gb(proc.pid)
        peak = max(peak, rss)
        elapsed = time.perf_counter() - t0
        if rss > max_rss_gb:
            reason = f"stopped at {rss:.1f} GB resident (limit --max-rss-gb {max_rss_gb}) after {elapsed:.0f} s"
        elif elapsed > timeout:
            reason = f"stopped after {timeout} s (--timeout)"
        if reason:
            proc.kill()
            break
        time.sleep(0.5)
    stdout, stderr = proc.communicate()
    wall = time.perf_counter() - t0
    partial = [json.loads(line)["partial"] for line in stdout.splitlines() if line.startswith('{"partial"')]
    final = [line for line in stdout.splitlines() if line.startswith("[")]
    if final and proc.returncode == 0:
        return [{**spec, **r, "wall_s": round(wall, 1)} for r in json.loads(final[-1])]
    if reason is None:
        killed = " (killed: out of memory?)" if proc.returncode in (-9, 137) else ""
        reason = f"exit {proc.returncode}{killed}: {(stderr or stdout)[-1500:]}"
    done = {r["order"] for r in partial}
    out = [{**spec, **r, "wall_s": round(wall, 1)} for r in partial]
    out += [{**spec, "order": o, "error": reason, "observed_peak_rss_gb": round(peak, 2)}
            for o in spec["orders"] if o not in done]  # fmt: skip
    return out


def _variations(spec: dict) -> list:
    """What a configuration changes beyond its sizes (shown in the progress line and the table)."""
    out = []
    if spec.get("cnn_ops", "all") != "all":
        ops = spec["cnn_ops"]
        out.append(f"CNN ops {','.join(ops) if isinstance(ops, list) else ops}")
    if spec.get("seq_hidden"):
        out.append(f"SeqNN width {spec['seq_hidden']}")
    if not spec.get("recompute_cnn", True):
        out.append("no CNN recomputation")
    if not spec.get("seq_grouped", True):
        out.append("SeqNN as Keras layers")
    elif not spec.get("recompute_seq", True):
        out.append("no SeqNN recomputation")
    if spec.get("eager_updates") is not None:
        out.append("eager updates" if spec["eager_updates"] else "whole step in one graph")
    if not spec.get("arch_only_passes", True):
        out.append("weight gradients in the alpha passes")
    if spec.get("inter_op_threads") is not None or spec.get("intra_op_threads") is not None:
        out.append(f"threads inter/intra {_threads(spec.get('inter_op_threads'))}/{_threads(spec.get('intra_op_threads'))}")
    if spec.get("jit"):
        out.append("XLA")
    if spec.get("mixed_precision"):
        out.append("mixed float16")
    return out


def _threads(value) -> str:
    return "auto" if value is None else ("TF" if value == 0 else str(value))


def describe(spec: dict) -> str:
    text = (f"{spec['order']}, batch {spec['batch']}, {spec['n_mfcc']}x{spec['frames']}, C={spec['init_channels']}, "
            f"cells {spec['cnn_cells']}+{spec['seq_cells']}, nodes {spec['cnn_nodes']}/{spec['seq_nodes']}, "
            f"SeqNN {spec['seq_ops']}")  # fmt: skip
    return ", ".join([text] + _variations(spec))


def verdict(result: dict, reference: dict = REFERENCE) -> str:
    """The step time's ratio to the reference's and whether the order's target is met (paper sizes, a CPU,
    batch 16; else "")."""
    if "error" in result or result.get("device") != "CPU" or result.get("batch") != 16:
        return ""
    paper_keys = ("n_mfcc", "frames", "init_channels", "cnn_cells", "seq_cells", "cnn_nodes", "seq_nodes", "seq_ops")
    if any(result[k] != PAPER[k] for k in paper_keys):
        return ""
    target = targets(reference)[result["order"]]
    ok_time = result["step_median_s"] <= target["seconds"]
    ok_mem = target["rss_gb"] is None or result["peak_rss_gb"] <= target["rss_gb"]
    ratio = result["step_median_s"] / reference["seconds"]
    return f"{ratio:.2f}x ref time; target {'met' if ok_time and ok_mem else 'MISSED'}"


def _cells(r: dict) -> str:
    return "".join([f"{r['cnn_cells']}+{r['seq_cells']}"] + [f" ({v})" for v in _variations(r)])


def gemm_text(gemm) -> str:
    if not isinstance(gemm, dict):
        return "not measured"
    if "error" in gemm:
        return f"failed ({gemm['error'][:80]})"
    text = f"TF {gemm['tf_gflops']} GFLOP/s"
    if gemm.get("numpy_gflops") is not None:
        text += f", numpy {gemm['numpy_gflops']} GFLOP/s ({gemm.get('numpy_blas', '?')})"
    return text + f" (fp32, n={gemm['n']})"


def machine_lines(info: dict) -> list:
    """The machine, its instruction sets and its GEMM calibration, for the Markdown header."""
    skip = ("cpu_flags", "gemm", "gemm_after")
    lines = ["Machine: " + ", ".join(f"{k} {v}" for k, v in info.items() if k not in skip), ""]
    lines.append(f"Instruction sets: {info.get('cpu_flags', 'unknown')}")
    lines.append("")
    lines.append(f"fp32 GEMM, before the configurations: {gemm_text(info.get('gemm'))}; after: "
                 f"{gemm_text(info.get('gemm_after'))}; reference for '% of GEMM': {gemm_reference(info)} GFLOP/s")
    spread = gemm_spread(info)
    if spread is not None and spread > 0.25:
        lines += ["", f"**The two GEMM calibrations differ by {100 * spread:.0f} % of their mean: the machine's load "
                      "changed during the run (other jobs), so the step times and the fractions of GEMM are indicative "
                      "only.**"]  # fmt: skip
    return lines + [""]


def gemm_spread(info: dict) -> float | None:
    """|before - after| / mean of the two TF GEMM calibrations (None unless both ran)."""
    try:
        a, b = float(info["gemm"]["tf_gflops"]), float(info["gemm_after"]["tf_gflops"])
    except (KeyError, TypeError, ValueError):
        return None
    return abs(a - b) / ((a + b) / 2) if a + b > 0 else None


def _flops_cells(r: dict) -> str:
    if r.get("step_gflop") is None:
        return " | |"
    fraction = f"{100 * r['gemm_fraction']:.1f} %" if r.get("gemm_fraction") is not None else ""
    return f" {r['step_gflop']} | {r['achieved_gflops']} ({fraction}) |"


def markdown(results: list, info: dict, title: str, reference: tuple | None = None) -> str:
    """The Markdown report; ``reference`` a ``(kind, reference)`` pair, by default the stored one of the machine's
    kind (:func:`reference_for`)."""
    kind, reference = reference or reference_for(info.get("cpu_model"))
    goal = targets(reference)
    lines = [f"## {title}", ""] + machine_lines(info)
    lines.append("| order | batch | input | C | cells (CNN+SeqNN) | nodes | SeqNN ops | step s (median) | first step s "
                 "| peak RSS GB | peak GPU GB | params | step GFLOP | achieved GFLOP/s (% of GEMM) | threads inter/intra "
                 "| vs PyTorch ref |")  # fmt: skip
    lines.append("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in results:
        if "error" in r:
            lines.append(f"| {r['order']} | {r['batch']} | {r['n_mfcc']}x{r['frames']} | {r['init_channels']} | "
                         f"{_cells(r)} | {r['cnn_nodes']}/{r['seq_nodes']} | {r['seq_ops']} | "
                         f"not measured: {r['error'][:90].splitlines()[0]} | | {r.get('observed_peak_rss_gb', '')} | | | | | | |")  # fmt: skip
            continue
        lines.append(
            f"| {r['order']} | {r['batch']} | {r['n_mfcc']}x{r['frames']} | {r['init_channels']} | "
            f"{_cells(r)} | {r['cnn_nodes']}/{r['seq_nodes']} | {r['seq_ops']} | "
            f"{r['step_median_s']} | {r['first_step_s']} | {r['peak_rss_gb']} | {r.get('peak_gpu_gb', '')} | "
            f"{r['params']:,} |{_flops_cells(r)} {r.get('threads', '')} | {verdict(r, reference)} |"
        )
    phased = [r for r in results if r.get("phases")]
    if phased:
        lines += ["", "Parts of a step (median seconds): forward; forward+backward w.r.t. the alphas only; "
                  "w.r.t. alphas and weights. A first-order step is one of each backward kind plus the updates; a "
                  "second-order step is 3 'all' and 2 'alphas' passes.", "",
                  "| configuration | forward | fwd+bwd alphas | fwd+bwd all |", "|---|---|---|---|"]  # fmt: skip
        for r in phased:
            p = r["phases"]
            lines.append(f"| {describe(r)} | {p['forward']} | {p['fwd_bwd_alphas']} | {p['fwd_bwd_all']} |")
    lines += ["", f"Reference ({kind}): PyTorch emoDARTS, second-order, batch 16, on a {reference['machine']}: "
              f"{reference['seconds']} s/step"
              f"{', ' + str(reference['rss_gb']) + ' GB' if reference.get('rss_gb') else ''}. Targets (CPU, batch 16, paper sizes): "
              f"second-order <= {goal['second']['seconds']:.1f} s and <= {goal['second']['rss_gb']} GB; first-order "
              f"<= {goal['first']['seconds']:.1f} s. Threads: TensorFlow's inter-op / intra-op pools "
              "(emodarts_tf/utils/threads.py).", "",
              "Step GFLOP: the forward FLOPs of the supernet on the batch (traced, all candidates) x the step's "
              "passes: a full pass is 3 forward + recomputed forward, an alpha pass without weight gradients 2 "
              "forward + recomputed; first order 1 alpha + 1 full pass, second order 2 alpha + 3 full; "
              "emodarts_tf/utils/step_flops.py, docs/performance.md. Achieved GFLOP/s = step GFLOP / median "
              "step seconds; % of GEMM: of the fp32 GEMM reference above, measured in the same run.", ""]  # fmt: skip
    return "\n".join(lines)


def table_specs(base: dict, orders: list) -> list:
    """The base configuration in every order (one process), then one factor varied at a time (first-order)."""
    specs = [{**base, "orders": orders}]
    sweep = [("batch", [base["batch"] // 2, base["batch"] * 2]), ("frames", [base["frames"] // 2, base["frames"] * 2])]
    if base["cnn_cells"] >= 3:
        sweep.append(("cells", [(base["cnn_cells"] - 1, max(base["seq_cells"] - 1, 0)), (base["cnn_cells"], 0)]))
    sweep.append(("seq_ops", ["lstm", "rnn", "lstm_att", "rnn_att"]))
    for key, values in sweep:
        for value in values:
            spec = {**base, "orders": ["first"]}
            if key == "cells":
                spec["cnn_cells"], spec["seq_cells"] = value
            else:
                spec[key] = value
            specs.append(spec)
    return specs


def _apply_sets(base: dict, sets: list) -> dict:
    out = dict(base)
    for item in sets:
        if "=" not in item:
            raise SystemExit(f"--set {item!r}: expected KEY=VALUE with KEY one of {sorted(base)}")
        key, value = item.split("=", 1)
        if key not in base:
            raise SystemExit(f"--set {item!r}: unknown key {key!r}; expected one of {sorted(base)}")
        try:
            out[key] = json.loads(value)  # numbers, null, ["none", "skip_connect"]
        except json.JSONDecodeError:
            out[key] = value  # a bare word: "lstm", "all"
        if (isinstance(base[key], bool) or key == "eager_updates") and not isinstance(out[key], (bool, type(None))):
            raise SystemExit(f"--set {item!r}: expected true or false for {key!r}")
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--paper", action="store_true", help="paper configuration, first and second order (default)")
    parser.add_argument("--quick", action="store_true", help="the table at small sizes (minutes)")
    parser.add_argument("--table", action="store_true", help="the table at paper sizes (hours on 2 CPU cores)")
    parser.add_argument("--orders", default="first,second", help="orders of the base configuration")
    parser.add_argument("--steps", type=int, default=2, help="timed steps per configuration (after the first)")
    parser.add_argument("--phases", action="store_true", help="also time forward / backward parts")
    parser.add_argument("--jit", action="store_true", help="XLA-compile the step")
    parser.add_argument("--step-lock", metavar="FILE",
                        help="hold an exclusive lock on FILE while timing the steps (runs side by side on one GPU)")
    parser.add_argument("--mixed-precision", action="store_true",
                        help="mixed_float16 dtype policy of the search (GPU only; float32 on a CPU, with a warning)")
    parser.add_argument("--timeout", type=int, default=3600, help="seconds per configuration")
    parser.add_argument("--max-rss-gb", type=float, default=14.0,
                        help="stop a configuration whose resident memory passes this (protects a shared machine)")
    parser.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                        help="change the base configuration, e.g. --set seq_cells=1 (repeatable)")
    parser.add_argument("--out", help="Markdown output (JSON beside it)")
    parser.add_argument("--no-flops", action="store_true", help="skip the step FLOP count (it traces a forward)")
    parser.add_argument("--reference-seconds", type=float, metavar="S",
                        help="the PyTorch reference's step time timed side by side on this machine: judge against it "
                             "instead of the stored figure of the machine's kind")
    parser.add_argument("--reference-rss-gb", type=float, metavar="GB", help="its peak memory, with --reference-seconds")
    parser.add_argument("--gemm-n", type=int, default=2048, help="matrix size of the GEMM calibration (0: skip it)")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--calibrate", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.worker:
        spec = json.loads(args.worker)
        # --mixed-precision: the search's dtype policy (mixed_float16 on a GPU; float32, with a warning, on a CPU).
        from emodarts_tf.utils.runtime import precision_policy

        with precision_policy(bool(spec.get("mixed_precision"))) as policy:
            results = worker(spec)
        for result in results:
            result.update(precision=policy, jit_compile=bool(spec.get("jit")))
        print(json.dumps(results), flush=True)
        return 0
    if args.calibrate:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        from emodarts_tf.utils.machine import gemm_gflops

        print(json.dumps(gemm_gflops(n=args.calibrate)), flush=True)
        return 0

    orders = [o for o in args.orders.split(",") if o]
    info = machine_info()
    if args.reference_seconds is not None:
        reference = side_by_side_reference(args.reference_seconds, args.reference_rss_gb, info.get("cpu_model"))
    else:
        reference = reference_for(info.get("cpu_model"))
    gpu = _gpu_visible()
    info["gpu"] = gpu or "none"
    print("machine:", json.dumps(info), flush=True)
    if args.gemm_n:
        info["gemm"] = calibrate(args.gemm_n)
        print(f"fp32 GEMM (before): {gemm_text(info['gemm'])}", flush=True)
    if args.quick:
        mode, base = "quick", _apply_sets(QUICK, args.sets)
        specs = table_specs(base, orders)
    elif args.table:
        mode, base = "table", _apply_sets(PAPER, args.sets)
        specs = table_specs(base, orders)
    else:
        mode, base = "paper", _apply_sets(PAPER, args.sets)
        specs = [{**base, "orders": orders}]
    if gpu and not args.quick and base["batch"] != 64:  # --set batch=64 runs only the paper's batch
        specs.append({**base, "batch": 64, "orders": orders})
    results = []
    for spec in specs:
        spec = {**spec, "steps": args.steps, "time_phases": args.phases, "jit": args.jit,
                "mixed_precision": args.mixed_precision, "step_lock": args.step_lock, "count_flops": not args.no_flops}
        print(f"-> {describe({**spec, 'order': '+'.join(spec['orders'])})}", flush=True)
        for result in run_config(spec, args.timeout, args.max_rss_gb):
            results.append(result)
            if "error" in result:
                print(f"   {result['order']}: failed: {result['error'][-400:]}", flush=True)
                continue
            extra = f", peak GPU {result['peak_gpu_gb']} GB" if "peak_gpu_gb" in result else ""
            if result.get("step_gflop") is not None:
                extra += f", {result['step_gflop']} GFLOP/step, {result['achieved_gflops']} GFLOP/s achieved"
            extra += f", phases {result['phases']}" if result.get("phases") else ""
            judged = verdict(result, reference[1])
            extra += f"  [{judged}]" if judged else ""
            print(f"   {result['order']}: step {result['step_median_s']} s (steps {result['step_s']}), first step "
                  f"{result['first_step_s']} s, peak RSS {result['peak_rss_gb']} GB{extra}", flush=True)  # fmt: skip
    if args.gemm_n:
        info["gemm_after"] = calibrate(args.gemm_n)
        print(f"fp32 GEMM (after): {gemm_text(info['gemm_after'])}", flush=True)
    gemm = gemm_reference(info)
    add_gemm_fractions(results, gemm)
    for r in results:
        if r.get("gemm_fraction") is not None:
            print(f"   {describe(r)}: {r['step_gflop']} GFLOP/step in {r['step_median_s']} s = {r['achieved_gflops']} "
                  f"GFLOP/s, {100 * r['gemm_fraction']:.1f} % of the fp32 GEMM's {gemm} GFLOP/s", flush=True)
    suffix = ""
    if args.sets:  # a readable start and a hash of all the changes: distinct runs, distinct files
        import hashlib

        text = "_".join("".join(c for c in x if c.isalnum() or c == "_") for x in args.sets)
        suffix = f"_{text[:40]}_{hashlib.sha1(text.encode()).hexdigest()[:8]}"
    out = Path(args.out) if args.out else ROOT / "benchmarks" / "results" / f"search_{mode}{suffix}.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    text = markdown(results, info, f"Search step benchmark ({mode}{', ' + ', '.join(args.sets) if args.sets else ''})",
                    reference)
    out.write_text(text, encoding="utf-8")
    out.with_suffix(".json").write_text(json.dumps({"machine": info, "results": results}, indent=2), encoding="utf-8")
    print(text)
    print(f"written: {out}")
    return 0 if all("error" not in r for r in results) else 1


def _gpu_visible() -> str | None:
    """The GPU name from nvidia-smi (without starting TensorFlow in this process)."""
    try:
        proc = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"], capture_output=True,
                              text=True, timeout=20)  # fmt: skip
    except (OSError, subprocess.TimeoutExpired):
        return None
    names = [line.strip() for line in proc.stdout.splitlines() if line.strip()]
    return ", ".join(names) if proc.returncode == 0 and names else None


if __name__ == "__main__":
    raise SystemExit(main())
