"""Calling an exported model: in process (TensorFlow only) or through TF Serving's REST API.

This module imports neither Keras nor librosa; reading a WAV file needs ``soundfile`` (and ``scipy``
only when the file is not at 16 kHz).

In process::

    from emodarts_tf.export.client import ServedModel, read_wav
    served = ServedModel("serving/emodarts/1")
    served.predict_waveform(read_wav("speech.wav"))     # [{"class_id": 2, "class_name": "neu", "probabilities": [...]}]

Through TF Serving (``docker run -p 8501:8501 -v $PWD/serving/emodarts:/models/emodarts -e MODEL_NAME=emodarts
tensorflow/serving``)::

    from emodarts_tf.export.client import RestClient
    client = RestClient("http://localhost:8501", "emodarts", classes=["ang", "hap", "neu", "sad"])
    client.predict_waveform(read_wav("speech.wav"))

The REST body is TF Serving's row format, one instance per utterance::

    {"signature_name": "serving_waveform",
     "instances": [{"waveform": [0.0, 0.01, ...], "sample_rate": 16000}]}

and the answer ``{"predictions": [{"probabilities": [...], "class_id": 2}]}``.
"""
from __future__ import annotations

import json
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np

INPUT_RATE = 16000
SIGNATURE_MFCC = "serving_default"
SIGNATURE_WAVEFORM = "serving_waveform"


def read_wav(path: str | Path, rate: int = INPUT_RATE) -> np.ndarray:
    """Mono float32 samples of an audio file at ``rate`` Hz (averaging channels, resampling if needed)."""
    import soundfile as sf

    try:
        y, sr = sf.read(str(path), dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError) as exc:
        raise ValueError(f"{path}: not a readable audio file ({exc})") from None
    if y.size == 0:
        raise ValueError(f"{path}: no audio samples")
    y = y.mean(axis=1)
    if sr != rate:
        from math import gcd

        from scipy.signal import resample_poly

        g = gcd(int(sr), int(rate))
        y = resample_poly(y, rate // g, int(sr) // g).astype(np.float32)
    return np.ascontiguousarray(y, dtype=np.float32)


def waveform_batch(waveforms, sample_rate: int = INPUT_RATE) -> np.ndarray:
    """A ``(batch, samples)`` float32 array from one waveform or a list of them (zero-padded at the end).

    Raises ValueError for a wrong rate, a wrong rank (stereo, nested batches), empty or non-finite audio,
    and integer-scaled PCM, naming the problem.
    """
    if int(sample_rate) != INPUT_RATE:
        raise ValueError(
            f"sample_rate: the waveform signature takes {INPUT_RATE} Hz audio, received {sample_rate} Hz; "
            f"resample first (read_wav(path) does)"
        )
    if isinstance(waveforms, np.ndarray) and waveforms.ndim == 2:
        items = list(waveforms)
    elif isinstance(waveforms, np.ndarray) and waveforms.ndim == 1:
        items = [waveforms]
    elif isinstance(waveforms, np.ndarray):
        raise ValueError(f"waveform: expected (samples,) or (batch, samples) mono audio, received shape {waveforms.shape}")
    else:
        items = list(waveforms)
        if items and np.ndim(items[0]) == 0:  # a plain list of samples
            items = [np.asarray(items, dtype=np.float32)]
    if not items:
        raise ValueError("waveform: no waveforms given")
    arrays = []
    for i, w in enumerate(items):
        w = np.asarray(w, dtype=np.float32)
        if w.ndim != 1:
            raise ValueError(f"waveform {i}: expected mono samples (1-D), received shape {w.shape}; average the channels first")
        if w.size == 0:
            raise ValueError(f"waveform {i}: empty")
        if not np.all(np.isfinite(w)):
            raise ValueError(f"waveform {i}: holds NaN or infinity")
        if np.max(np.abs(w)) > 2.0:
            raise ValueError(f"waveform {i}: peak {np.max(np.abs(w)):.1f}; expected floats in [-1, 1] (int16 PCM / 32768)")
        arrays.append(w)
    length = max(len(w) for w in arrays)
    batch = np.zeros((len(arrays), length), dtype=np.float32)
    for i, w in enumerate(arrays):
        batch[i, : len(w)] = w
    return batch


def _rows(outputs: dict, classes: list | None) -> list[dict]:
    probs = np.asarray(outputs["probabilities"], dtype=np.float32)
    ids = np.asarray(outputs["class_id"]).reshape(-1)
    rows = []
    for p, k in zip(probs, ids):
        row = {"class_id": int(k), "probabilities": [float(v) for v in p]}
        if classes:
            row["class_name"] = classes[int(k)]
        rows.append(row)
    return rows


class ServedModel:
    """An exported version directory loaded with ``tf.saved_model.load`` (TensorFlow only, no Keras)."""

    def __init__(self, version_dir: str | Path):
        import tensorflow as tf

        self.path = Path(version_dir)
        if not (self.path / "saved_model.pb").is_file():
            raise ValueError(f"{self.path}: no saved_model.pb; pass a version directory such as serving/emodarts/1")
        self._tf = tf
        self._loaded = tf.saved_model.load(str(self.path))
        classes_file = self.path / "assets.extra" / "classes.json"
        self.classes = json.loads(classes_file.read_text(encoding="utf-8")) if classes_file.is_file() else None

    def signature(self, name: str):
        try:
            return self._loaded.signatures[name]
        except KeyError:
            raise ValueError(f"{self.path}: no signature {name!r}; it has {sorted(self._loaded.signatures)}") from None

    def predict_mfcc(self, mfcc) -> list[dict]:
        """Raw MFCCs ``(batch, n_mfcc, frames, 1)`` -> one dict per utterance."""
        out = self.signature(SIGNATURE_MFCC)(mfcc=self._tf.constant(np.asarray(mfcc, dtype=np.float32)))
        return _rows({k: v.numpy() for k, v in out.items()}, self.classes)

    def predict_waveform(self, waveforms, sample_rate: int = INPUT_RATE) -> list[dict]:
        """16 kHz mono waveform(s) -> one dict per utterance."""
        batch = waveform_batch(waveforms, sample_rate)
        out = self.signature(SIGNATURE_WAVEFORM)(
            waveform=self._tf.constant(batch),
            sample_rate=self._tf.constant(np.full((len(batch),), sample_rate, dtype=np.int32)),
        )
        return _rows({k: v.numpy() for k, v in out.items()}, self.classes)


def rest_request_waveform(waveforms, sample_rate: int = INPUT_RATE) -> dict:
    """The JSON body of a TF Serving REST ``:predict`` call on the waveform signature (row format)."""
    batch = waveform_batch(waveforms, sample_rate)
    return {
        "signature_name": SIGNATURE_WAVEFORM,
        "instances": [{"waveform": row.tolist(), "sample_rate": int(sample_rate)} for row in batch],
    }


def rest_request_mfcc(mfcc) -> dict:
    """The JSON body of a TF Serving REST ``:predict`` call on ``serving_default`` (row format)."""
    x = np.asarray(mfcc, dtype=np.float32)
    if x.ndim != 4:
        raise ValueError(f"mfcc: expected (batch, n_mfcc, frames, 1), received shape {x.shape}")
    return {"signature_name": SIGNATURE_MFCC, "instances": [{"mfcc": item.tolist()} for item in x]}


class RestClient:
    """TF Serving over REST: ``POST <url>/v1/models/<name>[/versions/<v>]:predict``."""

    def __init__(self, url: str = "http://localhost:8501", model_name: str = "emodarts", version: int | None = None,
                 classes: list | None = None, timeout: float = 30.0):
        self.url = url.rstrip("/")
        self.model_name = model_name
        self.version = version
        self.classes = classes
        self.timeout = timeout

    @property
    def endpoint(self) -> str:
        version = f"/versions/{self.version}" if self.version is not None else ""
        return f"{self.url}/v1/models/{self.model_name}{version}:predict"

    def post(self, body: dict) -> dict:
        request = urllib.request.Request(
            self.endpoint, data=json.dumps(body).encode("utf-8"), headers={"Content-Type": "application/json"}
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                return json.loads(response.read().decode("utf-8"))
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode("utf-8", "replace")
            raise ValueError(f"{self.endpoint}: HTTP {exc.code}: {detail}") from None

    def _parse(self, answer: dict) -> list[dict]:
        if "error" in answer:
            raise ValueError(f"{self.endpoint}: {answer['error']}")
        predictions = answer.get("predictions")
        if predictions is None:
            raise ValueError(f"{self.endpoint}: unexpected answer without 'predictions': {str(answer)[:200]}")
        return _rows(
            {"probabilities": [p["probabilities"] for p in predictions], "class_id": [p["class_id"] for p in predictions]},
            self.classes,
        )

    def predict_waveform(self, waveforms, sample_rate: int = INPUT_RATE) -> list[dict]:
        return self._parse(self.post(rest_request_waveform(waveforms, sample_rate)))

    def predict_mfcc(self, mfcc) -> list[dict]:
        return self._parse(self.post(rest_request_mfcc(mfcc)))
