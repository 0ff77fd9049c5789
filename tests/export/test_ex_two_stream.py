"""Exports of two-stream (EmotionNAS) models: ``serving_default`` takes the raw image (named as the model's,
``mfcc`` or ``spectrogram``) and the raw ``frames`` by name, normalises both in the graph and, reloaded in a
fresh process with TensorFlow only, equals ``TrainedModel.probabilities(x, frames=f)``; speaker-normalised
models take both streams' speaker statistics; shapes and batch sizes are checked in the graph; an empty batch
answers empty outputs; there is no waveform (nor speaker_statistics) signature, and export_info.json says why.

No network is trained: tiny two-stream models (random weights, a derived genotype) are written with
``save_model_dir`` as ``evaluation.fitting`` writes them, with a realistic ``model_info.json``.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from emodarts_tf.config import FeatureConfig, FramesConfig, SearchSpaceConfig
from emodarts_tf.data.pipeline import normalization_stats, speaker_statistics
from emodarts_tf.data.spectrogram import spectrogram_shape
from emodarts_tf.evaluation.model_dir import load_model_dir
from export_helpers import export_with_cli, run_fresh

TOLERANCE = 1e-5
CLASSES = ["ang", "hap", "neu", "sad"]
FRAMES = (12, 25)  # 12 pooled frames of the 25 eGeMAPSv02 low-level descriptors
MFCC_FEATURES = FeatureConfig(sample_rate=16000, duration_s=0.5, n_mfcc=8, n_fft=512, hop_length=512, n_mels=16,
                              time_pool=1)  # (8, 16): 1 + 8000 // 512 frames  # fmt: skip
SPECTROGRAM_FEATURES = FeatureConfig(sample_rate=16000, duration_s=0.5, kind="spectrogram", window_ms=25.0,
                                     hop_ms=11.0, freq_bins=8, time_pool=4)  # (8, 11)  # fmt: skip
FRAMES_CONFIG = FramesConfig(source="opensmile", opensmile_set="eGeMAPSv02", sample_rate=16000, duration_s=0.5,
                             frames=FRAMES[0], time_pool=4, pool="mean")  # fmt: skip
SPACE = SearchSpaceConfig(init_channels=2, cnn_cells=3, cnn_nodes=2, stem_multiplier=1, seq_cells=1, seq_nodes=2,
                          seq_hidden=4, cnn_ops=["none", "skip_connect", "sep_conv_3x3", "dil_conv_3x3"],
                          seq_ops=["none", "skip_connect", "lstm_1", "rnn_att_1"], fusion="supplement")  # fmt: skip

# Runs in a new Python process that imports TensorFlow and NumPy only: every case of the inputs file through
# serving_default, by name; an error is recorded with its message.
FRESH = r"""
import json, sys
import numpy as np
import tensorflow as tf

loaded = tf.saved_model.load(sys.argv[1])
sig = loaded.signatures["serving_default"]
answers, arrays = {}, {}
with np.load(sys.argv[2]) as data:
    cases = {}
    for key in data.files:
        case, name = key.split("/")
        cases.setdefault(case, {})[name] = data[key]
for case, inputs in sorted(cases.items()):
    try:
        out = sig(**{k: tf.constant(v) for k, v in inputs.items()})
    except tf.errors.InvalidArgumentError as exc:
        answers[case] = {"error": exc.message}
        continue
    answers[case] = {k: list(v.shape) for k, v in out.items()}
    arrays[case + "/probabilities"] = out["probabilities"].numpy()
    arrays[case + "/class_id"] = out["class_id"].numpy()
np.savez(sys.argv[3], **arrays)
_, spec = sig.structured_input_signature
print(json.dumps({"answers": answers, "signatures": sorted(loaded.signatures),
                  "inputs": {k: [v.dtype.name, v.shape.as_list()] for k, v in spec.items()},
                  "ours": sorted(m for m in sys.modules if m.startswith(("emodarts_tf", "librosa")))}))
"""


@dataclass
class TwoStreamExport:
    model_dir: Path
    version_dir: Path
    image: str  # the image input's name
    image_shape: tuple
    log: str


def two_stream_model_dir(path: Path, image: str, features: FeatureConfig, normalize: str, seed: int = 0) -> Path:
    """A two-stream model directory as ``evaluation.fitting`` writes one: a tiny EmotionNAS network of a derived
    genotype (random weights), ``normalization.npz`` from made-up raw training features as
    ``data.pipeline`` computes it for ``normalize`` (identity for ``speaker``: its inputs are z-scored per
    speaker before), and the ``model_info.json`` keys of a two-stream fold."""
    import keras

    from emodarts_tf.search_space.two_stream import TwoStreamSearchBackbone, build_fixed_two_stream

    height, width = (features.n_mfcc, 16) if features.kind == "mfcc" else spectrogram_shape(features)
    shapes = {image: (height, width, 1), "frames": FRAMES}
    keras.utils.set_random_seed(seed)
    rng = np.random.default_rng(seed)
    net = TwoStreamSearchBackbone(SPACE, shapes, num_classes=len(CLASSES))
    genotype = net.derive_genotype({k: rng.normal(size=s) for k, s in net.alpha_shapes().items()})
    model = build_fixed_two_stream(genotype, SPACE, shapes, num_classes=len(CLASSES))
    # Raw training features: per-row (coefficient) and per-dimension offsets and scales, as real ones have.
    x = rng.normal(rng.normal(0, 20, (1, height, 1)), rng.uniform(2, 10, (1, height, 1)), (20, height, width))
    f = rng.normal(rng.normal(0, 5, (1, 1, FRAMES[1])), rng.uniform(0.5, 3, (1, 1, FRAMES[1])), (20, *FRAMES))
    mean, std = normalization_stats(x, normalize)
    frames_mean, frames_std = (a[..., 0].T for a in normalization_stats(np.transpose(f, (0, 2, 1)), normalize))
    info = {
        "kind": "emotionnas",
        "classes": CLASSES,
        "features": dataclasses.asdict(features),
        "frames": dataclasses.asdict(FRAMES_CONFIG),
        "input_shape": [height, width, 1],
        "input_shapes": {image: [height, width, 1], "frames": list(FRAMES)},
        "image_name": image,
        "normalize": normalize,
        "genotype": genotype.to_dict(),
        "space": dataclasses.asdict(SPACE),
        "corpus": "emodb",
        "fold": {"index": 1, "name": "03", "train_speakers": ["08", "09"], "val_speakers": ["10"],
                 "test_speakers": ["03"]},
    }  # fmt: skip
    from emodarts_tf.evaluation.model_dir import save_model_dir

    return save_model_dir(path, model, info, mean, std, frames_mean, frames_std)


def _export(root: Path, image: str, features: FeatureConfig, normalize: str) -> TwoStreamExport:
    """The model directory exported with ``cli/export.py`` (its reload-and-compare check included)."""
    model_dir = two_stream_model_dir(root / "fold1", image, features, normalize)
    log = export_with_cli(model_dir, root / "serving")
    shape = tuple(load_model_dir(model_dir).input_shape)
    return TwoStreamExport(model_dir, root / "serving" / "1", image, shape, log)


@pytest.fixture(scope="module")
def coefficient_export(tmp_path_factory) -> TwoStreamExport:
    return _export(tmp_path_factory.mktemp("two-stream-coefficient"), "mfcc", MFCC_FEATURES, "coefficient")


@pytest.fixture(scope="module")
def speaker_export(tmp_path_factory) -> TwoStreamExport:
    return _export(tmp_path_factory.mktemp("two-stream-speaker"), "spectrogram", SPECTROGRAM_FEATURES, "speaker")


def _raw_batch(export: TwoStreamExport, n: int, seed: int, speakers: int = 1):
    """Raw images (n, H, W, 1) and frames (n, T, D) of ``speakers`` made-up speakers (their own offsets and
    scales per row / dimension), and each instance's speaker index."""
    rng = np.random.default_rng(seed)
    h, w, _ = export.image_shape
    who = np.arange(n) % speakers
    m, s = rng.normal(0, 20, (speakers, h, 1)), rng.uniform(2, 10, (speakers, h, 1))
    fm, fs = rng.normal(0, 5, (speakers, 1, FRAMES[1])), rng.uniform(0.5, 3, (speakers, 1, FRAMES[1]))
    x = (m[who] + s[who] * rng.normal(size=(n, h, w))).astype(np.float32)[..., np.newaxis]
    f = (fm[who] + fs[who] * rng.normal(size=(n, *FRAMES))).astype(np.float32)
    return x, f, who


def _fresh(export: TwoStreamExport, cases: dict, work: Path):
    """``cases`` ({case: {input: array}}) through serving_default in a new process: (report, arrays)."""
    inputs = {f"{case}/{k}": v for case, arrays in cases.items() for k, v in arrays.items()}
    return run_fresh(FRESH, export.version_dir, inputs, work)


def _speaker_rows(x, f, who):
    """Per-instance speaker statistics of the batch, by data.pipeline.speaker_statistics over each speaker's
    utterances: image rows (n, H), frames dimensions (n, D); and both streams z-scored with them (numpy)."""
    rows = {k: [] for k in ("speaker_mean", "speaker_std", "frames_speaker_mean", "frames_speaker_std")}
    stats = {}
    for s in np.unique(who):
        m, sd = speaker_statistics(x[who == s, ..., 0])  # (H, 1)
        fm, fsd = speaker_statistics(np.transpose(f[who == s], (0, 2, 1)))  # (D, 1)
        stats[s] = (m[:, 0], sd[:, 0], fm[:, 0], fsd[:, 0])
    for k, i in zip(rows, range(4)):
        rows[k] = np.stack([stats[s][i] for s in who]).astype(np.float32)
    xn = (x - rows["speaker_mean"][:, :, None, None]) / rows["speaker_std"][:, :, None, None]
    fn = (f - rows["frames_speaker_mean"][:, None, :]) / rows["frames_speaker_std"][:, None, :]
    return rows, xn.astype(np.float32), fn.astype(np.float32)


# ------------------------------------------------------------------------------------------ coefficient model
@pytest.fixture(scope="module")
def coefficient_fresh(coefficient_export, tmp_path_factory):
    e = coefficient_export
    x, f, _ = _raw_batch(e, 6, seed=1)
    h, w, _ = e.image_shape
    cases = {
        "batch": {e.image: x, "frames": f},
        "empty": {e.image: np.zeros((0, *e.image_shape), np.float32), "frames": np.zeros((0, *FRAMES), np.float32)},
        "frames_longer": {e.image: x, "frames": np.zeros((6, FRAMES[0] + 1, FRAMES[1]), np.float32)},
        "frames_dim": {e.image: x, "frames": np.zeros((6, FRAMES[0], FRAMES[1] - 1), np.float32)},
        "frames_rank2": {e.image: x, "frames": np.zeros((6, FRAMES[0]), np.float32)},
        "image_shape": {e.image: np.zeros((6, h, w + 1, 1), np.float32), "frames": f},
        "batch_mismatch": {e.image: x, "frames": f[:4]},
        "empty_frames_only": {e.image: x[:1], "frames": np.zeros((0, *FRAMES), np.float32)},
        "swapped": {e.image: x, "frames": f[::-1].copy()},
    }
    report, arrays = _fresh(e, cases, tmp_path_factory.mktemp("fresh-coefficient"))
    return x, f, report, arrays


def test_fresh_process_reload_equals_trained_model(coefficient_export, coefficient_fresh):
    x, f, report, out = coefficient_fresh
    assert report["ours"] == []  # neither emodarts_tf nor librosa was imported
    assert report["signatures"] == ["serving_default"]
    assert report["inputs"] == {"mfcc": ["float32", [None, *coefficient_export.image_shape]],
                                "frames": ["float32", [None, *FRAMES]]}  # fmt: skip
    expected = load_model_dir(coefficient_export.model_dir).probabilities(x, frames=f)
    got = out["batch/probabilities"]
    print(f"two-stream SavedModel vs TrainedModel, max |dp| = {np.max(np.abs(got - expected)):.3g}")
    np.testing.assert_allclose(got, expected, atol=TOLERANCE)
    np.testing.assert_array_equal(out["batch/class_id"], expected.argmax(axis=1))
    assert out["batch/class_id"].dtype == np.int64
    assert np.max(np.abs(expected - expected.mean(axis=0))) > 1e-4  # the answers depend on the input
    # The frames stream is read: other frames (the same images) give other probabilities.
    assert np.max(np.abs(out["swapped/probabilities"] - got)) > 1e-5


def test_empty_batch_answers_empty_outputs(coefficient_fresh):
    _, _, report, out = coefficient_fresh
    assert report["answers"]["empty"] == {"probabilities": [0, len(CLASSES)], "class_id": [0]}
    assert out["empty/probabilities"].dtype == np.float32 and out["empty/class_id"].dtype == np.int64


@pytest.mark.parametrize(
    "case, message",
    [
        ("frames_longer", r"serving_default: expected frames of shape \(batch, 12, 25\)"),
        ("frames_dim", r"serving_default: expected frames of shape \(batch, 12, 25\)"),
        ("frames_rank2", r"expected frames of shape \(batch, 12, 25\)|frames.*is not compatible"),
        ("image_shape", r"serving_default: expected mfcc of shape \(batch, 8, 16, 1\)"),
        ("batch_mismatch", r"serving_default: expected mfcc and frames with the same batch size.*\[6\] \[4\]"),
        ("empty_frames_only", r"serving_default: expected mfcc and frames with the same batch size.*\[1\] \[0\]"),
    ],
)
def test_bad_inputs_are_clear_graph_errors(coefficient_fresh, case, message):
    import re

    answer = coefficient_fresh[2]["answers"][case]
    assert "error" in answer, answer
    assert re.search(message, answer["error"], re.S), answer["error"][:500]


def test_export_info_says_there_is_no_waveform_signature(coefficient_export):
    extra = coefficient_export.version_dir / "assets.extra"
    info = json.loads((extra / "export_info.json").read_text())
    assert info["two_stream"] is True and info["kind"] == "emotionnas"
    assert sorted(info["signatures"]) == ["serving_default"]
    assert "serving_waveform" in info and info["serving_waveform"] is None
    reason = info["no_waveform_signature"]
    assert "openSMILE eGeMAPSv02" in reason and "outside TensorFlow" in reason
    inputs = info["signatures"]["serving_default"]["inputs"]
    assert list(inputs) == ["mfcc", "frames"]
    assert inputs["mfcc"]["shape"] == [None, 8, 16, 1] and inputs["frames"]["shape"] == [None, *FRAMES]
    assert {v["dtype"] for v in inputs.values()} == {"float32"}
    assert info["signatures"]["serving_default"]["outputs"]["probabilities"]["shape"] == [None, len(CLASSES)]
    assert info["streams"]["mfcc"]["features"] == dataclasses.asdict(MFCC_FEATURES)
    assert info["streams"]["frames"]["frames"] == dataclasses.asdict(FRAMES_CONFIG)
    assert info["normalize"] == "coefficient" and info["normalization"]["speaker_inputs"] == []
    assert "(frames - frames_mean) / frames_std" in info["normalization"]["model"]
    assert json.loads((extra / "frames_config.json").read_text())["opensmile_set"] == "eGeMAPSv02"
    assert json.loads((extra / "classes.json").read_text()) == CLASSES
    # cli/export.py verified the two-stream export and logged why there is no waveform signature.
    assert "verified: SavedModel and Keras probabilities agree" in coefficient_export.log
    assert "no serving_waveform: the frames stream (openSMILE eGeMAPSv02)" in coefficient_export.log


def test_clients_refuse_two_stream_exports(coefficient_export):
    from emodarts_tf.export.client import RestClient, ServedModel

    served = ServedModel(coefficient_export.version_dir)
    assert served.two_stream
    for call in (lambda: served.predict_mfcc(np.zeros((1, *coefficient_export.image_shape), np.float32)),
                 lambda: served.predict_waveform(np.zeros(8000, np.float32)),
                 lambda: served.speaker_statistics(np.zeros(8000, np.float32))):  # fmt: skip
        with pytest.raises(ValueError, match=r"is a two-stream \(EmotionNAS\) export.*\(frames, mfcc\)"):
            call()
    # What a client should do instead: the signature with both inputs by name.
    x, f, _ = _raw_batch(coefficient_export, 2, seed=3)
    import tensorflow as tf

    out = served.signature("serving_default")(mfcc=tf.constant(x), frames=tf.constant(f))
    expected = load_model_dir(coefficient_export.model_dir).probabilities(x, frames=f)
    np.testing.assert_allclose(out["probabilities"].numpy(), expected, atol=TOLERANCE)
    rest = RestClient.from_export(coefficient_export.version_dir, "http://127.0.0.1:9")
    with pytest.raises(ValueError, match=r"model 'emodarts' is a two-stream"):
        rest.predict_mfcc(x)
    with pytest.raises(ValueError, match=r"two-stream"):
        rest.predict_waveform(np.zeros(8000, np.float32))


# ------------------------------------------------------------------------------------------ speaker model
@pytest.fixture(scope="module")
def speaker_fresh(speaker_export, tmp_path_factory):
    e = speaker_export
    x, f, who = _raw_batch(e, 8, seed=2, speakers=2)
    rows, xn, fn = _speaker_rows(x, f, who)
    h = e.image_shape[0]
    good = {e.image: x, "frames": f, **rows}
    cases = {
        "batch": good,
        "swapped_frames_statistics": {**good, "frames_speaker_mean": rows["frames_speaker_mean"][::-1].copy(),
                                      "frames_speaker_std": rows["frames_speaker_std"][::-1].copy()},
        "empty": {e.image: np.zeros((0, *e.image_shape), np.float32), "frames": np.zeros((0, *FRAMES), np.float32),
                  **{k: np.zeros((0, v.shape[1]), np.float32) + (k.endswith("std")) for k, v in rows.items()}},
        "frames_mean_width": {**good, "frames_speaker_mean": np.zeros((8, FRAMES[1] + 1), np.float32)},
        "frames_std_batch": {**good, "frames_speaker_std": np.ones((3, FRAMES[1]), np.float32)},
        "frames_std_zero": {**good, "frames_speaker_std": np.zeros((8, FRAMES[1]), np.float32)},
        "image_mean_width": {**good, "speaker_mean": np.zeros((8, h + 1), np.float32)},
        "batch_mismatch": {**good, "frames": f[:5]},
        "frames_shape": {**good, "frames": np.zeros((8, FRAMES[0], FRAMES[1] + 2), np.float32)},
    }  # fmt: skip
    report, arrays = _fresh(e, cases, tmp_path_factory.mktemp("fresh-speaker"))
    return xn, fn, report, arrays


def test_speaker_export_equals_trained_model_on_speaker_normalised_input(speaker_export, speaker_fresh):
    """Two made-up speakers in one batch, each instance with its speaker's statistics of both streams."""
    xn, fn, report, out = speaker_fresh
    assert report["ours"] == [] and report["signatures"] == ["serving_default"]
    h = speaker_export.image_shape[0]
    assert report["inputs"] == {
        "spectrogram": ["float32", [None, *speaker_export.image_shape]], "frames": ["float32", [None, *FRAMES]],
        "speaker_mean": ["float32", [None, h]], "speaker_std": ["float32", [None, h]],
        "frames_speaker_mean": ["float32", [None, FRAMES[1]]], "frames_speaker_std": ["float32", [None, FRAMES[1]]],
    }  # fmt: skip
    # The reference, independently: z-scores per speaker in numpy, then the model directory's own path.
    expected = load_model_dir(speaker_export.model_dir).probabilities(xn, frames=fn)
    got = out["batch/probabilities"]
    print(f"two-stream speaker export vs TrainedModel, max |dp| = {np.max(np.abs(got - expected)):.3g}")
    np.testing.assert_allclose(got, expected, atol=TOLERANCE)
    np.testing.assert_array_equal(out["batch/class_id"], expected.argmax(axis=1))
    # The frames statistics are applied: another speaker's give other probabilities.
    assert np.max(np.abs(out["swapped_frames_statistics/probabilities"] - got)) > 1e-5
    assert report["answers"]["empty"] == {"probabilities": [0, len(CLASSES)], "class_id": [0]}


@pytest.mark.parametrize(
    "case, message",
    [
        ("frames_mean_width", r"expected frames_speaker_mean of shape \(batch, 25\)"),
        ("frames_std_batch", r"expected frames_speaker_std of shape \(batch, 25\)"),
        ("frames_std_zero", r"expected frames_speaker_std finite and > 0"),
        ("image_mean_width", r"expected speaker_mean of shape \(batch, 8\)"),
        ("batch_mismatch", r"expected spectrogram and frames with the same batch size"),
        ("frames_shape", r"expected frames of shape \(batch, 12, 25\)"),
    ],
)
def test_bad_speaker_inputs_are_clear_graph_errors(speaker_fresh, case, message):
    import re

    answer = speaker_fresh[2]["answers"][case]
    assert "error" in answer, answer
    assert re.search(r"serving_default: " + message, answer["error"]), answer["error"][:500]


def test_speaker_export_info_documents_offline_statistics(speaker_export):
    info = json.loads((speaker_export.version_dir / "assets.extra" / "export_info.json").read_text())
    assert info["normalize"] == "speaker" and sorted(info["signatures"]) == ["serving_default"]
    assert info["serving_waveform"] is None
    reason = info["no_waveform_signature"]
    assert "openSMILE" in reason and "spectrogram front end" in reason
    norm = info["normalization"]
    assert norm["speaker_inputs"] == ["speaker_mean", "speaker_std", "frames_speaker_mean", "frames_speaker_std"]
    assert norm["speaker_statistics_signature"] is None and "openSMILE" in norm["no_speaker_statistics_signature"]
    assert "frames_speaker_mean[:, None, :]" in norm["formula"] and "speaker_mean[:, :, None, None]" in norm["formula"]
    assert "every frame of every utterance" in norm["statistics"] and "1e-06" in norm["statistics"]
    inputs = info["signatures"]["serving_default"]["inputs"]
    assert list(inputs) == ["spectrogram", "frames", "speaker_mean", "speaker_std", "frames_speaker_mean",
                            "frames_speaker_std"]  # fmt: skip
    assert inputs["frames_speaker_std"]["shape"] == [None, FRAMES[1]]
    assert info["streams"]["spectrogram"]["features"]["kind"] == "spectrogram"
    assert "normalisation: speaker (per-speaker z-scores of both streams" in speaker_export.log


def test_one_stream_spectrogram_model_is_refused(tmp_path):
    """A one-stream model on spectrograms: the waveform signature would compute MFCCs, so no export."""
    from emodarts_tf.export.saved_model import export_model
    from export_helpers import tiny_model_dir

    h, w = spectrogram_shape(SPECTROGRAM_FEATURES)
    x = np.random.default_rng(0).normal(size=(8, h, w)).astype(np.float32)
    model_dir = tiny_model_dir(tmp_path / "fold1", dataclasses.asdict(SPECTROGRAM_FEATURES), "coefficient", x,
                               np.arange(8) % 4, CLASSES, epochs=1)  # fmt: skip
    with pytest.raises(ValueError, match=r"features.kind 'spectrogram' cannot be exported as a one-stream model"):
        export_model(model_dir, tmp_path / "serving", 1)
    assert not (tmp_path / "serving").exists()
