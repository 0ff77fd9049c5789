"""Data benchmark: MFCC extraction throughput on EmoDB and tf.data pipeline throughput at the paper's shape.

    python benchmarks/bench_data.py                      # EmoDB 4-class subset (339 files), paper preset
    python benchmarks/bench_data.py --root ../shared/data/emodb --workers 2 --batches 300

1. Extraction: ``prepare`` on EmoDB (paper preset: 32750 Hz, 8 s, 128 MFCCs, pool 4 -> 128 x 128) into a
   fresh temporary cache, on ``--workers`` processes (0 = all cores): files/s. Then again with the cache
   in place (the reuse path).
2. Pipeline: ``make_fold_data`` on emodb5 fold 1, then batches of 64 from ``train()`` (shuffled, with and
   without SpecAugment) and steps of the zipped ``search_split()`` (two batches per step): batches/s.
3. Ratio: pipeline batches/s against the batches a search step consumes per second (2 batches per step:
   weights + alphas). The step time is ``--step-time`` (default 1.9 s: one searched normal cell, batch 16,
   forward + backward on this kind of machine, from docs/background.md; a full paper step at batch 64 with
   4 CNN + 4 SeqNN cells is many times slower, so the real ratio is larger). ``--measure-step`` also times
   a real first-order search step (emodarts_tf.search) at the demo config's size (the smallest search we
   run), which is a stricter comparison than the paper's.
The pipeline must be at least 20 times faster than the search consumes data.
"""
from __future__ import annotations

import argparse
import logging
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

PROJECT = Path(__file__).resolve().parent.parent
REQUIRED_RATIO = 20.0


def _machine() -> None:
    import librosa
    import numpy as np
    import tensorflow as tf

    print(f"machine: {platform.platform()}, {platform.processor() or platform.machine()}, "
          f"os.cpu_count()={os.cpu_count()}, usable cores={len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else '?'}")  # fmt: skip
    print(f"python {platform.python_version()}, tensorflow {tf.__version__}, librosa {librosa.__version__}, "
          f"numpy {np.__version__}")  # fmt: skip
    try:
        print(f"load average: {os.getloadavg()}")
    except OSError:
        pass


def _time_batches(ds, n: int) -> float:
    it = iter(ds)
    next(it)  # warm-up: tracing, first prefetch
    start = time.perf_counter()
    for _ in range(n):
        next(it)
    return n / (time.perf_counter() - start)


def _measure_demo_search_step(steps: int) -> float:
    """Seconds per first-order search step at the demo config's size (batch 16, 32 x 32)."""
    import keras
    import tensorflow as tf

    from emodarts_tf.config import load_config
    from emodarts_tf.search.model import SearchModel
    from emodarts_tf.search_space.network import SearchBackbone

    cfg = load_config("demo")
    shape = (cfg.features.n_mfcc, 32, 1)
    batch = cfg.search.batch_size
    model = SearchModel(SearchBackbone(cfg.space, shape, num_classes=4), input_shape=shape)
    model.compile(keras.optimizers.SGD(0.025, momentum=0.9), keras.optimizers.Adam(3e-4, 0.5, 0.999))
    x = tf.random.normal((batch, *shape))
    y = tf.zeros((batch,), tf.int32)
    ds = tf.data.Dataset.from_tensors(((x, y), (x, y))).repeat()
    model.fit(ds, steps_per_epoch=2, epochs=1, verbose=0, shuffle=False)  # tracing
    start = time.perf_counter()
    model.fit(ds, steps_per_epoch=steps, epochs=1, verbose=0, shuffle=False)
    return (time.perf_counter() - start) / steps


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", default=str(PROJECT.parent / "shared" / "data" / "emodb"), help="EmoDB root")
    parser.add_argument("--workers", type=int, default=0, help="extraction processes (0 = all cores)")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--batches", type=int, default=300, help="batches timed per pipeline measurement")
    parser.add_argument("--step-time", type=float, default=1.9, help="seconds per search step to compare with")
    parser.add_argument("--measure-step", action="store_true", help="also time a demo-size search step")
    parser.add_argument("--cache", help="cache folder (default: a fresh temporary one)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

    from emodarts_tf.config import load_config
    from emodarts_tf.data.pipeline import make_fold_data
    from emodarts_tf.data.prepare import prepare

    _machine()
    with tempfile.TemporaryDirectory(prefix="bench-data-") as tmp:
        cache = args.cache or str(Path(tmp) / "cache")
        config = load_config(
            "paper",
            overrides=["data.corpus=emodb", f"data.root={args.root}", f"data.cache_dir={cache}",
                       f"data.workers={args.workers}"],
        )  # fmt: skip
        workers = args.workers or os.cpu_count()
        print(f"\ndata: EmoDB at {args.root}, 4-class subset, protocol emodb5; features: paper preset "
              f"{config.features.sample_rate} Hz, {config.features.duration_s} s, {config.features.n_mfcc} MFCCs, "
              f"pool {config.features.time_pool}")  # fmt: skip
        start = time.perf_counter()
        prepared = prepare(config, progress=False)
        elapsed = time.perf_counter() - start
        n = len(prepared.records) + len(prepared.problems)
        print(f"extraction: {n} files in {elapsed:.1f} s on {workers} worker(s): {n / elapsed:.1f} files/s "
              f"({elapsed * workers / n * 1000:.0f} ms per file per worker), features {prepared.input_shape}")  # fmt: skip
        start = time.perf_counter()
        prepare(config, progress=False)
        print(f"cache reuse: prepare again in {time.perf_counter() - start:.2f} s")

        start = time.perf_counter()
        fd = make_fold_data(prepared, 1, config)
        print(f"make_fold_data (fold 1): {time.perf_counter() - start:.2f} s; train {fd.size('train')}, "
              f"val {fd.size('val')}, test {fd.size('test')} utterances")  # fmt: skip

        b = args.batch
        plain = _time_batches(fd.train(b, augment=False, repeat=True), args.batches)
        sa = config.data.spec_augment
        sa.enabled, sa.time_mask, sa.freq_mask, sa.num_masks = True, 20, 16, 2
        fd_aug = make_fold_data(prepared, 1, config)
        augmented = _time_batches(fd_aug.train(b, augment=True, repeat=True), args.batches)
        import tensorflow as tf

        weights, alphas = fd.search_split(b)
        search_steps = _time_batches(tf.data.Dataset.zip((weights, alphas)), args.batches)
        print(f"\npipeline at batch {b}, {fd.input_shape}:")
        print(f"  train(): {plain:.0f} batches/s ({plain * b:.0f} examples/s)")
        print(f"  train() with SpecAugment (2 time masks <= 20 frames, 2 freq masks <= 16): {augmented:.0f} batches/s")
        print(f"  search_split() zipped: {search_steps:.0f} steps/s ({2 * search_steps:.0f} batches/s)")

        consumption = 2.0 / args.step_time
        ratio = 2 * search_steps / consumption
        print(f"\nsearch consumption: 2 batches per step at {args.step_time:.2f} s/step (stated lower bound) = "
              f"{consumption:.2f} batches/s")  # fmt: skip
        print(f"ratio (search_split pipeline / consumption): {ratio:.0f}x; slowest pipeline (SpecAugment) "
              f"{augmented / consumption:.0f}x (required >= {REQUIRED_RATIO:.0f}x)")  # fmt: skip
        ok = min(ratio, augmented / consumption) >= REQUIRED_RATIO
        if args.measure_step:
            try:
                step = _measure_demo_search_step(steps=5)
                print(f"measured demo-size search step (batch 16, 32 x 32, demo space): {step:.3f} s -> "
                      f"consumption {2 / step:.1f} batches/s; ratio of the paper-shape pipeline "
                      f"{2 * search_steps * step / 2:.0f}x")  # fmt: skip
            except Exception as exc:  # noqa: BLE001 - the search module is optional here
                print(f"could not time a search step ({type(exc).__name__}: {exc}); stated step time used")
        print("PASS" if ok else "FAIL", f"(pipeline >= {REQUIRED_RATIO:.0f}x the search's data consumption)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
