"""Retraining throughput: utterances per second of ``fit()`` on the paper network (a fixed genotype retrained).

Usage::

    python benchmarks/bench_train.py                          # paper config, batch 64, a random paper genotype
    python benchmarks/bench_train.py --jit --mixed-precision  # XLA and mixed float16 (GPU)
    python benchmarks/bench_train.py --genotype runs/search-iemocap/fold1/genotype_best.json --steps 50

The network is ``build_fixed_network`` of the genotype (``--genotype``, default: genotype 1 of
``--genotype random`` drawn with seed 0 from the config's search space: the paper's 4 CNN + 4 SeqNN cells of
4 nodes over all ops) at the config's retraining sizes (``train.init_channels`` / ``cnn_cells`` /
``seq_cells`` overrides), on ``--input`` MFCC images (128 x 128 as the paper's features), compiled with the
retraining's optimiser (``evaluation.trainer.sgd_factory``: coupled-decay SGD, cosine schedule, clipping)
and sparse cross-entropy, and fed synthetic batches from ``tf.data``. Epoch 1 (``--steps`` steps) traces and
compiles; the throughput is that of epoch 2: ``steps x batch / its seconds``. What ``fit_fold`` adds per
epoch (validation, checkpoint, the recipe's augmentations) is not included. Prints one JSON line (and
writes it to ``--out``): utterances/s, step seconds, first-epoch seconds, parameters, peak GPU memory.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_search import step_lock  # noqa: E402  (the same lock as bench_search's timed steps)


def measure(args) -> dict:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras
    import numpy as np
    import tensorflow as tf

    from emodarts_tf.config import load_config
    from emodarts_tf.evaluation.trainer import retrain_space, sgd_factory
    from emodarts_tf.search_space.genotype import Genotype
    from emodarts_tf.search_space.network import build_fixed_network
    from emodarts_tf.search_space.random_genotype import sample_genotypes
    from emodarts_tf.utils.runtime import precision_policy
    from emodarts_tf.utils.threads import configure_threads

    gpus = tf.config.list_physical_devices("GPU")
    for gpu in gpus:
        tf.config.experimental.set_memory_growth(gpu, True)
    config = load_config(args.config, overrides=list(args.sets))
    configure_threads(config.runtime.inter_op_threads, config.runtime.intra_op_threads)
    n_mfcc, frames = (int(x) for x in args.input.lower().split("x"))
    shape, classes, batch = (n_mfcc, frames, 1), 4, int(args.batch)
    if args.genotype == "random":
        genotype = sample_genotypes(config.space, 1, seed=0, max_skip=config.search.max_skip)[0]
    else:
        genotype = Genotype.load(args.genotype)
    with precision_policy(bool(args.mixed_precision)) as policy:
        keras.utils.set_random_seed(0)
        model = build_fixed_network(genotype, retrain_space(config), shape, classes, name="emodarts")
        model.compile(optimizer=sgd_factory(config.train)(args.steps),
                      loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                      jit_compile=bool(args.jit))  # fmt: skip
        rng = np.random.default_rng(0)
        x = tf.constant(rng.standard_normal((batch, *shape)).astype("float32"))
        y = tf.constant(rng.integers(0, classes, batch).astype("int32"))
        data = tf.data.Dataset.from_tensors((x, y)).repeat()

        class Clock(keras.callbacks.Callback):
            def __init__(self):
                super().__init__()
                self.seconds = []

            def on_epoch_begin(self, epoch, logs=None):
                if epoch == 1:
                    self.lock = step_lock(args.step_lock)
                    self.lock.__enter__()
                self.t0 = time.perf_counter()

            def on_epoch_end(self, epoch, logs=None):
                float(logs["loss"])  # the epoch's last step has run
                self.seconds.append(time.perf_counter() - self.t0)
                if epoch == 1:
                    self.lock.__exit__(None, None, None)

        clock = Clock()
        if gpus:
            tf.config.experimental.reset_memory_stats("GPU:0")
        model.fit(data, epochs=2, steps_per_epoch=args.steps, callbacks=[clock], verbose=0, shuffle=False)
    steady = clock.seconds[1]
    result = {
        "config": args.config,
        "sets": list(args.sets),
        "input": list(shape),
        "batch": batch,
        "steps": args.steps,
        "jit_compile": bool(args.jit),
        "precision": policy,
        "params": int(sum(int(np.prod(v.shape)) for v in model.trainable_weights)),
        "first_epoch_s": round(clock.seconds[0], 2),
        "step_s": round(steady / args.steps, 4),
        "utterances_per_s": round(args.steps * batch / steady, 1),
        "device": "GPU" if gpus else "CPU",
        "genotype": args.genotype,
    }
    if gpus:
        result["peak_gpu_gb"] = round(tf.config.experimental.get_memory_info("GPU:0")["peak"] / 2**30, 2)
        result["gpu"] = tf.config.experimental.get_device_details(gpus[0]).get("device_name")
    return result


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default="paper", help="config name or path (default: paper)")
    parser.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                        help="config override, e.g. --set train.init_channels=16 (repeatable)")
    parser.add_argument("--genotype", default="random", help="a genotype JSON, or 'random' (seed 0; default)")
    parser.add_argument("--input", default="128x128", help="MFCC image n_mfcc x frames (default 128x128)")
    parser.add_argument("--batch", type=int, default=64, help="batch size (default 64, the paper's)")
    parser.add_argument("--steps", type=int, default=20, help="steps per epoch (2 epochs: compile, then timed)")
    parser.add_argument("--jit", action="store_true", help="XLA-compile the training step")
    parser.add_argument("--mixed-precision", action="store_true", help="mixed_float16 (GPU only)")
    parser.add_argument("--step-lock", metavar="FILE",
                        help="hold an exclusive lock on FILE during the timed epoch (runs side by side on one GPU)")
    parser.add_argument("--out", help="also write the JSON result here")
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    if args.steps < 1 or args.batch < 1:
        raise SystemExit("--steps and --batch: expected integers >= 1")
    result = measure(args)
    text = json.dumps(result)
    print(text, flush=True)
    print(f"retraining: {result['utterances_per_s']} utterances/s ({result['step_s']} s per step of batch "
          f"{result['batch']}, {result['precision']}, XLA {'on' if result['jit_compile'] else 'off'}, first epoch "
          f"{result['first_epoch_s']} s, {result['params']:,} weights"
          + (f", peak GPU {result['peak_gpu_gb']} GB" if "peak_gpu_gb" in result else "") + ")", flush=True)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    raise SystemExit(main())
