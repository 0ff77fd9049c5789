"""Shared pieces of the export tests: a mini EmoDB manifest, tiny configs, 16 kHz waveforms, a tiny model
directory written without training a network, and a stand-in for TF Serving's REST API."""
from __future__ import annotations

import contextlib
import json
import logging
import os
import subprocess
import sys
import threading
from collections import Counter
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import numpy as np

EMODB_LABELS = {"W": "ang", "F": "hap", "T": "sad", "N": "neu"}

# 16 kHz features: the waveform signature needs no resampling.
FEATURES_16K = ["features.sample_rate=16000", "features.duration_s=1.0", "features.n_mfcc=16", "features.n_fft=512",
                "features.hop_length=256", "features.n_mels=32", "features.time_pool=2"]  # fmt: skip
# The paper's feature rate (32750 Hz) at a smaller size: the waveform signature resamples in the graph.
FEATURES_PAPER_RATE = ["features.sample_rate=32750", "features.duration_s=3.0", "features.n_mfcc=40",
                       "features.n_fft=1024", "features.hop_length=512", "features.n_mels=64",
                       "features.time_pool=4"]  # fmt: skip
TINY_NETWORK = ["space.init_channels=2", "space.cnn_cells=3", "space.stem_multiplier=1", "space.seq_cells=1",
                "space.seq_hidden=8"]  # fmt: skip
TINY_GENOTYPE = {
    "normal": [[["skip_connect", 0], ["sep_conv_3x3", 1]]],
    "reduce": [[["max_pool_3x3", 0], ["skip_connect", 1]]],
    "seq": [[["lstm_1", 0], ["skip_connect", 1]]],
}


def write_emodb_manifest(path: Path, emodb_root: Path, speakers=("03", "08", "09", "10"), per_class: int = 2) -> Path:
    rows = ["path,label,speaker"]
    count: Counter = Counter()
    for wav in sorted((emodb_root / "wav").glob("*.wav")):
        speaker, letter = wav.stem[:2], wav.stem[5]
        if speaker in speakers and letter in EMODB_LABELS and count[(speaker, letter)] < per_class:
            count[(speaker, letter)] += 1
            rows.append(f"{wav},{EMODB_LABELS[letter]},{speaker}")
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    return path


def config(manifest: Path, cache: Path, features: list, extra: list = ()):
    from emodarts_tf.config import load_config

    return load_config(None, overrides=["data.corpus=csv", f"data.root={manifest}", f"data.cache_dir={cache}",
                                        "data.workers=1", *features, *TINY_NETWORK, "train.batch_size=8",
                                        "train.epochs=3", "train.patience=5", *extra])  # fmt: skip


def waveforms_16k(paths) -> np.ndarray:
    """16 kHz mono float32 waveforms of ``paths`` (librosa's resampler, as the feature extraction uses),
    zero-padded at the end into one batch."""
    import librosa

    waves = [librosa.load(str(p), sr=16000)[0] for p in paths]
    batch = np.zeros((len(waves), max(len(w) for w in waves)), np.float32)
    for i, w in enumerate(waves):
        batch[i, : len(w)] = w
    return batch


# FEATURES_16K as a FeatureConfig's keyword arguments.
FEATURE_CONFIG_16K = dict(sample_rate=16000, duration_s=1.0, n_mfcc=16, n_fft=512, hop_length=256, n_mels=32, time_pool=2)


def emodb_utterances(emodb_root: Path, speakers, per_class: int) -> list[tuple[Path, str, str]]:
    """``(path, label, speaker)`` of up to ``per_class`` utterances per speaker and emotion (ang/hap/neu/sad)."""
    out, count = [], Counter()
    for wav in sorted((emodb_root / "wav").glob("*.wav")):
        speaker, letter = wav.stem[:2], wav.stem[5]
        if speaker in speakers and letter in EMODB_LABELS and count[(speaker, letter)] < per_class:
            count[(speaker, letter)] += 1
            out.append((wav, EMODB_LABELS[letter], speaker))
    return out


def tiny_model_dir(path: Path, features: dict, normalize: str, x: np.ndarray, y: np.ndarray, classes: list,
                   epochs: int = 25) -> Path:  # fmt: skip
    """A model directory as ``cli/train.py`` writes one (``save_model_dir``), with a small CNN fitted for a
    few seconds on ``x`` (n, n_mfcc, frames): raw MFCCs, or for ``normalize="speaker"`` MFCCs already
    z-scored per speaker. ``normalization.npz`` and ``"normalize"`` in ``model_info.json`` as the trainer
    writes them (``data.pipeline.normalization_stats``: identity for ``speaker``)."""
    import keras

    from emodarts_tf.data.pipeline import normalization_stats
    from emodarts_tf.evaluation.model_dir import save_model_dir

    mean, std = normalization_stats(x, normalize)
    inputs = (x[..., np.newaxis] - mean) / std
    keras.utils.set_random_seed(0)
    net_in = keras.Input(inputs.shape[1:], name="mfcc")
    h = keras.layers.Conv2D(8, 3, strides=2, activation="relu")(net_in)
    h = keras.layers.GlobalAveragePooling2D()(h)
    model = keras.Model(net_in, keras.layers.Dense(len(classes))(h))
    model.compile(keras.optimizers.Adam(1e-2), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(inputs, y, epochs=epochs, batch_size=16, verbose=0)
    info = {"kind": "test", "classes": list(classes), "features": dict(features), "input_shape": list(inputs.shape[1:]),
            "normalize": normalize, "corpus": "emodb", "fold": 1}  # fmt: skip
    return save_model_dir(path, model, info, mean, std)


def _tensor_info(spec) -> dict:
    """A TensorSpec as TF Serving's metadata JSON writes a TensorInfo."""
    shape = {"unknown_rank": True} if spec.shape.rank is None else {
        "dim": [{"size": str(-1 if d is None else d), "name": ""} for d in spec.shape.as_list()]
    }  # fmt: skip
    return {"dtype": f"DT_{spec.dtype.name.upper()}", "tensor_shape": shape, "name": f"{spec.name}:0"}


class TFServingLike(BaseHTTPRequestHandler):
    """TF Serving's REST API for one loaded SavedModel: ``POST /v1/models/<name>:predict`` in the row
    ("instances" -> "predictions") and columnar ("inputs" -> "outputs") formats, and
    ``GET /v1/models/<name>/metadata`` (``metadata.signature_def.signature_def.<name>.inputs``)."""

    loaded = None

    def _send(self, answer: dict, status: int = 200):
        data = json.dumps(answer).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):  # noqa: N802 (http.server's naming)
        if not self.path.endswith("/metadata"):
            return self._send({"error": "not found"}, 404)
        signatures = {}
        for name, sig in self.loaded.signatures.items():
            _, spec = sig.structured_input_signature
            signatures[name] = {
                "inputs": {k: _tensor_info(v) for k, v in spec.items()},
                "outputs": {k: {"dtype": f"DT_{v.dtype.name.upper()}", "name": k} for k, v in sig.structured_outputs.items()},
                "method_name": "tensorflow/serving/predict",
            }
        self._send({"model_spec": {"name": "emodarts", "signature_name": "", "version": "1"},
                    "metadata": {"signature_def": {"@type": "type.googleapis.com/tensorflow.serving.SignatureDefMap",
                                                   "signature_def": signatures}}})  # fmt: skip

    def do_POST(self):  # noqa: N802
        import tensorflow as tf

        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        signature = self.loaded.signatures[body.get("signature_name", "serving_default")]
        _, spec = signature.structured_input_signature
        try:
            if "instances" in body:
                instances = body["instances"]
                missing = sorted(set(spec) - set(instances[0]))
                if missing:
                    return self._send({"error": f"Missing input(s) {missing}"}, 400)
                columns = {k: tf.constant(np.asarray([inst[k] for inst in instances]), dtype=spec[k].dtype) for k in spec}
                out = {k: v.numpy().tolist() for k, v in signature(**columns).items()}
                rows = len(next(iter(out.values())))
                return self._send({"predictions": [{k: out[k][i] for k in out} for i in range(rows)]})
            columns = {k: tf.constant(np.asarray(body["inputs"][k]), dtype=spec[k].dtype) for k in spec}
            return self._send({"outputs": {k: v.numpy().tolist() for k, v in signature(**columns).items()}})
        except tf.errors.InvalidArgumentError as exc:
            return self._send({"error": exc.message}, 400)

    def log_message(self, *args):
        pass


@contextlib.contextmanager
def tf_serving_like(loaded):
    """The base URL of a TF-Serving-like REST server answering for ``loaded`` (a ``tf.saved_model.load``)."""
    handler = type("Handler", (TFServingLike,), {"loaded": loaded})
    server = HTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def export_with_cli(model_dir: Path, out: Path, version: int = 1) -> str:
    """``model_dir`` exported with ``cli/export.py`` (its reload-and-compare check included) into
    ``out/<version>``; the log lines it wrote (``emodarts_tf`` loggers, INFO and up), joined by newlines."""
    from emodarts_tf.commands.export import main as export_main

    records = []
    handler = logging.Handler()
    handler.emit = lambda record: records.append(record.getMessage())
    logger = logging.getLogger("emodarts_tf")
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        assert export_main(["--model", str(model_dir), "--out", str(out), "--version", str(version)]) == 0
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
    return "\n".join(records)


def run_fresh(script: str, version_dir: Path, inputs: dict, work: Path):
    """``script`` run in a new Python process as ``python -c script <version_dir> <inputs.npz> <out.npz>``, with
    ``inputs`` ({key: array}) saved to ``inputs.npz`` in ``work``: the JSON report on its last stdout line,
    and the arrays it saved to ``out.npz``."""
    np.savez(work / "inputs.npz", **inputs)
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    done = subprocess.run([sys.executable, "-c", script, str(version_dir), str(work / "inputs.npz"),
                           str(work / "out.npz")], capture_output=True, text=True, env=env, timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    with np.load(work / "out.npz") as out:
        return report, {k: out[k] for k in out.files}
