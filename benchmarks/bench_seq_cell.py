"""One searchable SeqNN cell at the paper's sizes, grouped time loops against one Keras layer per candidate.

Usage::

    python benchmarks/bench_seq_cell.py                  # batch 16, 4 nodes, all 14 ops, width 128, 32 steps
    python benchmarks/bench_seq_cell.py --batch 1 --nodes 2

Each implementation runs in a fresh subprocess (so the peak RSS, ``ru_maxrss``, is its own): one traced
function computing the cell's forward and the gradients w.r.t. its weights and mixing weights (what a
search step does per cell), timed on the first call (tracing + graph optimisation) and as the median of
the next calls. Both implementations compute the same function with the same number of weights
(``tests/search_space/test_ss_seq_bank.py`` checks that they agree). Prints a Markdown table.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys


def worker(spec: dict) -> dict:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import resource
    import time

    import keras
    import numpy as np
    import tensorflow as tf

    from emodarts_tf.search_space.primitives import SEQ_PRIMITIVES, num_edges
    from emodarts_tf.search_space.seq_cell import SearchSeqCell

    keras.utils.set_random_seed(0)
    cell = SearchSeqCell(spec["nodes"], spec["units"], SEQ_PRIMITIVES, grouped=spec["grouped"])
    x = tf.random.normal((spec["batch"], spec["steps_t"], spec["units"]))
    alphas = tf.Variable(tf.zeros((num_edges(spec["nodes"]), len(SEQ_PRIMITIVES))))
    cell.build([x.shape, x.shape])

    @tf.function
    def step(x):
        with tf.GradientTape() as tape:
            y = cell([x, x], tf.nn.softmax(alphas), training=True)
            loss = tf.reduce_mean(y * y)
        return loss, tape.gradient(loss, cell.trainable_variables + [alphas])

    t0 = time.perf_counter()
    float(step(x)[0])
    first = time.perf_counter() - t0
    times = []
    for _ in range(spec["repeats"]):
        t0 = time.perf_counter()
        float(step(x)[0])
        times.append(time.perf_counter() - t0)
    return {"grouped": spec["grouped"], "params": int(cell.count_params()), "first_call_s": round(first, 1),
            "step_s": round(float(np.median(times)), 2),
            "peak_rss_gb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--nodes", type=int, default=4)
    parser.add_argument("--units", type=int, default=128, help="SeqNN width (the paper: 128, the CNN's channels)")
    parser.add_argument("--steps-t", type=int, default=32, help="time steps (128 frames after 2 reductions: 32)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(json.loads(args.worker))), flush=True)
        return 0
    rows = []
    for grouped in (True, False):
        spec = {"grouped": grouped, "batch": args.batch, "nodes": args.nodes, "units": args.units,
                "steps_t": args.steps_t, "repeats": args.repeats}
        proc = subprocess.run([sys.executable, __file__, "--worker", json.dumps(spec)], capture_output=True, text=True)
        lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
        if proc.returncode or not lines:
            print(f"{'grouped' if grouped else 'layers'}: failed\n{proc.stderr[-2000:]}")
            return 1
        rows.append(json.loads(lines[-1]))
    print(f"Machine: {platform.platform()}, {os.cpu_count()} CPUs; one SeqNN cell: batch {args.batch}, "
          f"{args.nodes} nodes, all 14 ops, width {args.units}, {args.steps_t} time steps; forward + gradients\n")
    print("| implementation | params | first call s (trace) | step s (median) | peak RSS GB |")
    print("|---|---|---|---|---|")
    for r in rows:
        name = "grouped time loops (default)" if r["grouped"] else "one Keras layer per candidate"
        print(f"| {name} | {r['params']:,} | {r['first_call_s']} | {r['step_s']} | {r['peak_rss_gb']} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
