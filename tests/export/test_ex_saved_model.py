"""The exported SavedModel: reloaded in a fresh process with TensorFlow only it equals the Keras model on
real EmoDB utterances; its signatures, outputs and assets; its waveform signature agrees with the librosa
features; bad inputs are clear errors."""
from __future__ import annotations

import json

import numpy as np
import pytest
import tensorflow as tf

from emodarts_tf.data.features import extract_mfcc
from emodarts_tf.evaluation.model_dir import load_model_dir
from export_helpers import run_fresh, waveforms_16k

TOLERANCE = 1e-5

FRESH = r"""
import json, sys
import numpy as np
import tensorflow as tf

loaded = tf.saved_model.load(sys.argv[1])
data = np.load(sys.argv[2])
a = loaded.signatures["serving_default"](mfcc=tf.constant(data["mfcc"]))
b = loaded.signatures["serving_waveform"](waveform=tf.constant(data["waveform"]), sample_rate=tf.constant(16000))
np.savez(sys.argv[3], p_mfcc=a["probabilities"].numpy(), c_mfcc=a["class_id"].numpy(),
         p_wave=b["probabilities"].numpy(), c_wave=b["class_id"].numpy())
print(json.dumps({"ours": sorted(m for m in sys.modules if m.startswith(("emodarts_tf", "librosa"))),
                  "signatures": sorted(loaded.signatures)}))
"""


@pytest.fixture(scope="module")
def utterances(emodb_root):
    """16 real EmoDB utterances of speakers the model never saw (11 to 16), all seven emotions."""
    wavs = sorted((emodb_root / "wav").glob("1[1-6]*.wav"))
    return wavs[:: max(1, len(wavs) // 16)][:16]


@pytest.fixture(scope="module")
def fresh(exported, utterances, tmp_path_factory):
    """Both signatures run in a new Python process that imports TensorFlow and NumPy only."""
    cfg = exported.config.features
    raw = np.stack([extract_mfcc(p, cfg) for p in utterances])[..., np.newaxis]
    waves = waveforms_16k(utterances)
    report, outputs = run_fresh(FRESH, exported.version_dir, {"mfcc": raw, "waveform": waves},
                                tmp_path_factory.mktemp("fresh"))
    return raw, waves, outputs, report


def test_fresh_process_reload_equals_keras(exported, fresh):
    raw, _, out, report = fresh
    assert report["ours"] == []  # neither emodarts_tf nor librosa was imported
    assert report["signatures"] == ["serving_default", "serving_waveform"]
    keras_probs = load_model_dir(exported.model_dir).probabilities(raw)
    diff = np.max(np.abs(out["p_mfcc"] - keras_probs))
    print(f"SavedModel vs Keras, max |dp| = {diff:.3g} over {len(raw)} EmoDB utterances; classes {out['c_mfcc'].tolist()}")
    assert diff <= TOLERANCE
    np.testing.assert_array_equal(out["c_mfcc"], keras_probs.argmax(axis=1))
    np.testing.assert_allclose(out["p_mfcc"].sum(axis=1), 1.0, atol=1e-5)


def test_waveform_signature_agrees_with_librosa_features(exported, fresh):
    raw, _, out, _ = fresh
    keras_probs = load_model_dir(exported.model_dir).probabilities(raw)
    assert len(set(out["c_mfcc"].tolist())) >= 2  # the model tells classes apart: agreement means something
    np.testing.assert_array_equal(out["c_wave"], keras_probs.argmax(axis=1))
    diff = np.max(np.abs(out["p_wave"] - keras_probs))
    print(f"waveform signature vs Keras on librosa MFCCs, max |dp| = {diff:.3g}")
    assert diff < 1e-3


def test_signatures_and_outputs(loaded, exported):
    assert sorted(loaded.signatures) == ["serving_default", "serving_waveform"]
    mfcc_sig = loaded.signatures["serving_default"]
    _, inputs = mfcc_sig.structured_input_signature
    assert list(inputs) == ["mfcc"]
    assert tuple(inputs["mfcc"].shape) == (None, *exported.fold_data.input_shape)
    assert inputs["mfcc"].dtype == tf.float32
    for sig in loaded.signatures.values():
        outputs = sig.structured_outputs
        assert sorted(outputs) == ["class_id", "probabilities"]
        assert outputs["probabilities"].dtype == tf.float32 and outputs["class_id"].dtype == tf.int64
        assert tuple(outputs["probabilities"].shape) == (None, 4)
    _, inputs = loaded.signatures["serving_waveform"].structured_input_signature
    assert sorted(inputs) == ["sample_rate", "waveform"]
    assert inputs["waveform"].dtype == tf.float32 and inputs["sample_rate"].dtype == tf.int32


def test_assets_beside_the_model(exported):
    extra = exported.version_dir / "assets.extra"
    classes = json.loads((extra / "classes.json").read_text())
    assert classes == exported.fold_data.classes == ["ang", "hap", "neu", "sad"]
    assert (extra / "labels.txt").read_text().split() == classes
    assert json.loads((extra / "feature_config.json").read_text())["sample_rate"] == 16000
    info = json.loads((extra / "export_info.json").read_text())
    assert info["signatures"]["serving_waveform"]["inputs"]["sample_rate"]["value"] == 16000
    assert (exported.version_dir / "saved_model.pb").is_file() and (exported.version_dir / "variables").is_dir()
    # No half-written temporary directories are left in the base path.
    assert sorted(p.name for p in exported.version_dir.parent.iterdir()) == ["3"]


def test_mfcc_normalisation_is_in_the_graph(loaded, exported):
    trained = load_model_dir(exported.model_dir)
    raw = trained.mean + trained.std * np.random.default_rng(0).normal(size=(3, *trained.input_shape)).astype("float32")
    got = loaded.signatures["serving_default"](mfcc=tf.constant(raw.astype("float32")))["probabilities"].numpy()
    np.testing.assert_allclose(got, trained.probabilities(raw), atol=TOLERANCE)


@pytest.mark.parametrize(
    "waveform, rate, message",
    [
        (np.zeros((2, 16000), "float32"), [22050, 22050], r"expected audio at 16000 Hz"),
        (np.zeros((16000,), "float32"), [16000], r"Shape of tensor waveform \[16000\] is not compatible with expected shape \[\?,\?\]|expected waveform of shape \(batch, samples\)"),
        (np.zeros((1, 16000, 2), "float32"), [16000], r"waveform \[1,16000,2\] is not compatible|expected waveform of shape \(batch, samples\)"),
        (np.full((1, 16000), 3000.0, "float32"), [16000], r"expected float samples in \[-1, 1\]"),
        (np.zeros((1, 0), "float32"), [16000], r"at least one sample"),
        (np.zeros((3, 100), "float32"), [16000, 16000], r"one sample_rate per waveform"),
        (np.full((1, 100), np.nan, "float32"), [16000], r"NaN or infinity"),
    ],
    ids=["rate", "rank1", "stereo", "int16-scale", "empty", "rate-count", "nan"],
)
def test_bad_waveforms_are_clear_errors(loaded, waveform, rate, message):
    with pytest.raises(tf.errors.InvalidArgumentError, match=message):
        loaded.signatures["serving_waveform"](waveform=tf.constant(waveform), sample_rate=tf.constant(rate, tf.int32))


@pytest.mark.parametrize("shape", [(2, 16, 31), (2, 16, 30, 1), (2, 31, 16, 1), (2, 16, 31, 1, 1)])
def test_wrong_mfcc_shape_is_a_clear_error(loaded, shape):
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"expected mfcc of shape \(batch, 16, 31, 1\)"):
        loaded.signatures["serving_default"](mfcc=tf.zeros(shape))


def test_existing_version_and_bad_version(exported):
    from emodarts_tf.export.saved_model import export_model

    with pytest.raises(ValueError, match=r"exists \(versions present: \[3\]\); pick --version 4 or pass --overwrite"):
        export_model(exported.model_dir, exported.version_dir.parent, 3)
    with pytest.raises(ValueError, match="positive integer"):
        export_model(exported.model_dir, exported.version_dir.parent, 0)
