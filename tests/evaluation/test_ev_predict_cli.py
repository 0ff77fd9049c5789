"""``cli/predict.py``: the same probabilities as ``cli/evaluate.py`` for the same files and model, bad files
named and skipped, CSV / JSON outputs equal to the printed lines, speaker normalisation over the files given,
and an exported SavedModel giving the fold directory's predictions."""
from __future__ import annotations

import csv
import json
import logging
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from emodarts_tf.commands.evaluate import main as evaluate_main
from emodarts_tf.commands.predict import main as predict_main


def _sets(cache):
    return ["--set", f"data.cache_dir={cache}", "--set", "data.workers=1"]


def _manifest_rows(mini_manifest, n=5):
    with open(mini_manifest, encoding="utf-8") as handle:
        return list(csv.DictReader(handle))[:n]


def _parse_lines(text):
    """``path -> (predicted, {class: p})`` from predict's stdout lines."""
    out = {}
    for line in text.strip().splitlines():
        path, predicted, *probs = line.split("\t")
        out[path] = (predicted, {k: float(v) for k, v in (p.split("=") for p in probs)})
    return out


def _write_bad_files(folder):
    import soundfile as sf

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "x.wav").write_text("not audio at all, just some notes\n" * 10)  # a text file named .wav
    (folder / "empty.wav").write_bytes(b"")  # 0 bytes
    sf.write(folder / "noframes.wav", np.zeros(0, np.float32), 16000, subtype="PCM_16")  # a header, no samples
    (folder / "readme.txt").write_text("not an audio extension: not picked up from a folder\n")
    return ["x.wav", "empty.wav", "noframes.wav"]


def test_cli_predict_equals_evaluate(standin_run, mini_manifest, mini_cache, project_root, tmp_path):
    fold_dir, _ = standin_run
    rows = _manifest_rows(mini_manifest)
    manifest = tmp_path / "few.csv"
    manifest.write_text("path,label,speaker\n" + "".join(f"{r['path']},{r['label']},{r['speaker']}\n" for r in rows))
    report = tmp_path / "eval"
    assert evaluate_main(["--model", str(fold_dir), "--data", "csv", "--root", str(manifest), "--split", "all",
                          "--out", str(report), *_sets(mini_cache)]) == 0  # fmt: skip
    with open(report / "predictions.csv", encoding="utf-8") as handle:
        evaluated = {r["path"]: r for r in csv.DictReader(handle)}

    _write_bad_files(tmp_path / "bad")
    out_csv = tmp_path / "pred.csv"
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}  # the command's own default
    proc = subprocess.run(
        [sys.executable, str(project_root / "cli" / "predict.py"), "--model", str(fold_dir),
         *[r["path"] for r in rows], str(tmp_path / "bad" / "x.wav"), str(tmp_path / "bad" / "empty.wav"),
         "--out", str(out_csv)],
        capture_output=True, text=True, env=env, timeout=300, cwd=str(project_root),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    printed = _parse_lines(proc.stdout)
    assert list(printed) == [r["path"] for r in rows]  # only predictions on stdout, in the order given
    classes = ["ang", "hap", "neu", "sad"]
    for path, (predicted, probs) in printed.items():
        want = evaluated[path]
        assert predicted == want["predicted"]
        for c in classes:
            assert probs[c] == pytest.approx(float(want[f"p_{c}"]), abs=6e-5), (path, c)
    with open(out_csv, encoding="utf-8") as handle:
        written = list(csv.DictReader(handle))
    assert [r["path"] for r in written] == [r["path"] for r in rows]
    for r in written:
        for c in classes:
            assert float(r[f"p_{c}"]) == pytest.approx(float(evaluated[r["path"]][f"p_{c}"]), abs=2e-6)
    # The bad files are named with their problem and counted; TensorFlow's start-up lines are silenced.
    assert f"{tmp_path / 'bad' / 'x.wav'}: skipped: not a readable audio file" in proc.stderr
    assert f"{tmp_path / 'bad' / 'empty.wav'}: skipped: empty file" in proc.stderr
    assert "skipped 2 (named above)" in proc.stderr and "predicted 5 file(s), skipped 2" in proc.stderr
    for chatter in ("Unable to register", "oneDNN", "cuda drivers", "cpu_feature_guard", "TensorRT"):
        assert chatter not in proc.stderr, chatter


def test_folders_bad_and_short_files_json_and_csv(standin_run, mini_manifest, tmp_path, capsys, caplog):
    import soundfile as sf

    fold_dir, _ = standin_run
    rows = _manifest_rows(mini_manifest, n=2)
    folder = tmp_path / "in"
    bad = _write_bad_files(folder / "sub")
    good = []
    for i, r in enumerate(rows):
        target = folder / f"good{i}.WAV"  # extensions in any case
        shutil.copy(r["path"], target)
        good.append(str(target))
    y, sr = sf.read(rows[0]["path"], dtype="float32")
    short = folder / "short.flac"
    sf.write(short, y[: int(0.05 * sr)], sr)  # 0.05 s of speech: padded to 1 s, kept, but reported
    with caplog.at_level(logging.INFO):
        assert predict_main(["--model", str(fold_dir), str(folder), str(folder / "good0.WAV"),
                             str(tmp_path / "missing.ogg"), "--out", str(tmp_path / "p.json")]) == 0  # fmt: skip
    printed = _parse_lines(capsys.readouterr().out)
    assert sorted(printed) == sorted([*good, str(short)])  # folder walked, good0 once, readme.txt not picked up
    for name in bad:
        assert f"{folder / 'sub' / name}: skipped:" in caplog.text
    assert f"{tmp_path / 'missing.ogg'}: skipped: no such file or directory" in caplog.text
    assert "skipped 4 (named above)" in caplog.text
    assert "1 very short file(s) (under 0.25 s" in caplog.text and f"{short}: 0.050 s" in caplog.text
    report = json.loads((tmp_path / "p.json").read_text())
    assert report["classes"] == ["ang", "hap", "neu", "sad"] and report["normalize"] is None
    assert {p["path"]: p["predicted"] for p in report["predictions"]} == {k: v[0] for k, v in printed.items()}
    for p in report["predictions"]:
        assert sum(p["probabilities"].values()) == pytest.approx(1.0, abs=1e-5)
        for c, v in p["probabilities"].items():
            assert v == pytest.approx(printed[p["path"]][1][c], abs=6e-5)
    assert len(report["skipped"]) == 4 and list(report["short_audio"]) == [str(short)]

    assert predict_main(["--model", str(fold_dir), str(folder), "--out", str(tmp_path / "p.csv")]) == 0
    again = _parse_lines(capsys.readouterr().out)
    with open(tmp_path / "p.csv", encoding="utf-8") as handle:
        written = list(csv.DictReader(handle))
    assert [r["path"] for r in written] == list(again)
    for r in written:
        assert r["predicted"] == again[r["path"]][0]
        for c in report["classes"]:
            assert float(r[f"p_{c}"]) == pytest.approx(again[r["path"]][1][c], abs=6e-5)


def test_nothing_predicted_is_exit_2(standin_run, tmp_path, caplog):
    fold_dir, _ = standin_run
    _write_bad_files(tmp_path / "bad")
    with caplog.at_level(logging.ERROR):
        assert predict_main(["--model", str(fold_dir), str(tmp_path / "bad"), "--out", str(tmp_path / "p.csv")]) == 2
    assert "no file could be predicted (3 given, 3 skipped)" in caplog.text
    assert not (tmp_path / "p.csv").exists()
    with caplog.at_level(logging.ERROR):
        assert predict_main(["--model", str(fold_dir), str(tmp_path / "bad"), "--out", str(tmp_path / "p.txt")]) == 2
    assert "expected a .csv or .json file name" in caplog.text


def test_speaker_normalised_model_takes_the_files_as_one_speaker(standin_run, mini_manifest, tmp_path, caplog):
    from emodarts_tf.data.features import extract_mfcc
    from emodarts_tf.data.pipeline import speaker_statistics
    from emodarts_tf.evaluation.model_dir import load_model_dir
    from emodarts_tf.evaluation.predict import load_predictor, predict_files

    fold_dir, _ = standin_run
    model_dir = tmp_path / "speaker-model"
    shutil.copytree(fold_dir, model_dir)
    info = json.loads((model_dir / "model_info.json").read_text())
    info["normalize"] = "speaker"
    (model_dir / "model_info.json").write_text(json.dumps(info))
    paths = [r["path"] for r in _manifest_rows(mini_manifest, n=4)]
    with caplog.at_level(logging.INFO):
        got = predict_files(load_predictor(model_dir), paths)
    assert "taken as ONE speaker's utterances" in caplog.text
    trained = load_model_dir(model_dir)
    x = np.stack([extract_mfcc(p, trained.feature_config) for p in paths])
    mean, std = speaker_statistics(x)
    want = trained.probabilities(((x - mean) / std)[..., np.newaxis])
    np.testing.assert_allclose(got.probabilities, want, atol=1e-6)
    plain = trained.probabilities(x[..., np.newaxis])
    assert not np.allclose(got.probabilities, plain, atol=1e-3)  # the normalisation did something


def test_exported_model_predicts_like_the_fold_directory(standin_run, mini_manifest, tmp_path):
    from emodarts_tf.evaluation.predict import load_predictor, predict_files
    from emodarts_tf.export.saved_model import export_model

    fold_dir, _ = standin_run
    export_model(fold_dir, tmp_path / "serving", 3)
    paths = [r["path"] for r in _manifest_rows(mini_manifest, n=3)]
    from_dir = predict_files(load_predictor(fold_dir), paths)
    served = load_predictor(tmp_path / "serving")  # a serving directory: its highest version
    assert served.kind == "saved_model" and served.path.name == "3"
    assert served.classes == from_dir.classes and served.feature_config == load_predictor(fold_dir).feature_config
    from_export = predict_files(served, paths, batch_size=2)  # two calls of serving_default
    np.testing.assert_allclose(from_export.probabilities, from_dir.probabilities, atol=1e-5)
    assert from_export.predicted == from_dir.predicted
