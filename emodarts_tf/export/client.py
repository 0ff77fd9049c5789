"""Calling an exported model: in process (TensorFlow only) or through TF Serving's REST API.

This module imports neither Keras nor librosa; reading a WAV file needs ``soundfile`` (and ``scipy``
only when the file is not at 16 kHz).

In process::

    from emodarts_tf.export.client import ServedModel, read_wav
    served = ServedModel("serving/emodarts/1")
    served.predict_waveform(read_wav("speech.wav"))
    # [{"class_id": 2, "class_name": "neu", "probabilities": [...], "silent": False}]

Through TF Serving (``docker run -p 8501:8501 -v $PWD/serving/emodarts:/models/emodarts -e MODEL_NAME=emodarts
tensorflow/serving``)::

    from emodarts_tf.export.client import RestClient
    client = RestClient("http://localhost:8501", "emodarts", classes=["ang", "hap", "neu", "sad"])
    client.predict_waveform(read_wav("speech.wav"))

The REST body is TF Serving's row format, one instance per utterance::

    {"signature_name": "serving_waveform",
     "instances": [{"waveform": [0.0, 0.01, ...], "sample_rate": 16000}]}

and the answer ``{"predictions": [{"probabilities": [...], "class_id": 2}]}``.

The model answers a class for any waveform, silence included (an all-zero waveform gives constant MFCCs and
often a confident class). ``predict_waveform`` of both clients therefore adds ``"silent"`` to each row: True
when the part of the waveform the model reads (its first ``samples_used`` samples, from the export's
``export_info.json`` where known, else the whole waveform) peaks below ``SILENCE_PEAK`` (the threshold below
which ``data.features`` refuses a training or ``cli/predict.py`` file as silent), and logs a warning for it.

Models trained with ``data.normalize: speaker`` take each utterance's SPEAKER statistics as two more inputs,
``speaker_mean`` and ``speaker_std`` (``(n_mfcc,)`` per utterance); both clients then require them (a
ValueError says so when they are missing) and get them from a few unlabelled utterances of the speaker::

    stats = served.speaker_statistics([read_wav(p) for p in the_speakers_files])   # the export's signature
    served.predict_waveform(read_wav("speech.wav"), speaker_mean=stats.mean, speaker_std=stats.std)
    stats = speaker_statistics_from_mfcc(raw_mfccs_of_the_speaker)                  # numpy, from MFCCs

Two-stream (EmotionNAS) exports (an image and frame-level sequences, ``"two_stream": true`` in
``export_info.json``) are not supported by these helpers: ``predict_mfcc``, ``predict_waveform`` and
``speaker_statistics`` refuse them with a ValueError saying so; call their ``serving_default`` signature with
every input by name (``ServedModel(...).signature("serving_default")(mfcc=..., frames=...)``).
"""
from __future__ import annotations

import json
import logging
import urllib.error
import urllib.request
from pathlib import Path
from typing import NamedTuple

import numpy as np

INPUT_RATE = 16000
SIGNATURE_MFCC = "serving_default"
SIGNATURE_WAVEFORM = "serving_waveform"
SIGNATURE_SPEAKER = "speaker_statistics"
SPEAKER_INPUTS = ("speaker_mean", "speaker_std")
STD_FLOOR = 1e-6  # as data.pipeline.speaker_statistics: a constant coefficient gets std 1
# Peak amplitude (full scale 1.0) below which a waveform counts as silent: data.features.SILENCE_PEAK (about
# -80 dBFS), the threshold below which the feature extraction refuses a file as silent.
SILENCE_PEAK = 1e-4

log = logging.getLogger(__name__)


class SpeakerStatistics(NamedTuple):
    """One speaker's per-coefficient MFCC statistics, float32 ``(n_mfcc,)`` each."""

    mean: np.ndarray
    std: np.ndarray


def speaker_statistics_from_mfcc(mfcc) -> SpeakerStatistics:
    """Mean and standard deviation of each coefficient over every frame of one speaker's raw MFCCs, with
    numpy, exactly as ``data.pipeline.speaker_statistics`` (float64 sums, std set to 1 below 1e-6).

    ``mfcc``: ``(n, n_mfcc, frames)`` or ``(n, n_mfcc, frames, 1)`` (several utterances of the speaker), or
    one utterance ``(n_mfcc, frames)``.
    """
    x = np.asarray(mfcc, dtype=np.float64)
    if x.ndim == 4 and x.shape[-1] == 1:
        x = x[..., 0]
    elif x.ndim == 2:
        x = x[np.newaxis]
    if x.ndim != 3 or x.size == 0:
        raise ValueError(
            f"mfcc: expected one speaker's raw MFCCs (n, n_mfcc, frames[, 1]) or (n_mfcc, frames), received shape {x.shape}"
        )
    if not np.all(np.isfinite(x)):
        raise ValueError("mfcc: holds NaN or infinity")
    mean = x.mean(axis=(0, 2))
    std = x.std(axis=(0, 2))
    std = np.where(std < STD_FLOOR, 1.0, std)
    return SpeakerStatistics(mean.astype(np.float32), std.astype(np.float32))


def speaker_inputs(speaker_mean, speaker_std, batch: int, needed: bool, n_mfcc: int | None = None,
                   where: str = "this export") -> dict:  # fmt: skip
    """The ``speaker_mean`` / ``speaker_std`` inputs as ``(batch, n_mfcc)`` float32 arrays ({} when not needed).

    Each may be one speaker's ``(n_mfcc,)`` (used for every utterance of the batch) or one row per utterance
    ``(batch, n_mfcc)``. Raises ValueError when they are missing but ``needed`` (a speaker-normalised export),
    given but not needed, mis-shaped, not finite, or a std that is not > 0.
    """
    given = [v is not None for v in (speaker_mean, speaker_std)]
    if not needed:
        if any(given):
            raise ValueError(
                f"{where} takes no speaker statistics (its model was not trained with data.normalize: speaker); "
                "leave speaker_mean and speaker_std out"
            )
        return {}
    if not all(given):
        missing = [k for k, g in zip(SPEAKER_INPUTS, given) if not g]
        raise ValueError(
            f"{where} was trained with speaker normalisation (data.normalize: speaker): pass speaker_mean and "
            f"speaker_std, the MFCC statistics of each utterance's speaker (missing: {', '.join(missing)}); get them "
            f"with speaker_statistics(waveforms of the speaker) or speaker_statistics_from_mfcc(mfccs of the speaker)"
        )
    out = {}
    for key, value in zip(SPEAKER_INPUTS, (speaker_mean, speaker_std)):
        x = np.asarray(value, dtype=np.float32)
        n = x.shape[-1] if x.ndim else None
        if x.ndim == 1:
            x = np.broadcast_to(x, (batch, x.shape[0]))
        if x.ndim != 2 or x.shape[0] != batch or (n_mfcc is not None and n != n_mfcc):
            expected = f"({n_mfcc if n_mfcc is not None else 'n_mfcc'},)"
            raise ValueError(
                f"{key}: expected one speaker's statistics {expected} or one row per utterance "
                f"(batch, {n_mfcc if n_mfcc is not None else 'n_mfcc'}) with batch {batch}, received shape "
                f"{np.shape(value)}"
            )
        if not np.all(np.isfinite(x)):
            raise ValueError(f"{key}: holds NaN or infinity")
        out[key] = np.ascontiguousarray(x)
    if np.any(out["speaker_std"] <= 0):
        raise ValueError("speaker_std: expected values > 0 (a standard deviation; speaker_statistics gives 1 where it is ~0)")
    return out


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
    return _pad(_checked_waveforms(waveforms, sample_rate))


def _pad(arrays: list) -> np.ndarray:
    length = max(len(w) for w in arrays)
    batch = np.zeros((len(arrays), length), dtype=np.float32)
    for i, w in enumerate(arrays):
        batch[i, : len(w)] = w
    return batch


def _checked_waveforms(waveforms, sample_rate: int) -> list:
    """The waveforms of :func:`waveform_batch` as a list of 1-D float32 arrays (before padding), checked."""
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
    return arrays


def _peak(w: np.ndarray, samples_used: int | None) -> float:
    part = w[:samples_used] if samples_used else w
    return float(np.max(np.abs(part))) if part.size else 0.0


def _flag_silence(rows: list[dict], arrays: list, samples_used: int | None) -> list[dict]:
    """Add ``"silent"`` to each row of a waveform prediction, with a warning for each silent waveform."""
    for i, (row, w) in enumerate(zip(rows, arrays)):
        peak = _peak(w, samples_used)
        row["silent"] = peak < SILENCE_PEAK
        if row["silent"]:
            read = f"its first {samples_used} samples peak" if samples_used and samples_used < len(w) else "it peaks"
            log.warning(
                "waveform %d: silent (%s at %.2e < %.0e); the model still answers %s (p = %.2f), which says "
                "nothing about the speaker's emotion", i, read, peak, SILENCE_PEAK,
                row.get("class_name", f"class {row['class_id']}"), max(row["probabilities"]),
            )  # fmt: skip
    return rows


def _samples_used(info: dict) -> int | None:
    """``samples_used`` of the waveform signature in an ``export_info.json`` content (None when absent)."""
    value = ((info or {}).get("signatures") or {}).get(SIGNATURE_WAVEFORM, {}).get("samples_used")
    return int(value) if value else None


def _two_stream_message(where: str, method: str, inputs) -> str:
    names = ", ".join(inputs) if inputs else "see assets.extra/export_info.json"
    return (
        f"{where} is a two-stream (EmotionNAS) export: its only signature, {SIGNATURE_MFCC}, takes the raw image AND "
        f"the raw frame-level sequences by name ({names}), "
        f"and it has no waveform or speaker_statistics signature; {method} cannot call it. Call the signature "
        f"directly (ServedModel(...).signature({SIGNATURE_MFCC!r})(**inputs), or a REST body with every input per "
        "instance)"
    )


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
    """An exported version directory loaded with ``tf.saved_model.load`` (TensorFlow only, no Keras).

    ``speaker_normalised`` says whether its signatures take ``speaker_mean`` / ``speaker_std`` (read from
    the ``serving_default`` signature itself); ``n_mfcc`` is the number of coefficients.
    """

    def __init__(self, version_dir: str | Path):
        import tensorflow as tf

        self.path = Path(version_dir)
        if not (self.path / "saved_model.pb").is_file():
            raise ValueError(f"{self.path}: no saved_model.pb; pass a version directory such as serving/emodarts/1")
        self._tf = tf
        self._loaded = tf.saved_model.load(str(self.path))
        classes_file = self.path / "assets.extra" / "classes.json"
        self.classes = json.loads(classes_file.read_text(encoding="utf-8")) if classes_file.is_file() else None
        info_file = self.path / "assets.extra" / "export_info.json"
        self.info = json.loads(info_file.read_text(encoding="utf-8")) if info_file.is_file() else {}
        _, inputs = self.signature(SIGNATURE_MFCC).structured_input_signature
        self.speaker_normalised = all(k in inputs for k in SPEAKER_INPUTS)
        self.n_mfcc = int(inputs["mfcc"].shape[1]) if "mfcc" in inputs else None
        self.two_stream = "frames" in inputs or bool(self.info.get("two_stream"))
        self._inputs = sorted(inputs)
        self.samples_used = _samples_used(self.info)  # input samples the waveform signature reads

    def signature(self, name: str):
        try:
            return self._loaded.signatures[name]
        except KeyError:
            raise ValueError(f"{self.path}: no signature {name!r}; it has {sorted(self._loaded.signatures)}") from None

    def _refuse_two_stream(self, method: str) -> None:
        if self.two_stream:
            raise ValueError(_two_stream_message(str(self.path), method, self._inputs))

    def _speaker(self, speaker_mean, speaker_std, batch: int) -> dict:
        extra = speaker_inputs(speaker_mean, speaker_std, batch, self.speaker_normalised, self.n_mfcc, str(self.path))
        return {k: self._tf.constant(v) for k, v in extra.items()}

    def predict_mfcc(self, mfcc, speaker_mean=None, speaker_std=None) -> list[dict]:
        """Raw MFCCs ``(batch, n_mfcc, frames, 1)`` -> one dict per utterance.

        A speaker-normalised export also needs ``speaker_mean`` and ``speaker_std``: one speaker's ``(n_mfcc,)``
        for the whole batch, or ``(batch, n_mfcc)``, one row per utterance.
        """
        self._refuse_two_stream("predict_mfcc")
        x = np.asarray(mfcc, dtype=np.float32)
        if self.speaker_normalised and x.ndim != 4:
            raise ValueError(f"mfcc: expected (batch, n_mfcc, frames, 1), received shape {x.shape}")
        extra = self._speaker(speaker_mean, speaker_std, len(x) if x.ndim else 1)
        out = self.signature(SIGNATURE_MFCC)(mfcc=self._tf.constant(x), **extra)
        return _rows({k: v.numpy() for k, v in out.items()}, self.classes)

    def predict_waveform(self, waveforms, sample_rate: int = INPUT_RATE, speaker_mean=None, speaker_std=None) -> list[dict]:
        """16 kHz mono waveform(s) -> one dict per utterance (speaker statistics as for ``predict_mfcc``),
        with ``"silent"`` (see the module's description)."""
        self._refuse_two_stream("predict_waveform")
        arrays = _checked_waveforms(waveforms, sample_rate)
        batch = _pad(arrays)
        extra = self._speaker(speaker_mean, speaker_std, len(batch))
        out = self.signature(SIGNATURE_WAVEFORM)(
            waveform=self._tf.constant(batch),
            sample_rate=self._tf.constant(np.full((len(batch),), sample_rate, dtype=np.int32)),
            **extra,
        )
        return _flag_silence(_rows({k: v.numpy() for k, v in out.items()}, self.classes), arrays, self.samples_used)

    def speaker_statistics(self, waveforms, sample_rate: int = INPUT_RATE) -> SpeakerStatistics:
        """One speaker's statistics from its 16 kHz mono waveforms (unlabelled utterances; all of them in one
        call: the statistics are over every frame of every utterance), with the export's ``speaker_statistics``
        signature (in-graph MFCCs, no librosa)."""
        self._refuse_two_stream("speaker_statistics")
        if not self.speaker_normalised:
            raise ValueError(
                f"{self.path}: not a speaker-normalised export (normalisation: {self.info.get('normalize')}); "
                "it needs no speaker statistics"
            )
        batch = waveform_batch(waveforms, sample_rate)
        out = self.signature(SIGNATURE_SPEAKER)(
            waveform=self._tf.constant(batch), sample_rate=self._tf.constant(int(sample_rate), dtype=self._tf.int32)
        )
        return SpeakerStatistics(out["speaker_mean"].numpy(), out["speaker_std"].numpy())


def _instances(rows: list[dict], extra: dict) -> list[dict]:
    for key, values in extra.items():
        for row, value in zip(rows, values):
            row[key] = value.tolist()
    return rows


def rest_request_waveform(waveforms, sample_rate: int = INPUT_RATE, speaker_mean=None, speaker_std=None) -> dict:
    """The JSON body of a TF Serving REST ``:predict`` call on the waveform signature (row format); with
    speaker statistics (``(n_mfcc,)`` or ``(batch, n_mfcc)``) each instance carries its speaker's."""
    batch = waveform_batch(waveforms, sample_rate)
    needed = speaker_mean is not None or speaker_std is not None
    extra = speaker_inputs(speaker_mean, speaker_std, len(batch), needed, where="the request")
    return {
        "signature_name": SIGNATURE_WAVEFORM,
        "instances": _instances([{"waveform": row.tolist(), "sample_rate": int(sample_rate)} for row in batch], extra),
    }


def rest_request_mfcc(mfcc, speaker_mean=None, speaker_std=None) -> dict:
    """The JSON body of a TF Serving REST ``:predict`` call on ``serving_default`` (row format), with the
    speaker statistics as for :func:`rest_request_waveform`."""
    x = np.asarray(mfcc, dtype=np.float32)
    if x.ndim != 4:
        raise ValueError(f"mfcc: expected (batch, n_mfcc, frames, 1), received shape {x.shape}")
    needed = speaker_mean is not None or speaker_std is not None
    extra = speaker_inputs(speaker_mean, speaker_std, len(x), needed, n_mfcc=x.shape[1], where="the request")
    return {"signature_name": SIGNATURE_MFCC, "instances": _instances([{"mfcc": item.tolist()} for item in x], extra)}


def rest_request_speaker_statistics(waveforms, sample_rate: int = INPUT_RATE) -> dict:
    """The JSON body of a ``:predict`` call on the ``speaker_statistics`` signature: TF Serving's columnar
    format (``inputs``), since the answer is one ``(n_mfcc,)`` pair for the whole batch, not one per row."""
    batch = waveform_batch(waveforms, sample_rate)
    return {"signature_name": SIGNATURE_SPEAKER, "inputs": {"waveform": batch.tolist(), "sample_rate": int(sample_rate)}}


class RestClient:
    """TF Serving over REST: ``POST <url>/v1/models/<name>[/versions/<v>]:predict``.

    ``speaker_normalised``: whether the served model takes speaker statistics; ``None`` (default) asks the
    server's metadata (``GET .../metadata``) the first time it matters. ``samples_used``: the input samples
    the waveform signature reads (for the ``"silent"`` flag; None: the whole waveform). :meth:`from_export`
    reads these, and the classes, from a local copy of the export.
    """

    def __init__(self, url: str = "http://localhost:8501", model_name: str = "emodarts", version: int | None = None,
                 classes: list | None = None, timeout: float = 30.0, speaker_normalised: bool | None = None,
                 samples_used: int | None = None):  # fmt: skip
        self.url = url.rstrip("/")
        self.model_name = model_name
        self.version = version
        self.classes = classes
        self.timeout = timeout
        self._speaker_normalised = speaker_normalised
        self.samples_used = samples_used

    @classmethod
    def from_export(cls, version_dir: str | Path, url: str = "http://localhost:8501", model_name: str = "emodarts",
                    **kwargs) -> "RestClient":  # fmt: skip
        """A client for the export at ``version_dir`` as served by TF Serving (classes and normalisation from
        its ``assets.extra``)."""
        extra = Path(version_dir) / "assets.extra"
        info_file = extra / "export_info.json"
        if not info_file.is_file():
            raise ValueError(f"{version_dir}: no assets.extra/export_info.json; not a SavedModel written by cli/export.py")
        info = json.loads(info_file.read_text(encoding="utf-8"))
        kwargs.setdefault("classes", info.get("classes"))
        kwargs.setdefault("speaker_normalised", info.get("normalize") == "speaker")
        kwargs.setdefault("samples_used", _samples_used(info))
        client = cls(url, model_name, **kwargs)
        if info.get("two_stream"):
            client.two_stream_inputs = sorted(info.get("signatures", {}).get(SIGNATURE_MFCC, {}).get("inputs", {}))
        return client

    @property
    def model_url(self) -> str:
        version = f"/versions/{self.version}" if self.version is not None else ""
        return f"{self.url}/v1/models/{self.model_name}{version}"

    @property
    def endpoint(self) -> str:
        return f"{self.model_url}:predict"

    def _open(self, request, where: str) -> dict:
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                return json.loads(response.read().decode("utf-8"))
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode("utf-8", "replace")
            raise ValueError(f"{where}: HTTP {exc.code}: {detail}") from None

    def post(self, body: dict) -> dict:
        request = urllib.request.Request(
            self.endpoint, data=json.dumps(body).encode("utf-8"), headers={"Content-Type": "application/json"}
        )
        return self._open(request, self.endpoint)

    def metadata(self) -> dict:
        """TF Serving's model metadata (``GET <url>/v1/models/<name>[/versions/<v>]/metadata``)."""
        url = f"{self.model_url}/metadata"
        return self._open(urllib.request.Request(url), url)

    def signature_inputs(self, name: str = SIGNATURE_MFCC) -> dict:
        """The inputs (name -> TensorInfo JSON) of a signature, from the server's metadata."""
        meta = self.metadata()
        try:
            signatures = meta["metadata"]["signature_def"]["signature_def"]
        except (KeyError, TypeError):
            raise ValueError(f"{self.model_url}/metadata: unexpected answer without signature_def: {str(meta)[:200]}") from None
        if name not in signatures:
            raise ValueError(f"{self.model_url}: no signature {name!r}; it has {sorted(signatures)}")
        return dict(signatures[name].get("inputs", {}))

    @property
    def speaker_normalised(self) -> bool:
        """Whether the served model takes ``speaker_mean`` / ``speaker_std`` (asked once from the server when
        not given)."""
        if self._speaker_normalised is None:
            inputs = self.signature_inputs(SIGNATURE_MFCC)
            self._speaker_normalised = all(k in inputs for k in SPEAKER_INPUTS)
        return self._speaker_normalised

    # The inputs of a two-stream export (set by from_export); its MFCC-only and waveform methods refuse it. A
    # client made without from_export learns it from TF Serving's answer (a missing input "frames").
    two_stream_inputs: list | None = None

    def _refuse_two_stream(self, method: str) -> None:
        if self.two_stream_inputs is not None:
            raise ValueError(_two_stream_message(f"model {self.model_name!r}", method, self.two_stream_inputs))

    def _check_speaker(self, speaker_mean, speaker_std, batch: int) -> None:
        speaker_inputs(speaker_mean, speaker_std, batch, self.speaker_normalised, where=f"model {self.model_name!r}")

    def _answer(self, answer: dict) -> dict:
        if "error" in answer:
            raise ValueError(f"{self.endpoint}: {answer['error']}")
        return answer

    def _parse(self, answer: dict) -> list[dict]:
        predictions = self._answer(answer).get("predictions")
        if predictions is None:
            raise ValueError(f"{self.endpoint}: unexpected answer without 'predictions': {str(answer)[:200]}")
        return _rows(
            {"probabilities": [p["probabilities"] for p in predictions], "class_id": [p["class_id"] for p in predictions]},
            self.classes,
        )

    def predict_waveform(self, waveforms, sample_rate: int = INPUT_RATE, speaker_mean=None, speaker_std=None) -> list[dict]:
        """16 kHz mono waveform(s) -> one dict per utterance, with ``"silent"`` (see the module's description);
        a speaker-normalised model also needs ``speaker_mean`` / ``speaker_std`` (``(n_mfcc,)`` for the whole
        batch or ``(batch, n_mfcc)``)."""
        self._refuse_two_stream("predict_waveform")
        arrays = _checked_waveforms(waveforms, sample_rate)
        batch = _pad(arrays)
        self._check_speaker(speaker_mean, speaker_std, len(batch))
        rows = self._parse(self.post(rest_request_waveform(batch, sample_rate, speaker_mean, speaker_std)))
        return _flag_silence(rows, arrays, self.samples_used)

    def predict_mfcc(self, mfcc, speaker_mean=None, speaker_std=None) -> list[dict]:
        """Raw MFCCs ``(batch, n_mfcc, frames, 1)`` -> one dict per utterance (speaker statistics as for
        ``predict_waveform``)."""
        self._refuse_two_stream("predict_mfcc")
        x = np.asarray(mfcc, dtype=np.float32)
        if x.ndim != 4:
            raise ValueError(f"mfcc: expected (batch, n_mfcc, frames, 1), received shape {x.shape}")
        self._check_speaker(speaker_mean, speaker_std, len(x))
        return self._parse(self.post(rest_request_mfcc(x, speaker_mean, speaker_std)))

    def speaker_statistics(self, waveforms, sample_rate: int = INPUT_RATE) -> SpeakerStatistics:
        """One speaker's statistics from its waveforms, by the served ``speaker_statistics`` signature."""
        self._refuse_two_stream("speaker_statistics")
        answer = self._answer(self.post(rest_request_speaker_statistics(waveforms, sample_rate)))
        if "outputs" in answer:  # columnar answer (what the columnar request gets)
            outputs = answer["outputs"]
        elif "predictions" in answer:  # row format: one {"speaker_mean": v, "speaker_std": v} per coefficient
            outputs = {k: [row[k] for row in answer["predictions"]] for k in SPEAKER_INPUTS}
        else:
            raise ValueError(f"{self.endpoint}: unexpected answer without 'outputs': {str(answer)[:200]}")
        try:
            return SpeakerStatistics(*(np.asarray(outputs[k], dtype=np.float32).reshape(-1) for k in SPEAKER_INPUTS))
        except KeyError as exc:
            raise ValueError(f"{self.endpoint}: answer without {exc}; is {SIGNATURE_SPEAKER} served?") from None
