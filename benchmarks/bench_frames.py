"""EmotionNAS feature extraction: files per second and cache size of the two streams' features on EmoDB.

    python benchmarks/bench_frames.py                                  # all EmoDB files, 2 workers
    python benchmarks/bench_frames.py --root ../shared/data/emodb --workers 2 --config emotionnas

Each row extracts every ``*.wav`` of the corpus into a fresh temporary cache (``FeatureCache``: sharded, as a
search's ``prepare`` does) on ``--workers`` processes and reports files/s (wall clock of the extraction, pool
start-up included), the cache size on disk and the per-utterance shape:

- openSMILE eGeMAPSv02 and ComParE_2016 low-level descriptors (``frames``, stream B), with the config's
  ``frames`` settings (duration, pooling, length);
- the spectrogram image of ``features.kind: spectrogram`` (stream A of ``configs/emotionnas.yaml``).

Prints a Markdown table with the machine (CPU model, cores) and the corpus.
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import tempfile
import time
from pathlib import Path

PROJECT = Path(__file__).resolve().parent.parent


def _size_mb(folder: Path) -> float:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) / 2**20


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", default=str(PROJECT.parent / "shared" / "data" / "emodb"))
    parser.add_argument("--config", default="emotionnas")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

    from emodarts_tf.config import load_config
    from emodarts_tf.data.cache import FeatureCache
    from emodarts_tf.data.frame_features import frame_cache
    from emodarts_tf.utils.machine import cpu_model

    config = load_config(args.config)
    paths = sorted(str(p.resolve()) for p in Path(args.root).rglob("*.wav"))
    if not paths:
        raise SystemExit(f"--root {args.root}: no .wav files")
    rows = []
    cases = [(f"openSMILE {name} LLD (frames)", "frames", dataclasses.replace(config.frames, source="opensmile",
                                                                               opensmile_set=name))
             for name in ("eGeMAPSv02", "ComParE_2016")]
    cases.append((f"{config.features.kind} image (features)", "features", config.features))
    for label, section, cfg in cases:
        with tempfile.TemporaryDirectory() as tmp:
            cache = frame_cache(tmp, cfg, paths) if section == "frames" else FeatureCache(tmp, cfg)
            start = time.perf_counter()
            errors = cache.extract(paths, workers=args.workers, progress=False)
            seconds = time.perf_counter() - start
            done = len(paths) - len(errors)
            rows.append((label, done, len(errors), seconds, done / seconds, _size_mb(cache.dir), tuple(cache.shape)))
    print(f"\nmachine: {cpu_model()}, {os.cpu_count()} cores, {args.workers} worker(s); corpus {args.root} "
          f"({len(paths)} files); config {args.config}\n")
    print("| features | files | failed | seconds | files/s | cache MB | shape per utterance |")
    print("|---|---|---|---|---|---|---|")
    for label, done, failed, seconds, rate, size, shape in rows:
        print(f"| {label} | {done} | {failed} | {seconds:.1f} | {rate:.1f} | {size:.2f} | {shape} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
