"""Cell diagrams: file names and titles of single- and two-stream genotypes, and the PNG files."""
from __future__ import annotations

from emodarts_tf.search import plots
from emodarts_tf.search_space.genotype import Genotype

CNN = [[["sep_conv_3x3", 0], ["skip_connect", 1]]]
SEQ = [[["lstm_1", 0], ["skip_connect", 1]]]


def test_single_stream_diagrams_keep_their_names():
    genotype = Genotype(CNN, [2], CNN, [2], SEQ, [2])
    assert plots.genotype_diagrams(genotype) == {"normal": ("normal.png", None), "reduce": ("reduce.png", None),
                                                 "seq": ("seq.png", None)}
    assert plots.genotype_diagrams(genotype, "fold 1: ")["seq"] == ("seq.png", "fold 1: seq cell")


def test_two_stream_diagrams_carry_the_stream_names(tmp_path, monkeypatch):
    genotype = Genotype.from_dict({
        "format": "emodarts-tf/genotype/v2", "normal": CNN, "reduce": CNN, "seq": SEQ,
        "streams": {"method": "emotionnas", "fusion": "concat",
                    "streams": {"spectrogram": ["normal", "reduce"], "frames": ["seq"]}}})
    titles = {}
    plot_cell = plots.plot_cell

    def recording(cell, concat, kind, path, title=None):
        titles[path.name] = title
        return plot_cell(cell, concat, kind, path, title)

    monkeypatch.setattr(plots, "plot_cell", recording)
    paths = plots.plot_genotype(genotype, tmp_path, title_prefix="fold 1: ")
    assert {k: p.name for k, p in paths.items()} == {"normal": "spectrogram_normal.png",
                                                     "reduce": "spectrogram_reduce.png", "seq": "frames_seq.png"}
    assert titles == {"spectrogram_normal.png": "fold 1: spectrogram normal cell",
                      "spectrogram_reduce.png": "fold 1: spectrogram reduce cell",
                      "frames_seq.png": "fold 1: frames seq cell"}
    assert all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in paths.values())
    # a single-stream fusion: its stream's cells only
    frames = Genotype.from_dict({"format": "emodarts-tf/genotype/v2", "seq": SEQ,
                                 "streams": {"method": "emotionnas", "fusion": "frames", "streams": {"frames": ["seq"]}}})
    assert plots.genotype_diagrams(frames) == {"seq": ("frames_seq.png", "frames seq cell")}
