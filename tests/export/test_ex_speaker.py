"""Exports of speaker-normalised models (``data.normalize: speaker``): both signatures take the statistics of
each utterance's speaker and equal the Keras model on the speaker-normalised input (computed here with
numpy); the ``speaker_statistics`` signature agrees with ``data.pipeline.speaker_statistics`` of librosa
MFCCs; missing or mis-shaped statistics are clear errors; a ``coefficient`` model's export is unchanged.

No emoDARTS network is trained: tiny model directories are written with ``save_model_dir`` around a small
CNN fitted for a few seconds on real EmoDB features (16 kHz, as the other export tests).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from emodarts_tf.config import FeatureConfig
from emodarts_tf.data.features import extract_mfcc
from emodarts_tf.data.pipeline import speaker_statistics
from emodarts_tf.evaluation.model_dir import load_model_dir
from emodarts_tf.export.client import (
    RestClient,
    ServedModel,
    rest_request_mfcc,
    rest_request_speaker_statistics,
    speaker_statistics_from_mfcc,
)
from export_helpers import (FEATURE_CONFIG_16K, emodb_utterances, export_with_cli, tf_serving_like, tiny_model_dir,
                            waveforms_16k)

TOLERANCE = 1e-5  # SavedModel vs Keras probabilities (as test_ex_saved_model)
MFCC_TOLERANCE = 1e-3  # in-graph vs librosa MFCCs at 16 kHz (as test_ex_waveform_mfcc); bounds |d mean|, |d std|
WAVEFORM_PROB_TOLERANCE = 1e-3  # waveform signature vs Keras on librosa features (as test_ex_saved_model)
CLASSES = ["ang", "hap", "neu", "sad"]
N_MFCC = FEATURE_CONFIG_16K["n_mfcc"]


@dataclass
class Speaker:
    name: str
    paths: list
    mfcc: np.ndarray  # (n, n_mfcc, frames) librosa, raw
    waves: np.ndarray  # (n, samples) 16 kHz


@dataclass
class SpeakerExport:
    model_dir: Path
    version_dir: Path
    loaded: object
    log: str


def _features(items, cfg):
    return np.stack([extract_mfcc(p, cfg) for p, _, _ in items]).astype(np.float32)


def _speaker_normalised(x, who):
    out = np.empty_like(x)
    for s in np.unique(who):
        mean, std = speaker_statistics(x[who == s])
        out[who == s] = (x[who == s] - mean) / std
    return out


@pytest.fixture(scope="module")
def cfg():
    return FeatureConfig(**FEATURE_CONFIG_16K)


@pytest.fixture(scope="module")
def training(emodb_root, cfg):
    """Raw MFCCs, labels and speakers of 4 EmoDB training speakers (3 utterances per emotion each)."""
    items = emodb_utterances(emodb_root, ("03", "08", "09", "10"), per_class=3)
    x = _features(items, cfg)
    y = np.array([CLASSES.index(label) for _, label, _ in items])
    return x, y, np.array([s for _, _, s in items])


@pytest.fixture(scope="module")
def speakers(emodb_root, cfg):
    """Two speakers the models never saw, 8 utterances each."""
    out = []
    for name in ("11", "12"):
        items = emodb_utterances(emodb_root, (name,), per_class=2)
        paths = [p for p, _, _ in items]
        out.append(Speaker(name, paths, _features(items, cfg), waveforms_16k(paths)))
    return out


@pytest.fixture(scope="module")
def speaker_export(tmp_path_factory, training, cfg) -> SpeakerExport:
    """A speaker-normalised model directory exported with ``cli/export.py`` (self-check included)."""
    x, y, who = training
    root = tmp_path_factory.mktemp("speaker-export")
    model_dir = tiny_model_dir(root / "fold1", FEATURE_CONFIG_16K, "speaker", _speaker_normalised(x, who), y, CLASSES)
    log = export_with_cli(model_dir, root / "serving")
    version_dir = root / "serving" / "1"
    return SpeakerExport(model_dir, version_dir, tf.saved_model.load(str(version_dir)), log)


@pytest.fixture(scope="module")
def coefficient_export(tmp_path_factory, training):
    from emodarts_tf.export.saved_model import export_model

    x, y, _ = training
    root = tmp_path_factory.mktemp("coefficient-export")
    model_dir = tiny_model_dir(root / "fold1", FEATURE_CONFIG_16K, "coefficient", x, y, CLASSES)
    return model_dir, export_model(model_dir, root / "serving", 1)


def _inputs(sig) -> dict:
    return sig.structured_input_signature[1]


def test_signatures_inputs_and_export_info(speaker_export):
    loaded = speaker_export.loaded
    assert sorted(loaded.signatures) == ["serving_default", "serving_waveform", "speaker_statistics"]
    mfcc_inputs = _inputs(loaded.signatures["serving_default"])
    assert sorted(mfcc_inputs) == ["mfcc", "speaker_mean", "speaker_std"]
    for key in ("speaker_mean", "speaker_std"):
        assert tuple(mfcc_inputs[key].shape.as_list()) == (None, N_MFCC) and mfcc_inputs[key].dtype == tf.float32
    assert sorted(_inputs(loaded.signatures["serving_waveform"])) == ["sample_rate", "speaker_mean", "speaker_std",
                                                                      "waveform"]  # fmt: skip
    stats_sig = loaded.signatures["speaker_statistics"]
    assert sorted(_inputs(stats_sig)) == ["sample_rate", "waveform"]
    assert {k: tuple(v.shape.as_list()) for k, v in stats_sig.structured_outputs.items()} == {
        "speaker_mean": (N_MFCC,), "speaker_std": (N_MFCC,)}  # fmt: skip

    extra = speaker_export.version_dir / "assets.extra"
    info = json.loads((extra / "export_info.json").read_text())
    assert info["normalize"] == "speaker"
    assert info["normalization"]["speaker_inputs"] == ["speaker_mean", "speaker_std"]
    for name in ("serving_default", "serving_waveform"):
        assert info["signatures"][name]["inputs"]["speaker_mean"]["shape"] == [None, N_MFCC]
    assert info["signatures"]["speaker_statistics"]["outputs"]["speaker_std"]["shape"] == [N_MFCC]
    assert json.loads((extra / "classes.json").read_text()) == CLASSES
    assert json.loads((extra / "feature_config.json").read_text())["n_mfcc"] == N_MFCC
    # cli/export.py says which normalisation the export applies, and verified the speaker case.
    assert "normalisation: speaker" in speaker_export.log
    assert "speaker_statistics agrees with data.pipeline.speaker_statistics" in speaker_export.log


def test_mfcc_signature_equals_keras_on_speaker_normalised_input(speaker_export, speakers):
    """Two unseen speakers in one batch, each utterance with its own speaker's statistics."""
    trained = load_model_dir(speaker_export.model_dir)
    raw = np.concatenate([s.mfcc for s in speakers])
    stats = [speaker_statistics(s.mfcc) for s in speakers]  # numpy, (n_mfcc, 1) each
    rows = np.concatenate([np.repeat(m.T, len(s.mfcc), axis=0) for s, (m, _) in zip(speakers, stats)])
    std_rows = np.concatenate([np.repeat(d.T, len(s.mfcc), axis=0) for s, (_, d) in zip(speakers, stats)])
    # The reference, independently: z-scores per speaker in numpy, then the Keras model.
    normalised = np.concatenate([(s.mfcc - m) / d for s, (m, d) in zip(speakers, stats)])[..., np.newaxis]
    expected = trained.probabilities(normalised)

    out = speaker_export.loaded.signatures["serving_default"](
        mfcc=tf.constant(raw[..., np.newaxis]), speaker_mean=tf.constant(rows), speaker_std=tf.constant(std_rows)
    )
    got = out["probabilities"].numpy()
    print(f"speaker export vs Keras, max |dp| = {np.max(np.abs(got - expected)):.3g}; classes {out['class_id'].numpy()}")
    np.testing.assert_allclose(got, expected, atol=TOLERANCE)
    np.testing.assert_array_equal(out["class_id"].numpy(), expected.argmax(axis=1))
    assert np.max(np.abs(expected - expected.mean(axis=0))) > 0.05  # the model's answers depend on the input
    # The statistics matter: another speaker's give other probabilities.
    swapped = speaker_export.loaded.signatures["serving_default"](
        mfcc=tf.constant(raw[..., np.newaxis]), speaker_mean=tf.constant(rows[::-1]), speaker_std=tf.constant(std_rows[::-1])
    )["probabilities"].numpy()
    assert np.max(np.abs(swapped - expected)) > 1e-3


def test_speaker_statistics_signature_agrees_with_numpy_on_librosa(speaker_export, speakers):
    for s in speakers:
        out = speaker_export.loaded.signatures["speaker_statistics"](
            waveform=tf.constant(s.waves), sample_rate=tf.constant(16000)
        )
        ref_mean, ref_std = speaker_statistics(s.mfcc)
        d_mean = np.max(np.abs(out["speaker_mean"].numpy() - ref_mean[:, 0]))
        d_std = np.max(np.abs(out["speaker_std"].numpy() - ref_std[:, 0]))
        print(f"speaker {s.name}: |d mean| {d_mean:.3g}, |d std| {d_std:.3g} (std {ref_std.min():.2f}..{ref_std.max():.2f})")
        assert d_mean < MFCC_TOLERANCE and d_std < MFCC_TOLERANCE
        # The client's numpy helper is the pipeline's function.
        mean, std = speaker_statistics_from_mfcc(s.mfcc)
        np.testing.assert_array_equal(mean, ref_mean[:, 0])
        np.testing.assert_array_equal(std, ref_std[:, 0])
    # A constant coefficient gets std 1, as in the pipeline (silence: every MFCC at the -100 dB floor).
    out = speaker_export.loaded.signatures["speaker_statistics"](waveform=tf.zeros((2, 800)), sample_rate=tf.constant(16000))
    np.testing.assert_array_equal(out["speaker_std"].numpy(), np.ones(N_MFCC, np.float32))


def test_waveform_signature_with_in_graph_statistics(speaker_export, speakers):
    """Waveforms only (what a client without librosa has): statistics from speaker_statistics, then
    serving_waveform; equals Keras on librosa features z-scored with numpy statistics."""
    trained = load_model_dir(speaker_export.model_dir)
    served = ServedModel(speaker_export.version_dir)
    assert served.speaker_normalised and served.n_mfcc == N_MFCC
    for s in speakers:
        stats = served.speaker_statistics(list(s.waves))
        rows = served.predict_waveform(s.waves, speaker_mean=stats.mean, speaker_std=stats.std)
        mean, std = speaker_statistics(s.mfcc)
        expected = trained.probabilities(((s.mfcc - mean) / std)[..., np.newaxis])
        got = np.array([r["probabilities"] for r in rows])
        print(f"speaker {s.name}: waveform path vs Keras on librosa, max |dp| = {np.max(np.abs(got - expected)):.3g}")
        assert np.max(np.abs(got - expected)) < WAVEFORM_PROB_TOLERANCE
        assert [r["class_id"] for r in rows] == expected.argmax(axis=1).tolist()
        assert {r["class_name"] for r in rows} <= set(CLASSES)
        # predict_mfcc with one speaker's (n_mfcc,) statistics for the whole batch.
        by_mfcc = served.predict_mfcc(s.mfcc[..., np.newaxis], speaker_mean=mean[:, 0], speaker_std=std[:, 0])
        np.testing.assert_allclose([r["probabilities"] for r in by_mfcc], expected, atol=TOLERANCE)


@pytest.mark.parametrize(
    "change, message",
    [
        (dict(speaker_mean=np.zeros((3, N_MFCC + 1))), r"expected speaker_mean of shape \(batch, 16\)"),
        (dict(speaker_std=np.ones((2, N_MFCC))), r"expected speaker_std of shape \(batch, 16\)"),
        (dict(speaker_mean=np.zeros((N_MFCC,))), r"expected speaker_mean of shape \(batch, 16\)"),
        (dict(speaker_std=np.ones((3, N_MFCC, 1))), r"expected speaker_std of shape \(batch, 16\)"),
        (dict(speaker_std=np.zeros((3, N_MFCC))), r"expected speaker_std finite and > 0"),
        (dict(speaker_std=np.full((3, N_MFCC), -1.0)), r"expected speaker_std finite and > 0"),
        (dict(speaker_mean=np.full((3, N_MFCC), np.nan)), r"speaker_mean holds NaN or infinity"),
    ],
    ids=["mean-n_mfcc", "std-batch", "mean-rank1", "std-rank3", "std-zero", "std-negative", "mean-nan"],
)
def test_bad_speaker_inputs_are_clear_graph_errors(speaker_export, change, message):
    inputs = {"mfcc": np.zeros((3, N_MFCC, 31, 1)), "speaker_mean": np.zeros((3, N_MFCC)), "speaker_std": np.ones((3, N_MFCC))}
    inputs.update(change)
    tensors = {k: tf.constant(v, tf.float32) for k, v in inputs.items()}
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"serving_default: " + message):
        speaker_export.loaded.signatures["serving_default"](**tensors)
    waveform = {"waveform": tf.zeros((3, 4000)), "sample_rate": tf.constant(16000)}
    speaker = {k: v for k, v in tensors.items() if k != "mfcc"}
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"serving_waveform: " + message):
        speaker_export.loaded.signatures["serving_waveform"](**waveform, **speaker)


def test_speaker_statistics_signature_checks_its_waveforms(speaker_export):
    sig = speaker_export.loaded.signatures["speaker_statistics"]
    for waveform, rate, message in [
        (np.zeros((2, 800), "float32"), 22050, r"speaker_statistics: expected audio at 16000 Hz"),
        # As serving_waveform (test_ex_saved_model): TensorFlow's shape check may answer first.
        (np.zeros((1, 800, 2), "float32"), 16000,
         r"waveform \[1,800,2\] is not compatible|speaker_statistics: expected waveform of shape \(batch, samples\)"),
        (np.full((1, 800), 3000.0, "float32"), 16000, r"speaker_statistics: expected float samples in \[-1, 1\]"),
        (np.full((1, 800), np.inf, "float32"), 16000, r"speaker_statistics: waveform holds NaN or infinity"),
    ]:
        with pytest.raises(tf.errors.InvalidArgumentError, match=message):
            sig(waveform=tf.constant(waveform), sample_rate=tf.constant(rate, tf.int32))


def test_clients_require_speaker_statistics(speaker_export, speakers):
    served = ServedModel(speaker_export.version_dir)
    s = speakers[0]
    with pytest.raises(ValueError, match=r"trained with speaker normalisation .*missing: speaker_mean, speaker_std"):
        served.predict_waveform(s.waves)
    with pytest.raises(ValueError, match=r"missing: speaker_std"):
        served.predict_mfcc(s.mfcc[..., np.newaxis], speaker_mean=np.zeros(N_MFCC))
    with pytest.raises(ValueError, match=r"speaker_mean: expected one speaker's statistics \(16,\) or one row per utterance"):
        served.predict_mfcc(s.mfcc[..., np.newaxis], speaker_mean=np.zeros(N_MFCC + 1), speaker_std=np.ones(N_MFCC + 1))
    with pytest.raises(ValueError, match=r"with batch 8, received shape \(3, 16\)"):
        served.predict_mfcc(s.mfcc[..., np.newaxis], speaker_mean=np.zeros((3, N_MFCC)), speaker_std=np.ones((3, N_MFCC)))
    with pytest.raises(ValueError, match=r"speaker_std: expected values > 0"):
        served.predict_waveform(s.waves, speaker_mean=np.zeros(N_MFCC), speaker_std=np.zeros(N_MFCC))
    with pytest.raises(ValueError, match="expected one speaker's raw MFCCs"):
        speaker_statistics_from_mfcc(np.zeros((2, 3, 4, 5)))


def test_rest_client_with_speaker_statistics(speaker_export, speakers):
    s = speakers[1]
    body = rest_request_mfcc(s.mfcc[..., np.newaxis], speaker_mean=np.zeros(N_MFCC), speaker_std=np.ones(N_MFCC))
    assert sorted(body["instances"][0]) == ["mfcc", "speaker_mean", "speaker_std"]
    assert len(body["instances"][0]["speaker_mean"]) == N_MFCC
    stats_body = rest_request_speaker_statistics(list(s.waves))
    assert stats_body["signature_name"] == "speaker_statistics" and sorted(stats_body["inputs"]) == ["sample_rate", "waveform"]
    json.dumps(stats_body)

    direct = ServedModel(speaker_export.version_dir)
    want_stats = direct.speaker_statistics(s.waves)
    want = direct.predict_waveform(s.waves, speaker_mean=want_stats.mean, speaker_std=want_stats.std)
    with tf_serving_like(speaker_export.loaded) as url:
        client = RestClient(url, "emodarts", classes=CLASSES)
        assert client.speaker_normalised is True  # from the server's metadata
        with pytest.raises(ValueError, match=r"model 'emodarts' was trained with speaker normalisation"):
            client.predict_waveform(list(s.waves))
        stats = client.speaker_statistics(list(s.waves))
        np.testing.assert_allclose(stats.mean, want_stats.mean, rtol=1e-6)
        np.testing.assert_allclose(stats.std, want_stats.std, rtol=1e-6)
        rows = client.predict_waveform(list(s.waves), speaker_mean=stats.mean, speaker_std=stats.std)
        assert [r["class_id"] for r in rows] == [r["class_id"] for r in want]
        np.testing.assert_allclose([r["probabilities"] for r in rows], [r["probabilities"] for r in want], atol=1e-6)
        # The graph's check answers through REST too (a body posted by hand, past the client's checks).
        bad = {"signature_name": "serving_default",
               "instances": [{"mfcc": s.mfcc[0, ..., np.newaxis].tolist(), "speaker_mean": [0.0] * (N_MFCC - 1),
                              "speaker_std": [1.0] * (N_MFCC - 1)}]}  # fmt: skip
        with pytest.raises(ValueError, match=r"expected speaker_mean of shape \(batch, 16\)"):
            client.post(bad)
    # from_export: classes and normalisation from the local copy, no metadata call needed.
    offline = RestClient.from_export(speaker_export.version_dir, "http://127.0.0.1:9")
    assert offline.classes == CLASSES and offline.speaker_normalised is True
    with pytest.raises(ValueError, match="trained with speaker normalisation"):
        offline.predict_mfcc(s.mfcc[..., np.newaxis])


def test_coefficient_export_is_unchanged(coefficient_export, speakers):
    """A model trained with data.normalize: coefficient: the two signatures of before, no speaker inputs."""
    model_dir, version_dir = coefficient_export
    loaded = tf.saved_model.load(str(version_dir))
    assert sorted(loaded.signatures) == ["serving_default", "serving_waveform"]
    assert list(_inputs(loaded.signatures["serving_default"])) == ["mfcc"]
    assert sorted(_inputs(loaded.signatures["serving_waveform"])) == ["sample_rate", "waveform"]
    info = json.loads((version_dir / "assets.extra" / "export_info.json").read_text())
    assert info["normalize"] == "coefficient" and info["normalization"]["speaker_inputs"] == []
    assert sorted(info["signatures"]) == ["serving_default", "serving_waveform"]
    assert sorted(info["signatures"]["serving_default"]["inputs"]) == ["mfcc"]
    trained = load_model_dir(model_dir)
    raw = np.concatenate([s.mfcc for s in speakers])[..., np.newaxis]
    got = loaded.signatures["serving_default"](mfcc=tf.constant(raw))["probabilities"].numpy()
    np.testing.assert_allclose(got, trained.probabilities(raw), atol=TOLERANCE)
    served = ServedModel(version_dir)
    assert not served.speaker_normalised
    with pytest.raises(ValueError, match="takes no speaker statistics"):
        served.predict_mfcc(raw, speaker_mean=np.zeros(N_MFCC), speaker_std=np.ones(N_MFCC))
    with pytest.raises(ValueError, match="not a speaker-normalised export"):
        served.speaker_statistics(speakers[0].waves)
