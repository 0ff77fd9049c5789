"""A trained model's directory: what ``cli/evaluate.py --model`` and ``cli/export.py --model`` read.

Layout (written by :func:`emodarts_tf.evaluation.fitting.fit_fold`, one per fold)::

    fold<k>/
      model.keras         the inference model (input ``mfcc``: normalised MFCCs, output: logits),
                          best-on-validation weights, no optimizer
      model_info.json     format, kind, classes, feature config, input shape, normalisation, fold and
                          speakers, plus what the trainer adds (genotype, space and train config, ...)
      normalization.npz   ``mean`` and ``std`` of the fold's training part, broadcastable to the input
                          shape; the model sees ``(mfcc - mean) / std``

The model's custom layers are registered Keras serializables; ``model_info.json`` lists the modules that
define them (``modules``) so that loading imports them first.
"""
from __future__ import annotations

import importlib
import logging
from dataclasses import dataclass, field, fields
from pathlib import Path

import numpy as np

from emodarts_tf.config import FeatureConfig
from emodarts_tf.utils.io import atomic_path, atomic_write_bytes, read_json, write_json
from emodarts_tf.utils.numeric import softmax

log = logging.getLogger(__name__)

MODEL_FORMAT = "emodarts-tf/model/v1"
MODEL_FILE = "model.keras"
INFO_FILE = "model_info.json"
NORM_FILE = "normalization.npz"


def custom_layer_modules(model) -> list[str]:
    """Modules (outside Keras) that define the classes of ``model``'s layers, sorted."""
    modules = set()
    for layer in model._flatten_layers(include_self=True, recursive=True):
        module = type(layer).__module__
        if not module.startswith("keras"):
            modules.add(module)
    return sorted(modules)


def inference_model(model):
    """The model with a single logits output (a dict output keeps its ``logits`` entry), uncompiled.

    A functional model is rewired from its symbolic tensors, sharing its layers and weights, so that the
    saved file carries no optimizer and no auxiliary head.
    """
    import keras

    try:
        outputs = model.output
        inputs = model.input  # the structure the model was built with (a single tensor: no warning on call)
    except (AttributeError, ValueError):  # a subclassed model has no symbolic tensors: saved as it is
        return model
    if isinstance(outputs, dict):
        if "logits" not in outputs:
            raise ValueError(f"model {model.name!r}: dict output without a 'logits' entry (keys {sorted(outputs)})")
        outputs = outputs["logits"]
    elif isinstance(outputs, (list, tuple)):
        raise ValueError(f"model {model.name!r}: expected one logits output or a dict with 'logits', received {len(outputs)} outputs")
    return keras.Model(inputs=inputs, outputs=outputs, name=model.name)


def save_keras_atomic(model, path: str | Path) -> Path:
    """``model.save`` to a temporary file beside ``path``, then an atomic rename."""
    with atomic_path(path, suffix=".keras") as tmp:
        model.save(str(tmp))
    return Path(path)


def save_normalization(path: str | Path, mean, std, **more) -> Path:
    """``normalization.npz``: ``mean`` and ``std`` of the image input, and any ``more`` arrays (a two-stream
    model's ``frames_mean`` and ``frames_std``)."""
    import io

    buf = io.BytesIO()
    arrays = {"mean": mean, "std": std, **{k: v for k, v in more.items() if v is not None}}
    np.savez(buf, **{k: np.asarray(v, dtype=np.float32) for k, v in arrays.items()})
    return atomic_write_bytes(path, buf.getvalue())


def _check_statistics(mean, std, shape, label: str = "") -> None:
    for name, arr in (("mean", mean), ("std", std)):
        try:
            np.broadcast_shapes(arr.shape, shape)
        except ValueError:
            raise ValueError(f"normalisation {label}{name}: shape {arr.shape} does not broadcast to the input shape "
                             f"{shape}") from None
    if np.any(std <= 0) or not np.all(np.isfinite(std)):
        raise ValueError(f"normalisation {label}std: expected finite values > 0")


def save_model_dir(model_dir: str | Path, model, info: dict, mean, std, frames_mean=None, frames_std=None) -> Path:
    """Write ``model.keras`` (inference model), ``normalization.npz`` and ``model_info.json``.

    ``info`` must hold ``classes``, ``features`` (a FeatureConfig dict) and ``input_shape`` (the image's);
    anything else (genotype, configs, fold, speakers) is kept as given. A two-stream model (EmotionNAS) also
    has ``info["input_shapes"]`` (``{input name: shape}``, the frame stream under ``"frames"``) and the frame
    stream's statistics ``frames_mean`` / ``frames_std``.
    """
    model_dir = Path(model_dir)
    for key in ("classes", "features", "input_shape"):
        if key not in info:
            raise ValueError(f"model info: missing {key!r}")
    mean = np.asarray(mean, dtype=np.float32)
    std = np.asarray(std, dtype=np.float32)
    shape = tuple(int(s) for s in info["input_shape"])
    _check_statistics(mean, std, shape)
    normalization = {"file": NORM_FILE, "mean_shape": list(mean.shape), "formula": "(mfcc - mean) / std"}
    if frames_mean is not None or "input_shapes" in info:
        if frames_mean is None or frames_std is None or "frames" not in info.get("input_shapes", {}):
            raise ValueError("a two-stream model needs info['input_shapes'] with 'frames', frames_mean and frames_std")
        frames_mean = np.asarray(frames_mean, dtype=np.float32)
        frames_std = np.asarray(frames_std, dtype=np.float32)
        _check_statistics(frames_mean, frames_std, tuple(int(s) for s in info["input_shapes"]["frames"]), "frames_")
        normalization["frames_formula"] = "(frames - frames_mean) / frames_std"
    infer = inference_model(model)
    save_keras_atomic(infer, model_dir / MODEL_FILE)
    save_normalization(model_dir / NORM_FILE, mean, std, frames_mean=frames_mean, frames_std=frames_std)
    full = {
        "format": MODEL_FORMAT,
        **info,
        "classes": list(info["classes"]),
        "input_shape": list(shape),
        "normalization": normalization,
        "modules": custom_layer_modules(infer),
        "model_file": MODEL_FILE,
    }
    write_json(model_dir / INFO_FILE, full)
    return model_dir


@dataclass
class TrainedModel:
    """A loaded model directory."""

    path: Path
    model: object  # keras.Model: normalised MFCC -> logits
    info: dict
    mean: np.ndarray
    std: np.ndarray
    classes: list = field(default_factory=list)
    frames_mean: np.ndarray | None = None  # two-stream models: the frame stream's statistics
    frames_std: np.ndarray | None = None

    @property
    def two_stream(self) -> bool:
        return "input_shapes" in self.info

    @property
    def input_shape(self) -> tuple:
        return tuple(int(s) for s in self.info["input_shape"])

    @property
    def feature_config(self) -> FeatureConfig:
        return feature_config_from_dict(self.info["features"], source=str(self.path / INFO_FILE))

    def normalise(self, mfcc) -> np.ndarray:
        return ((np.asarray(mfcc, dtype=np.float32) - self.mean) / self.std).astype(np.float32)

    def check_input(self, mfcc) -> np.ndarray:
        """Raw MFCCs as a batch ``(batch, *input_shape)``; a single map or a missing channel axis is accepted."""
        x = np.asarray(mfcc, dtype=np.float32)
        shape = self.input_shape
        if x.shape == shape[:-1] or x.shape == shape:
            x = x.reshape((1, *shape))
        elif x.ndim == len(shape) and x.shape[1:] == shape[:-1]:
            x = x[..., np.newaxis]
        if x.shape[1:] != shape:
            raise ValueError(f"mfcc: expected shape (batch, {', '.join(map(str, shape))}), received {x.shape}")
        return x

    @property
    def frames_config(self):
        """The frame-level stream's ``FramesConfig`` of a two-stream model (None for one stream)."""
        from emodarts_tf.config import FramesConfig

        return FramesConfig(**self.info["frames"]) if self.two_stream and "frames" in self.info else None

    def check_frames(self, frames) -> np.ndarray:
        """Raw frame-level sequences as a batch ``(batch, frames, dim)`` (a single sequence is accepted)."""
        f = np.asarray(frames, dtype=np.float32)
        shape = tuple(int(s) for s in self.info["input_shapes"]["frames"])
        if f.shape == shape:
            f = f[np.newaxis]
        if f.shape[1:] != shape:
            raise ValueError(f"frames: expected shape (batch, {', '.join(map(str, shape))}), received {f.shape}")
        return f

    def normalise_frames(self, frames) -> np.ndarray:
        return ((np.asarray(frames, dtype=np.float32) - self.frames_mean) / self.frames_std).astype(np.float32)

    def logits(self, mfcc, batch_size: int = 64, frames=None) -> np.ndarray:
        """Logits for raw (un-normalised) MFCCs (the image: a spectrogram for a model trained on one) and, for a
        two-stream model, raw frame-level sequences ``frames``."""
        x = self.normalise(self.check_input(mfcc))
        if self.two_stream:
            if frames is None:
                raise ValueError(f"{self.path}: a two-stream model needs the frame-level sequences (frames) too")
            f = self.normalise_frames(self.check_frames(frames))
            if len(f) != len(x):
                raise ValueError(f"frames: {len(f)} sequences for {len(x)} images")
            x = {self.info.get("image_name", "mfcc"): x, "frames": f}
        return np.asarray(self.model.predict(x, batch_size=batch_size, verbose=0), dtype=np.float32)

    def probabilities(self, mfcc, batch_size: int = 64, frames=None) -> np.ndarray:
        return softmax(self.logits(mfcc, batch_size, frames=frames)).astype(np.float32)


def feature_config_from_dict(values: dict, source: str = "features") -> FeatureConfig:
    known = {f.name for f in fields(FeatureConfig)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"{source}: unknown feature key(s) {unknown}")
    return FeatureConfig(**values)


def resolve_model_dir(path: str | Path) -> Path:
    """A model directory from ``path``: the directory itself, or the folder of its ``model.keras`` or
    ``model_info.json``. A run directory holding ``fold<k>`` models is an error listing them."""
    path = Path(path).expanduser()
    if path.is_file() and path.name in (MODEL_FILE, INFO_FILE):
        path = path.parent
    if not path.exists():
        raise ValueError(f"--model {path}: no such file or directory")
    if path.is_dir() and (path / INFO_FILE).is_file():
        return path
    if path.is_dir():
        folds = sorted(p.name for p in path.iterdir() if p.is_dir() and (p / INFO_FILE).is_file())
        if folds:
            raise ValueError(
                f"--model {path}: a run directory with one model per fold ({', '.join(folds)}); "
                f"pass one of them, e.g. --model {path / folds[0]}"
            )
    raise ValueError(
        f"--model {path}: not a trained model directory (expected {INFO_FILE}, {MODEL_FILE} and {NORM_FILE}, "
        "as cli/train.py writes in each fold<k>/)"
    )


def load_model_dir(path: str | Path) -> TrainedModel:
    """Load a model directory written by :func:`save_model_dir`."""
    import keras

    model_dir = resolve_model_dir(path)
    info = read_json(model_dir / INFO_FILE)
    if info.get("format") != MODEL_FORMAT:
        raise ValueError(f"{model_dir / INFO_FILE}: unknown model format {info.get('format')!r}; expected {MODEL_FORMAT!r}")
    for key in ("classes", "features", "input_shape"):
        if key not in info:
            raise ValueError(f"{model_dir / INFO_FILE}: missing {key!r}")
    for module in info.get("modules", []):
        try:
            importlib.import_module(module)
        except ImportError as exc:
            raise ValueError(f"{model_dir}: the model needs module {module!r}, which cannot be imported ({exc})") from exc
    norm_path = model_dir / info.get("normalization", {}).get("file", NORM_FILE)
    if not norm_path.is_file():
        raise ValueError(f"{model_dir}: missing {norm_path.name} (normalisation statistics)")
    with np.load(norm_path) as npz:
        mean = np.asarray(npz["mean"], dtype=np.float32)
        std = np.asarray(npz["std"], dtype=np.float32)
        frames_stats = {k: np.asarray(npz[k], dtype=np.float32) for k in ("frames_mean", "frames_std") if k in npz}
    model_path = model_dir / info.get("model_file", MODEL_FILE)
    if not model_path.is_file():
        raise ValueError(f"{model_dir}: missing {model_path.name}")
    try:
        model = keras.saving.load_model(model_path, compile=False)
    except Exception as exc:  # keras raises TypeError/ValueError for unknown classes or broken files
        raise ValueError(f"{model_path}: cannot load the Keras model ({type(exc).__name__}: {exc})") from exc
    if "input_shapes" in info:  # two streams: each model input by its name
        if set(frames_stats) != {"frames_mean", "frames_std"}:
            raise ValueError(f"{norm_path}: a two-stream model needs frames_mean and frames_std")
        expected_by_name = {name: tuple(int(s) for s in shape) for name, shape in info["input_shapes"].items()}
        got_by_name = {t.name.split(":")[0]: tuple(t.shape[1:]) for t in getattr(model, "inputs", None) or []}
        for name, expected in expected_by_name.items():
            if name in got_by_name and got_by_name[name] != expected:
                raise ValueError(f"{model_dir}: model input {name!r} has shape {got_by_name[name]}, model_info "
                                 f"input_shapes says {expected}")  # fmt: skip
    else:
        expected = tuple(int(s) for s in info["input_shape"])
        got = tuple(model.inputs[0].shape[1:]) if getattr(model, "inputs", None) else None
        if got is not None and tuple(got) != expected:
            raise ValueError(f"{model_dir}: model input shape {got} differs from model_info input_shape {expected}")
    n_out = int(model.outputs[0].shape[-1]) if getattr(model, "outputs", None) else None
    if n_out is not None and n_out != len(info["classes"]):
        raise ValueError(f"{model_dir}: the model has {n_out} outputs but model_info lists {len(info['classes'])} classes")
    return TrainedModel(path=model_dir, model=model, info=info, mean=mean, std=std, classes=list(info["classes"]),
                        **frames_stats)
