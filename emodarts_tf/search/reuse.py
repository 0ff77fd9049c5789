"""One supernet, and the steps traced for it, shared by the folds that one process searches.

Building the supernet and tracing its training and validation steps (with Grappler's rewriting) is a fixed
cost of every fold: about a minute per fold under ``configs/cpu.yaml`` on 2 cores, against 10-20 s for a
later epoch (docs/performance.md). The folds of one ``--fold all`` search build the same supernet: the seed,
not the fold, draws its initial weights and alphas, and the input shape and classes are the corpus's. So
:class:`SupernetReuse` keeps the first fold's supernet with its initial state (the variables of the model and
of both optimizers, as the checkpoints hold them) and hands each later fold the same model restored to
that state; Keras' ``fit`` then reuses the traced step, since the new fold's batches have the same
structure. What depends on the fold's size is set per fold (:func:`set_search_length`): the weights'
cosine schedule length and the alpha learning rate of ``search.alpha_budget``.

Only single-replica searches reuse (a distribution strategy owns its models); ``search.reuse_supernet:
false`` builds every fold anew.
"""
from __future__ import annotations

import json
import logging

import keras

log = logging.getLogger(__name__)


@keras.saving.register_keras_serializable(package="emodarts_tf")
class SearchCosineDecay(keras.optimizers.schedules.CosineDecay):
    """Keras' ``CosineDecay`` (the same values) whose length is a variable, so that one traced step serves
    searches of different lengths (:meth:`set_decay_steps`)."""

    def __init__(self, initial_learning_rate, decay_steps, alpha=0.0, name="SearchCosineDecay"):
        self.steps = keras.Variable(_positive_steps(decay_steps), dtype="float32", trainable=False,
                                    name="lr_decay_steps")  # fmt: skip
        super().__init__(initial_learning_rate, self.steps, alpha=alpha, name=name)

    def set_decay_steps(self, decay_steps) -> None:
        self.steps.assign(_positive_steps(decay_steps))

    def get_config(self):
        config = super().get_config()
        config["decay_steps"] = float(keras.ops.convert_to_numpy(self.steps))
        config.pop("warmup_target", None)
        config.pop("warmup_steps", None)
        return config


def _positive_steps(decay_steps) -> float:
    steps = float(decay_steps)
    if not steps > 0:
        raise ValueError(f"decay_steps: expected a number of steps > 0, received {decay_steps!r}")
    return steps


def state_variables(model) -> list:
    """The model's variables and both optimizers' (each once, in a fixed order)."""
    seen, out = set(), []
    for v in [*model.variables, *model.w_optimizer.variables, *model.a_optimizer.variables]:
        if id(v) not in seen:
            seen.add(id(v))
            out.append(v)
    return out


class SupernetReuse:
    """Hands out the supernet of a search config, built once and restored to its initial state afterwards.

    ``supernet(key, build)`` returns ``build()``'s model the first time (its optimizers built, its initial
    state kept) and, for the same ``key``, the same model restored to that state; another key drops the
    kept model and builds anew. ``key`` must determine the supernet entirely (:func:`supernet_key`).
    """

    def __init__(self):
        self._key = None
        self._model = None
        self._initial: list = []
        self.reused = 0  # how many times a kept supernet was handed out again

    def supernet(self, key: str, build):
        if self._model is not None and key == self._key:
            for variable, value in zip(state_variables(self._model), self._initial):
                variable.assign(value)
            self.reused += 1
            log.info("reusing the supernet built and traced for the first fold, restored to its initial state")
            return self._model
        self.clear()
        model = build()
        model.build_optimizers()
        self._key, self._model = key, model
        self._initial = [keras.ops.convert_to_numpy(v) for v in state_variables(model)]
        return model

    def clear(self) -> None:
        self._key, self._model, self._initial = None, None, []


def supernet_key(config, input_shape, num_classes: int) -> str:
    """What the supernet and its initial state depend on: the config's search space, search settings and
    seed, the input shape(s) and the number of classes (not the fold or its size)."""
    d = config.to_dict()
    return json.dumps({"space": d["space"], "search": d["search"], "seed": d["seed"], "input": input_shape,
                       "classes": int(num_classes)}, sort_keys=True, default=str)  # fmt: skip
