"""One call seeds every random number generator a run touches."""
from __future__ import annotations

import os
import random

import numpy as np


def seed_everything(seed: int, keep_compiled: bool = False) -> None:
    """Seed Python, NumPy, TensorFlow and Keras.

    Setting TensorFlow's global seed also clears the eager context's kernel cache, and with it every
    instantiated (graph-optimised) function: the next call of a traced step instantiates it again, seconds
    to a minute for a search's supernet. ``keep_compiled``: when TensorFlow's global seed already is
    ``seed`` (a later fold of the same process), restart TensorFlow's sequence of eager op seeds as setting
    the seed does, without clearing that cache. What the cache keeps is not reset: a stateful random op
    that already ran (an unseeded ``tf.random.uniform``) continues its sequence, and Keras' global seed
    generator is left as it is; a reused search supernet draws from neither (its dropout state is a
    variable; ``tests/search/test_reuse.py`` checks a reused fold against a fresh process). Otherwise, or
    where TensorFlow's context does not expose that sequence, everything is seeded as without
    ``keep_compiled``.
    """
    random.seed(seed)
    np.random.seed(seed)
    os.environ["PYTHONHASHSEED"] = str(seed)
    if keep_compiled and _restart_tf_op_seeds(seed):
        return
    import keras

    keras.utils.set_random_seed(seed)


def _restart_tf_op_seeds(seed: int) -> bool:
    """Restart the eager op-seed sequence of TensorFlow's context if its global seed is ``seed``; True if
    done (what ``tf.random.set_seed`` does, less the cache clearing)."""
    from tensorflow.python.eager import context

    ctx = context.context()
    if getattr(ctx, "_seed", None) != seed or not hasattr(ctx, "_rng"):
        return False
    ctx._rng = random.Random(seed)
    return True
