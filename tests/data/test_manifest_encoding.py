"""A CSV manifest that is not UTF-8: the error names the file, line and byte; ``data.encoding`` reads it."""
import pytest

from emodarts_tf.config import DataConfig
from emodarts_tf.data.corpora import read_csv


def test_latin1_manifest_error_names_line_and_encoding_reads_it(tmp_path):
    manifest = tmp_path / "corpus.csv"
    manifest.write_bytes("path,label,speaker\na.wav,ang,s1\nb.wav,neu,J\u00e4rvi\n".encode("latin-1"))
    with pytest.raises(ValueError, match=r"corpus.csv: line 3 is not utf-8-sig text \(byte 0xe4\).*--encoding"):
        read_csv(manifest, DataConfig(corpus="csv"))
    utterances, problems = read_csv(manifest, DataConfig(corpus="csv", encoding="latin-1"))
    assert [u.speaker for u in utterances] == ["s1", "J\u00e4rvi"] and not problems
    with pytest.raises(ValueError, match="data.encoding 'nope'"):
        read_csv(manifest, DataConfig(corpus="csv", encoding="nope"))


@pytest.mark.parametrize("encoding", ["utf-8", "UTF8", "utf-8-sig"])
def test_byte_order_mark_is_not_part_of_the_header(tmp_path, encoding):
    manifest = tmp_path / "corpus.csv"
    manifest.write_bytes(b"\xef\xbb\xbf" + "path,label,speaker\na.wav,ang,s1\n".encode("utf-8"))
    utterances, problems = read_csv(manifest, DataConfig(corpus="csv", encoding=encoding))
    assert [(u.code, u.speaker) for u in utterances] == [("ang", "s1")] and not problems


def test_error_after_a_byte_order_mark_names_the_right_line_and_byte(tmp_path):
    manifest = tmp_path / "corpus.csv"
    manifest.write_bytes(b"\xef\xbb\xbfpath,label,speaker\n\xe4.wav,ang,s1\n")
    with pytest.raises(ValueError, match=r"line 2 is not utf-8 text \(byte 0xe4\)"):
        read_csv(manifest, DataConfig(corpus="csv", encoding="utf-8"))
