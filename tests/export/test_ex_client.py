"""The Python client: input checks, the in-process ``ServedModel``, and the REST body and answer in TF
Serving's row format (against a stand-in server that answers the way TF Serving's REST API does)."""
from __future__ import annotations

import json

import numpy as np
import pytest

from emodarts_tf.export.client import RestClient, ServedModel, read_wav, rest_request_waveform, waveform_batch
from export_helpers import tf_serving_like, waveforms_16k


def test_waveform_batch_pads_and_checks():
    batch = waveform_batch([np.ones(5, "float32") * 0.1, np.ones(3, "float32") * 0.2])
    assert batch.shape == (2, 5) and batch[1, 3:].tolist() == [0.0, 0.0]
    assert waveform_batch(np.zeros(7, "float32")).shape == (1, 7)
    for bad, message in [
        (dict(waveforms=np.zeros(10), sample_rate=22050), "takes 16000 Hz audio, received 22050 Hz"),
        (dict(waveforms=np.zeros((1, 10, 2))), r"expected \(samples,\) or \(batch, samples\) mono audio"),
        (dict(waveforms=[np.zeros((10, 2))]), "expected mono samples"),
        (dict(waveforms=[np.zeros(0)]), "empty"),
        (dict(waveforms=[np.full(4, 12000.0)]), r"expected floats in \[-1, 1\]"),
        (dict(waveforms=[np.array([0.0, np.nan])]), "NaN"),
    ]:
        with pytest.raises(ValueError, match=message):
            waveform_batch(**bad)


def test_served_model_in_process(exported, emodb_root):
    served = ServedModel(exported.version_dir)
    path = sorted((emodb_root / "wav").glob("11*.wav"))[0]
    rows = served.predict_waveform(read_wav(path))
    assert len(rows) == 1 and rows[0]["class_name"] in served.classes
    assert sum(rows[0]["probabilities"]) == pytest.approx(1.0, abs=1e-5)
    with pytest.raises(ValueError, match="no saved_model.pb"):
        ServedModel(exported.version_dir.parent)


def test_rest_round_trip(exported, loaded, emodb_root):
    paths = sorted((emodb_root / "wav").glob("12*.wav"))[:2]
    waves = waveforms_16k(paths)
    body = rest_request_waveform(list(waves))
    assert body["signature_name"] == "serving_waveform"
    assert sorted(body["instances"][0]) == ["sample_rate", "waveform"] and body["instances"][0]["sample_rate"] == 16000
    json.dumps(body)  # plain JSON

    with tf_serving_like(loaded) as url:
        client = RestClient(url, "emodarts", classes=["ang", "hap", "neu", "sad"])
        assert client.endpoint == f"{url}/v1/models/emodarts:predict"
        assert client.speaker_normalised is False  # asked from the server's metadata: no speaker inputs
        rows = client.predict_waveform(list(waves))
        direct = ServedModel(exported.version_dir).predict_waveform(waves)
        assert [r["class_id"] for r in rows] == [r["class_id"] for r in direct]
        np.testing.assert_allclose([r["probabilities"] for r in rows], [r["probabilities"] for r in direct], atol=1e-6)
        # A wrong rate reaches the graph's check (the client checks too, so post the body by hand).
        bad = {"signature_name": "serving_waveform", "instances": [{"waveform": [0.0] * 100, "sample_rate": 8000}]}
        with pytest.raises(ValueError, match="expected audio at 16000 Hz"):
            client.post(bad)
        # Speaker statistics for a model that takes none: refused before anything is posted.
        with pytest.raises(ValueError, match="takes no speaker statistics"):
            client.predict_waveform(list(waves), speaker_mean=np.zeros(16), speaker_std=np.ones(16))
