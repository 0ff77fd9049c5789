"""One process of a distributed tuning test: ``python baseline_dist_process.py <out> <space_file>``.

The role comes from Keras Tuner's environment variables (KERASTUNER_TUNER_ID etc.); the data are the
tiny in-memory stand-ins, so no corpus is needed. Prints ``SUMMARY <json>`` on the chief.
"""
from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from baseline_helpers import StandInFoldData  # noqa: E402

from emodarts_tf.baselines.runner import run_baseline  # noqa: E402
from emodarts_tf.config import load_config  # noqa: E402


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    out, space_file = sys.argv[1], sys.argv[2]
    config = load_config(None, overrides=[
        "baseline.family=cnn", "baseline.tuner=random", "baseline.trials=2", "baseline.epochs=1",
        "baseline.batch_size=8", "baseline.patience=1", f"baseline.space_file={space_file}",
    ])
    summary = run_baseline(config, out, folds=[1], fold_data_factory=lambda k: StandInFoldData(index=k))
    print("SUMMARY", json.dumps(summary), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
