"""Several trained networks served as one model: the mean of their class probabilities.

With ``recipe.refit`` every fold trains two networks anyway, the first training's kept model (without the
validation speakers) and the refit (on every training speaker). ``recipe.ensemble`` serves the mean of their
probabilities instead of the refit alone (``evaluation.fitting.fit_fold``).

:func:`ensemble_model` wraps the members in one functional model with the members' inputs (same names and
shapes, so a two-stream pair keeps ``mfcc``/``spectrogram`` and ``frames``, selected by name from a dict that
may hold more streams) and one output named ``logits``: the
sum rule of ``search_space.two_stream.LateFusion``, ``log(mean_i softmax(z_i))``, whose softmax is the mean of the
members' probabilities (computed in float32 whatever the precision policy).
Everything that reads logits (scoring, ``predict``, ``evaluate``, the SavedModel export) serves the average
unchanged, and the pair saves and loads as one ``model.keras``.
"""
from __future__ import annotations

import keras

from emodarts_tf.evaluation.model_dir import inference_model
from emodarts_tf.search_space.two_stream import LateFusion, inputs_by_name


def _fresh_inputs(model):
    """New ``keras.Input`` tensors like ``model``'s (same names, shapes and dtypes): ``(ensemble inputs, member
    inputs)``.

    Named (dict) inputs become a list sorted by name for the ensemble (``two_stream.inputs_by_name``, which Keras
    reads from a dict by name, as the two-stream networks do), and the same tensors as a dict for the members. A
    pair of one-stream networks of a two-stream genotype thus reads its own entry of the fold's two-stream batches.
    """

    def like(tensor):
        return keras.Input(shape=tuple(tensor.shape[1:]), dtype=tensor.dtype, name=tensor.name.split(":")[0])

    inputs = model.input
    if isinstance(inputs, dict):
        named = {key: like(tensor) for key, tensor in inputs.items()}
        return inputs_by_name(named), named
    if isinstance(inputs, (list, tuple)):
        fresh = [like(tensor) for tensor in inputs]
        return fresh, fresh
    fresh = like(inputs)
    return fresh, fresh


def _signature(inputs) -> list:
    tensors = inputs.items() if isinstance(inputs, dict) else enumerate(inputs if isinstance(inputs, (list, tuple)) else [inputs])
    return sorted((str(key), tensor.name.split(":")[0], tuple(tensor.shape[1:]), str(tensor.dtype)) for key, tensor in tensors)


def ensemble_model(members: list, name: str = "ensemble") -> keras.Model:
    """One model whose logits average the probabilities of ``members`` (functional Keras models with the same
    inputs and a logits output, or a dict output with ``logits``: auxiliary heads are dropped).

    Each member enters as its inference model (``model_dir.inference_model``: a new model object sharing the layers
    and weights of the one passed in, which keeps its name), named ``<name>_member<i>`` (from 1), so that the saved
    file can hold several networks built by the same builder.
    """
    if len(members) < 2:
        raise ValueError(f"ensemble_model: expected at least 2 members, received {len(members)}")
    members = [inference_model(m) for m in members]
    expected = _signature(members[0].input)
    classes = [tuple(member.output.shape[1:]) for member in members]
    for i, member in enumerate(members[1:], 2):
        if _signature(member.input) != expected:
            raise ValueError(f"ensemble_model: member {i} has inputs {_signature(member.input)}, member 1 has {expected}")
        if classes[i - 1] != classes[0]:
            raise ValueError(f"ensemble_model: member {i} has logits of shape {classes[i - 1]}, member 1 {classes[0]}")
    for i, member in enumerate(members, 1):
        member.name = f"{name}_member{i}"
    inputs, member_inputs = _fresh_inputs(members[0])
    outputs = LateFusion(name="logits", dtype="float32")([member(member_inputs) for member in members])
    return keras.Model(inputs=inputs, outputs=outputs, name=name)
