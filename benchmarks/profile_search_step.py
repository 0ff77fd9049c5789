"""Where a search step's time goes: a per-op-type profile of timed search steps (TensorFlow profiler).

Usage::

    python benchmarks/profile_search_step.py --paper --order first          # paper configuration
    python benchmarks/profile_search_step.py --quick --order second --top 30
    python benchmarks/profile_search_step.py --paper --set recompute_seq=false --out runs/profile.md

The configuration is built as ``benchmarks/bench_search.py`` builds it (``--set KEY=VALUE`` changes one
of its keys), with TensorFlow's thread pools sized as the commands size them (``emodarts_tf.utils.threads``;
``--set intra_op_threads=0 --set inter_op_threads=0`` for TensorFlow's defaults). After a first, untimed
step (tracing and compiling), ``--steps`` steps run under ``tf.profiler.experimental``; the trace
(``XSpace``) is read back and every TensorFlow op event of the host threads is grouped by op type. Each event's **self time** is its duration minus the time of the events
nested in it on the same thread (a function call or a ``While`` holds the ops it runs), so the op types'
self times add up to the busy time of the executor threads, without counting a nested op twice (work an op
hands to TensorFlow's intra-op pool runs on other threads and is counted in the op's own duration). Several
threads run ops at once (inter-op parallelism), so the busy time can exceed the wall time; the table gives
each type's share of the busy time, its call count and its mean time per call.

Writes a Markdown table to ``--out`` (default: printed only) and the raw figures as JSON beside it.
"""
from __future__ import annotations

import argparse
import collections
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_search import PAPER, QUICK, _apply_sets, build_model  # noqa: E402

from emodarts_tf.utils.machine import machine_info  # noqa: E402


def op_type(name: str) -> str | None:
    """The op type of a profiler event name ``"scope/op_name:OpType"``; None for other events."""
    if ":" not in name or "::" in name:  # "ExecutorState::Process" and the like: runtime events
        return None
    kind = name.rsplit(":", 1)[1].strip()
    if not kind or not kind.lstrip("_")[:1].isupper() or "/" in kind or " " in kind:  # "_MklConv2D" too
        return None
    return kind


def self_times(events: list) -> list:
    """``(name, start_ps, duration_ps, self_ps)`` for events of one thread given as ``(name, start, dur)``.

    An event nested in another (starting within it and ending no later) is subtracted from the enclosing
    event's self time; events that merely touch are not nested.
    """
    ordered = sorted(events, key=lambda e: (e[1], -e[2]))
    out = []
    stack = []  # indices into out of the open enclosing events
    for name, start, dur in ordered:
        end = start + dur
        while stack and out[stack[-1]][1] + out[stack[-1]][2] <= start:
            stack.pop()
        if stack and end <= out[stack[-1]][1] + out[stack[-1]][2]:
            parent = out[stack[-1]]
            out[stack[-1]] = (parent[0], parent[1], parent[2], parent[3] - dur)
        out.append((name, start, dur, dur))
        stack.append(len(out) - 1)
    return out


def aggregate(xspace) -> dict:
    """Self time (s) and calls per op type over the host plane's threads of an ``XSpace``."""
    totals = collections.defaultdict(lambda: {"self_s": 0.0, "calls": 0})
    for plane in xspace.planes:
        if not plane.name.startswith("/host:CPU"):
            continue
        names = {key: meta.name for key, meta in plane.event_metadata.items()}
        for line in plane.lines:
            events = []
            for event in line.events:
                name = names.get(event.metadata_id, "")
                if op_type(name) is not None:
                    events.append((name, event.offset_ps, event.duration_ps))
            for name, _start, _dur, own in self_times(events):
                entry = totals[op_type(name)]
                entry["self_s"] += own / 1e12
                entry["calls"] += 1
    return dict(totals)


def read_xspace(logdir: str):
    from tensorflow.tsl.profiler.protobuf import xplane_pb2

    paths = sorted(Path(logdir).rglob("*.xplane.pb"))
    if not paths:
        raise FileNotFoundError(f"no *.xplane.pb under {logdir}: the profiler wrote no trace")
    space = xplane_pb2.XSpace()
    space.ParseFromString(paths[-1].read_bytes())
    return space


def profile(spec: dict, order: str, steps: int) -> dict:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import numpy as np
    import tensorflow as tf

    from emodarts_tf.utils.threads import configure_threads

    plan = configure_threads(spec.get("inter_op_threads"), spec.get("intra_op_threads"))
    shape = (spec["n_mfcc"], spec["frames"], 1)
    model = build_model(spec, order)
    rng = np.random.default_rng(0)
    x = tf.constant(rng.standard_normal((spec["batch"],) + shape).astype("float32"))
    y = tf.constant(rng.integers(0, spec["classes"], spec["batch"]).astype("int32"))
    iterator = iter(tf.data.Dataset.from_tensors(((x, y), (x, y))).repeat())
    model.order = order
    model.make_train_function(force=True)
    t0 = time.perf_counter()
    float(model.train_function(iterator)["loss"])
    first_s = time.perf_counter() - t0
    logdir = tempfile.mkdtemp(prefix="emodarts-profile-")
    tf.profiler.experimental.start(logdir)
    t0 = time.perf_counter()
    for _ in range(steps):
        float(model.train_function(iterator)["loss"])
    wall_s = (time.perf_counter() - t0) / steps
    tf.profiler.experimental.stop()
    totals = aggregate(read_xspace(logdir))
    for entry in totals.values():
        entry["self_s"] /= steps
        entry["calls"] /= steps
    return {"order": order, "threads": f"{plan['inter_op_threads']}/{plan['intra_op_threads']}",
            "first_step_s": round(first_s, 2), "profiled_step_s": round(wall_s, 3),
            "ops": totals, "logdir": logdir}


def table(result: dict, top: int) -> str:
    ops = sorted(result["ops"].items(), key=lambda kv: -kv[1]["self_s"])
    busy = sum(v["self_s"] for v in result["ops"].values())
    lines = [
        f"Per step ({result['order']} order, threads inter/intra {result.get('threads', '?')}): wall "
        f"{result['profiled_step_s']} s under the profiler, executor threads busy {busy:.2f} s.",
        "",
        "| op type | self s per step | share of busy | calls per step | ms per call |",
        "|---|---|---|---|---|",
    ]
    for kind, entry in ops[:top]:
        ms = 1e3 * entry["self_s"] / max(entry["calls"], 1)
        lines.append(f"| {kind} | {entry['self_s']:.3f} | {100 * entry['self_s'] / busy:.1f} % | "
                     f"{entry['calls']:.0f} | {ms:.3f} |")
    rest = ops[top:]
    if rest:
        lines.append(f"| ({len(rest)} other types) | {sum(v['self_s'] for _, v in rest):.3f} | "
                     f"{100 * sum(v['self_s'] for _, v in rest) / busy:.1f} % | "
                     f"{sum(v['calls'] for _, v in rest):.0f} | |")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--paper", action="store_true", help="the paper configuration (default)")
    parser.add_argument("--quick", action="store_true", help="the small sizes of bench_search --quick")
    parser.add_argument("--order", default="first", choices=("first", "second"))
    parser.add_argument("--steps", type=int, default=1, help="profiled steps (after an untimed first one)")
    parser.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--top", type=int, default=25, help="op types listed")
    parser.add_argument("--out", help="Markdown output (JSON beside it)")
    args = parser.parse_args(argv)
    if args.steps < 1:
        parser.error(f"--steps must be >= 1, got {args.steps}")
    spec = _apply_sets(QUICK if args.quick else PAPER, args.sets)
    result = profile(spec, args.order, args.steps)
    info = machine_info()
    text = (f"## Search step profile ({'quick' if args.quick else 'paper'} configuration"
            f"{', ' + ', '.join(args.sets) if args.sets else ''})\n\n"
            f"Machine: {info.get('cpu_model')}, {info.get('cpus')} cpus, load average {info.get('load_average')}\n\n"
            + table(result, args.top) + "\n")
    print(text)
    if args.out:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text, encoding="utf-8")
        out.with_suffix(".json").write_text(json.dumps({"spec": spec, "machine": info, **result}, indent=1),
                                            encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
